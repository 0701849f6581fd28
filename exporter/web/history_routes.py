"""The history over HTTP: /status, /traces, /latency_histogram and the page at /.

Each handler checks its parameters, asks the store, and shapes the answer with
history_json. A bad parameter (ours or the store's HistoryError) is a 400 with a one-line
``{"error": ...}``, and a request racing shutdown a 503.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from datetime import datetime, timedelta, timezone
from functools import wraps
from importlib import resources
from typing import Any
from collections.abc import Callable
from urllib.parse import quote

from ..history import History, HistoryClosed, HistoryError, TraceFilter
from .app import BadRequest, Handler, HTTPError, Request, Response, Route, json_response
from .history_json import TRACE_FIELDS, event_json, histogram_json, status_json

# The page loads nothing from anywhere: inline script and style, data from this origin.
_PAGE_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
             "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
             "frame-ancestors 'none'")

_INT_RE = re.compile(r"[0-9]{1,9}")
_NUMBER_RE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
_RFC3339_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
                         r"(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})")


def parse_time(name: str, text: str) -> float:
    """Unix seconds ("1767225600", "1767225600.5") or RFC 3339 with an offset
    ("2026-01-01T00:00:00Z", "2026-01-01T01:00:00.5+01:00") -> Unix seconds."""
    if _NUMBER_RE.fullmatch(text):
        return float(text)
    m = _RFC3339_RE.fullmatch(text)
    if m is None:
        # Naive or date-only times are refused rather than guessed in some zone.
        raise BadRequest(f"{name} must be Unix seconds or an RFC 3339 time with an offset, "
                         "such as 2026-01-01T00:00:00Z")
    year, month, day, hour, minute, second, frac, zone = m.groups()
    try:
        if zone in ("Z", "z"):
            tz = timezone.utc
        else:
            sign = -1 if zone[0] == "-" else 1
            tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
        dt = datetime(int(year), int(month), int(day), int(hour), int(minute),
                      min(int(second), 59), tzinfo=tz)  # 60: a leap second
    except ValueError as exc:
        raise BadRequest(f"{name}: {exc}") from None
    return dt.timestamp() + (float("0" + frac) if frac else 0.0)


def _integer(params: dict[str, str], name: str, default: int) -> int | str:
    """The parameter as an int when it is written as one, else the text as given: the
    history store checks the value (range and type) and words the 400."""
    text = params.get(name)
    if text is None:
        return default
    return int(text) if _INT_RE.fullmatch(text) else text


def _flag(params: dict[str, str], name: str) -> bool:
    text = params.get(name, "0").lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no", ""):
        return False
    raise BadRequest(f"{name} must be 0 or 1")


def _csv_cell(value: Any) -> Any:
    # Spreadsheets run cells that start with = + - @ as formulas; error messages are
    # upstream text, so neutralise them (OWASP CSV injection advice).
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def _store_errors(handler: Handler) -> Handler:
    """The store's words for a bad query become a 400; a query after close() a 503."""
    @wraps(handler)
    def guarded(req: Request) -> Response:
        try:
            return handler(req)
        except HistoryError as exc:
            raise BadRequest(str(exc)) from None
        except HistoryClosed:
            raise HTTPError("shutting down", "503 Service Unavailable") from None
    return guarded


def _traces_body(page_events: list[dict[str, Any]], fmt: str) -> Response:
    """ndjson or csv, as an attachment named after the current UTC time."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    if fmt == "ndjson":
        body = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in page_events)
        return Response("200 OK", [
            ("Content-Type", "application/x-ndjson"),
            ("Content-Disposition", f'attachment; filename="traces-{stamp}.ndjson"'),
        ], body.encode())
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")  # RFC 4180 line ends
    fields = list(page_events[0]) if page_events else list(TRACE_FIELDS)
    writer.writerow(fields)
    for e in page_events:
        writer.writerow([_csv_cell(e[f]) for f in fields])
    return Response("200 OK", [
        ("Content-Type", "text/csv; charset=utf-8; header=present"),
        ("Content-Disposition", f'attachment; filename="traces-{stamp}.csv"'),
    ], buf.getvalue().encode())


def history_routes(history: History, probe_config: dict[str, Any] | None = None,
                   usage: Callable[[], dict[str, Any]] | None = None) -> dict[str, Route]:
    """The routes of the history; `probe_config` is the redacted effective config that
    /status shows, `usage` gives its usage block (exporter/web/usage_json.py)."""
    config = probe_config or {}
    page = resources.files("exporter").joinpath("page.html").read_bytes()

    def page_route(req: Request) -> Response:
        return Response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                   ("Content-Security-Policy", _PAGE_CSP),
                                   ("X-Frame-Options", "DENY")], page)

    def status_route(req: Request) -> Response:
        st = history.status(_integer(req.params, "window", 60),  # type: ignore[arg-type]
                            series=_flag(req.params, "series"))
        doc = status_json(st, history.info())
        doc["config"] = config
        if usage is not None:
            doc["usage"] = usage()
        return json_response(doc)

    def histogram_route(req: Request) -> Response:
        params = req.params
        return json_response(histogram_json(history.latency_histogram(
            params.get("endpoint") or None,
            _integer(params, "window", 60),  # type: ignore[arg-type]
            target=params.get("target") or None)))

    def traces_route(req: Request) -> Response:
        params = req.params
        fmt = params.get("format", "json")
        if fmt not in ("json", "ndjson", "csv"):
            raise BadRequest("format must be json, ndjson or csv")
        # An empty value means "any": a form with a blank field should not match nothing.
        filters = TraceFilter(
            **{k: params.get(k) or None
               for k in ("target", "endpoint", "model", "status", "error_type")},
            since=parse_time("since", params["since"]) if params.get("since") else None,
            until=parse_time("until", params["until"]) if params.get("until") else None)
        page = history.traces(filters, _integer(params, "limit", 100),  # type: ignore[arg-type]
                              params.get("cursor") or None)
        events = [event_json(e) for e in page.events]
        headers: list[tuple[str, str]] = []
        if page.next_cursor:
            nxt = {k: v for k, v in params.items() if k != "cursor" and v}
            nxt["cursor"] = page.next_cursor
            link = "traces?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in nxt.items())
            headers += [("X-Next-Cursor", page.next_cursor), ("Link", f'<{link}>; rel="next"')]
        if fmt == "json":
            return json_response({"events": events, "count": len(events),
                                  "next_cursor": page.next_cursor}, headers=headers)
        resp = _traces_body(events, fmt)
        return Response(resp.status, resp.headers + headers, resp.body)

    return {
        # The page keeps its state in the URL fragment: its query string is ignored.
        "/": Route(page_route, params=None),
        "/status": Route(_store_errors(status_route), params=frozenset({"window", "series"})),
        "/traces": Route(_store_errors(traces_route), params=frozenset({
            "target", "endpoint", "model", "status", "error_type", "since", "until", "limit",
            "cursor", "format"})),
        "/latency_histogram": Route(_store_errors(histogram_route),
                                    params=frozenset({"endpoint", "target", "window"})),
    }

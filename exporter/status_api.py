"""The history over HTTP: /status, /traces, /latency_histogram and the page at /.

web.py serves /metrics and /healthz and hands every other path to ``StatusApp``. Every
answer is JSON (or the page, CSV, NDJSON); a bad parameter is a 400 with a one-line
``{"error": ...}``, an unknown path 404, a method other than GET/HEAD 405, and an
unexpected failure a 500 whose details go to the log, never to the client.

With ``WEB_AUTH_TOKEN`` set, these routes need ``Authorization: Bearer <token>``, or HTTP
Basic with the token as password (any user name) so that a browser can open the page:
it prompts once, then sends the same credentials with the page's own requests.
/metrics and /healthz are not ours and stay open (see docs/history.md).
"""

from __future__ import annotations

import base64
import binascii
import csv
import hmac
import io
import json
import logging
import re
import time
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, quote

from .history import History, HistoryClosed, HistoryError, TraceFilter
from .history_json import TRACE_FIELDS, event_json, histogram_json, status_json
from .settings import Settings

log = logging.getLogger("exporter.web")

StartResponse = Callable[..., Any]

_SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]
# The page loads nothing from anywhere: inline script and style, data from this origin.
_PAGE_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
             "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
             "frame-ancestors 'none'")

_PARAMS = {
    "/status": {"window", "series"},
    "/traces": {"target", "endpoint", "model", "status", "error_type", "since", "until",
                "limit", "cursor", "format"},
    "/latency_histogram": {"endpoint", "target", "window"},
}
_INT_RE = re.compile(r"[0-9]{1,9}")
_NUMBER_RE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
_RFC3339_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
                         r"(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})")


class BadRequest(Exception):
    """400 with this message."""


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


class StatusApp:
    """WSGI app for the history routes; `probe_config` is the redacted effective config."""

    def __init__(self, history: History, settings: Settings,
                 probe_config: dict[str, Any] | None = None) -> None:
        self.history = history
        self.settings = settings
        self.probe_config = probe_config or {}
        self._token = settings.web_auth_token.encode()
        self._page = resources.files("exporter").joinpath("page.html").read_bytes()
        self._routes: dict[str, Callable[[dict[str, str]], tuple]] = {
            "/": self._page_route,
            "/status": self._status_route,
            "/traces": self._traces_route,
            "/latency_histogram": self._histogram_route,
        }

    # -- WSGI ---------------------------------------------------------------------------
    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            path = environ.get("PATH_INFO") or "/"
            if self._token and not self._authorized(environ.get("HTTP_AUTHORIZATION", "")):
                return self._send(start_response, method, *self._unauthorized())
            route = self._routes.get(path)
            if route is None:
                return self._send(start_response, method,
                                  *self._error("404 Not Found", f"no route {path[:200]}"))
            if method not in ("GET", "HEAD"):
                status, headers, body = self._error("405 Method Not Allowed",
                                                    "method not allowed; use GET")
                return self._send(start_response, method, status,
                                  headers + [("Allow", "GET, HEAD")], body)
            try:
                params = self._params(environ.get("QUERY_STRING", ""), path)
                result = route(params)
            except (BadRequest, HistoryError) as exc:
                result = self._error("400 Bad Request", str(exc))
            except HistoryClosed:  # a request racing shutdown
                result = self._error("503 Service Unavailable", "shutting down")
            return self._send(start_response, method, *result)
        except Exception:  # never a traceback to the client; the log keeps it
            log.exception("error serving %s", environ.get("PATH_INFO"))
            return self._send(start_response, method,
                              *self._error("500 Internal Server Error", "internal error"))

    @staticmethod
    def _send(start_response: StartResponse, method: str, status: str,
              headers: list[tuple[str, str]], body: bytes) -> list[bytes]:
        start_response(status, headers + _SECURITY_HEADERS
                       + [("Content-Length", str(len(body)))])
        return [b""] if method == "HEAD" else [body]

    @staticmethod
    def _json(doc: Any, status: str = "200 OK",
              extra: list[tuple[str, str]] | None = None) -> tuple:
        body = json.dumps(doc, default=str, separators=(",", ":")).encode()
        return status, [("Content-Type", "application/json")] + (extra or []), body

    def _error(self, status: str, message: str) -> tuple:
        return self._json({"error": message}, status)

    # -- auth ---------------------------------------------------------------------------
    def _authorized(self, header: str) -> bool:
        scheme, _, cred = header.strip().partition(" ")
        cred = cred.strip()
        if scheme.lower() == "bearer":
            given = cred.encode()
        elif scheme.lower() == "basic":
            try:
                given = base64.b64decode(cred, validate=True).partition(b":")[2]
            except (binascii.Error, ValueError):
                return False
        else:
            return False
        return hmac.compare_digest(given, self._token)  # constant time

    def _unauthorized(self) -> tuple:
        status, headers, body = self._error("401 Unauthorized",
                                            "missing or wrong credentials (WEB_AUTH_TOKEN)")
        # Basic lets a browser prompt; API clients use Bearer.
        return status, headers + [
            ("WWW-Authenticate", 'Bearer realm="openai-exporter"'),
            ("WWW-Authenticate", 'Basic realm="openai-exporter", charset="UTF-8"')], body

    # -- parameters ---------------------------------------------------------------------
    @staticmethod
    def _params(query: str, path: str) -> dict[str, str]:
        allowed = _PARAMS.get(path)
        if allowed is None:  # the page: its state lives in the fragment; ignore queries
            return {}
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False,
                              max_num_fields=32)
        except ValueError:
            raise BadRequest("too many query parameters") from None
        params: dict[str, str] = {}
        for name, value in pairs:
            if name not in allowed:
                raise BadRequest(f"unknown parameter {name!r}; allowed: "
                                 + ", ".join(sorted(allowed)))
            if name in params:
                raise BadRequest(f"parameter {name!r} given twice")
            params[name] = value
        return params

    # -- routes -------------------------------------------------------------------------
    def _page_route(self, params: dict[str, str]) -> tuple:
        return "200 OK", [("Content-Type", "text/html; charset=utf-8"),
                          ("Content-Security-Policy", _PAGE_CSP),
                          ("X-Frame-Options", "DENY")], self._page

    def _status_route(self, params: dict[str, str]) -> tuple:
        st = self.history.status(_integer(params, "window", 60),
                                 series=_flag(params, "series"))
        doc = status_json(st, self.history.info())
        doc["config"] = self.probe_config
        return self._json(doc)

    def _histogram_route(self, params: dict[str, str]) -> tuple:
        return self._json(histogram_json(self.history.latency_histogram(
            params.get("endpoint") or None, _integer(params, "window", 60),
            target=params.get("target") or None)))

    def _traces_route(self, params: dict[str, str]) -> tuple:
        fmt = params.get("format", "json")
        if fmt not in ("json", "ndjson", "csv"):
            raise BadRequest("format must be json, ndjson or csv")
        # An empty value means "any": a form with a blank field should not match nothing.
        filters = TraceFilter(
            **{k: params.get(k) or None
               for k in ("target", "endpoint", "model", "status", "error_type")},
            since=parse_time("since", params["since"]) if params.get("since") else None,
            until=parse_time("until", params["until"]) if params.get("until") else None)
        page = self.history.traces(filters, _integer(params, "limit", 100),
                                   params.get("cursor") or None)
        events = [event_json(e) for e in page.events]

        headers: list[tuple[str, str]] = []
        if page.next_cursor:
            nxt = {k: v for k, v in params.items() if k != "cursor" and v}
            nxt["cursor"] = page.next_cursor
            link = "traces?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in nxt.items())
            headers += [("X-Next-Cursor", page.next_cursor), ("Link", f'<{link}>; rel="next"')]
        if fmt == "json":
            return self._json({"events": events, "count": len(events),
                               "next_cursor": page.next_cursor}, extra=headers)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        if fmt == "ndjson":
            body = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events)
            return "200 OK", [
                ("Content-Type", "application/x-ndjson"),
                ("Content-Disposition", f'attachment; filename="traces-{stamp}.ndjson"'),
            ] + headers, body.encode()
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")  # RFC 4180 line ends
        fields = list(events[0]) if events else list(TRACE_FIELDS)
        writer.writerow(fields)
        for e in events:
            writer.writerow([_csv_cell(e[f]) for f in fields])
        return "200 OK", [
            ("Content-Type", "text/csv; charset=utf-8; header=present"),
            ("Content-Disposition", f'attachment; filename="traces-{stamp}.csv"'),
        ] + headers, buf.getvalue().encode()


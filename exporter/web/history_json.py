"""The history's answers as JSON: the one place that writes times (RFC 3339, rounded Unix
seconds) and milliseconds, and that names the keys of /status, /traces and
/latency_histogram (docs/history.md shows them)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..history import (
    EndpointStatus,
    Event,
    Figures,
    LatencyHistogram,
    StoreInfo,
    WindowStatus,
)
from ..catalogue import CATALOGUE
from ..result import PHASES, STATUS_ERROR, STATUS_SUCCESS

QUANTILES_NOTE = "nearest-rank; latency sketch relative error <= 0.5%"
SERIES_FIELDS = ["t", "count", "p95_ms", "success_rate"]
# Column order of /traces?format=csv (and the key order of json/ndjson events). The
# timings close the row, one flat column each so CSV needs nothing special; null when
# the probe did not measure them (ttft/tpot: streaming probes; phases: probes timed by
# phase).
PHASE_FIELDS = tuple(f"phase_{p}_ms" for p in PHASES)
TRACE_FIELDS = ("id", "time", "ts", "target", "region", "endpoint", "model", "status",
                "error_type", "http_status", "duration_ms", "error_message", "request_id",
                "input_tokens", "output_tokens", "total_tokens", "response_bytes", "cost_usd",
                "ttft_ms", "tpot_ms", *PHASE_FIELDS)


def rfc3339(ts: float) -> str:
    """UTC RFC 3339 with milliseconds, e.g. 2026-03-01T12:00:00.250Z."""
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def ms(seconds: float | None) -> float | None:
    """Seconds -> milliseconds, rounded to the microsecond."""
    return None if seconds is None else round(seconds * 1000.0, 3)


def _status_word(success: bool) -> str:
    return STATUS_SUCCESS if success else STATUS_ERROR


def event_json(ev: Event) -> dict[str, Any]:
    """One /traces event, keys in TRACE_FIELDS order."""
    return {
        "id": ev.id, "time": rfc3339(ev.ts), "ts": round(ev.ts, 3), "target": ev.target,
        "region": ev.region, "endpoint": ev.endpoint, "model": ev.model,
        "status": _status_word(ev.success),
        "error_type": ev.error_type, "http_status": ev.http_status,
        "duration_ms": ms(ev.duration_seconds),
        "error_message": ev.error_message, "request_id": ev.request_id,
        "input_tokens": ev.input_tokens, "output_tokens": ev.output_tokens,
        "total_tokens": ev.total_tokens, "response_bytes": ev.response_bytes,
        "cost_usd": ev.cost_usd, **_timings(ev),
    }


_NO_TIMINGS: dict[str, Any] = dict.fromkeys(("ttft_ms", "tpot_ms", *PHASE_FIELDS))
_PHASE_KEYS = tuple(zip(PHASE_FIELDS, PHASES, strict=True))


def _timings(ev: Event) -> dict[str, Any]:
    # Most events have none: share one dict of nulls (a /traces page is 1000 events).
    if ev.ttft_seconds is None and ev.tpot_seconds is None and not ev.phases:
        return _NO_TIMINGS
    phases = ev.phases or {}
    return {"ttft_ms": ms(ev.ttft_seconds), "tpot_ms": ms(ev.tpot_seconds),
            **{field: ms(phases.get(phase)) for field, phase in _PHASE_KEYS}}


def _head(f: Figures) -> dict[str, Any]:
    """Counts and percentiles: the keys that open an endpoint row and the overall block."""
    return {"count": f.count, "successes": f.successes, "errors": f.errors,
            "success_rate": f.success_rate, "p50_ms": ms(f.p50), "p95_ms": ms(f.p95),
            "p99_ms": ms(f.p99)}


def _tail(f: Figures) -> dict[str, Any]:
    """Errors, tokens, bytes and cost: the keys that close them."""
    return {"errors_by_type": f.errors_by_type,
            "tokens": {"input": f.input_tokens, "output": f.output_tokens,
                       "total": f.total_tokens},
            "response_bytes": f.response_bytes, "cost_usd": round(f.cost_usd, 8)}


def _streams(e: EndpointStatus) -> bool:
    """Whether the row is a streaming probe's: it shows time to first token."""
    probe = CATALOGUE.get(e.endpoint)
    return e.figures.ttft_count > 0 or (probe is not None and probe.reader == "sse")


def endpoint_json(e: EndpointStatus) -> dict[str, Any]:
    """One /status endpoint row; with its chart series when the query asked for one."""
    last, fail = e.last, e.last_failure
    f = e.figures
    ttft = {"ttft_count": f.ttft_count, "ttft_p50_ms": ms(f.ttft_p50),
            "ttft_p95_ms": ms(f.ttft_p95), "ttft_p99_ms": ms(f.ttft_p99)} if _streams(e) else {}
    row: dict[str, Any] = {
        "target": e.target, "endpoint": e.endpoint, "region": e.region, "models": e.models,
        **_head(e.figures),
        "mean_ms": ms(e.mean), "max_ms": ms(e.max), **ttft,
        "last_status": None if last is None else _status_word(last.success),
        "last_error_type": None if last is None else last.error_type,
        "last_error_message": None if last is None else last.message,
        "last_http_status": None if last is None else last.http_status,
        "last_at": None if last is None else rfc3339(last.ts),
        "last_failure": None if fail is None else {
            "at": rfc3339(fail.ts), "error_type": fail.error_type,
            "http_status": fail.http_status, "message": fail.message},
        **_tail(e.figures),
    }
    if e.series is not None:
        row["series"] = {"step_minutes": e.series.step_minutes, "fields": SERIES_FIELDS,
                         "points": [[p.start, p.count, ms(p.p95), p.success_rate]
                                    for p in e.series.points]}
    return row


def store_json(info: StoreInfo) -> dict[str, Any]:
    """The `store` block of /status: the backend and its own bounds."""
    doc: dict[str, Any] = {"backend": info.backend, "retention_hours": info.retention_hours,
                           "resolutions_minutes": list(info.resolutions_minutes)}
    if info.max_events is not None:
        doc["max_events"] = info.max_events
    if info.db_file is not None:
        doc["db_file"] = info.db_file
    return doc


def status_json(st: WindowStatus, store: StoreInfo) -> dict[str, Any]:
    """The /status document (the route adds `config`)."""
    o = st.overall
    return {
        "window_minutes": st.window_minutes,
        "from": rfc3339(st.start), "to": rfc3339(st.end), "now": round(st.end, 3),
        "quantiles": QUANTILES_NOTE,
        "store": store_json(store),
        "overall": {**_head(o.figures), "endpoints": o.endpoints,
                    "failing_endpoints": o.failing_endpoints,
                    "last_at": None if o.last_at is None else rfc3339(o.last_at),
                    **_tail(o.figures)},
        "endpoints": [endpoint_json(e) for e in st.endpoints],
    }


def histogram_json(h: LatencyHistogram) -> dict[str, Any]:
    """The /latency_histogram document."""
    return {"endpoint": h.endpoint, "target": h.target, "window_minutes": h.window_minutes,
            "from": rfc3339(h.start), "to": rfc3339(h.end), "count": h.count,
            "sum_ms": ms(h.sum),
            "buckets": [{"le_ms": ms(b.le), "le": "+Inf" if b.le is None else f"{b.le:g}",
                         "count": b.count, "cumulative": b.cumulative} for b in h.buckets]}

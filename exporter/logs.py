"""Logging: JSON lines (for Loki) or text, and the one line per probe."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from .result import ProbeResult

probe_log = logging.getLogger("exporter.probe")


def setup(level: str = "INFO", fmt: str = "json") -> None:
    """Route every logger to stdout in one format. Called once by main()."""
    handler = logging.StreamHandler(sys.stdout)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger", "asctime": "time"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        ))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("urllib3").setLevel(max(logging.WARNING, root.level))


def probe_fields(r: ProbeResult) -> dict[str, object]:
    """The fields of the per-probe line; labels Promtail/Alloy may lift are bounded."""
    return {
        "target": r.target,
        "region": r.region,
        "endpoint": r.endpoint,
        "model": r.model,
        "status": r.status,
        "http_status": r.http_status,
        "error_type": r.error_type,
        "error_message": r.error_message,
        "latency_ms": round(r.duration_seconds * 1000, 1),
        "input_tokens": r.input_tokens,
        "output_tokens": r.output_tokens,
        "total_tokens": r.total_tokens,
        "response_bytes": r.response_bytes,
        "cost_usd": round(r.cost_usd, 8),
        "request_id": r.request_id,
        "retry_after_seconds": r.retry_after_seconds,
        # Streaming probes (null otherwise): time to first token and per output token.
        "ttft_ms": None if r.ttft_seconds is None else round(r.ttft_seconds * 1000, 1),
        "tpot_ms": None if r.tpot_seconds is None else round(r.tpot_seconds * 1000, 2),
    }


def log_probe(r: ProbeResult) -> None:
    fields = probe_fields(r)
    if probe_log.isEnabledFor(logging.INFO):
        # Text format shows the essentials in the message; JSON carries them as fields.
        msg = "probe" if _is_json() else (
            f"probe {r.target}/{r.endpoint} {r.status} {r.error_type} "
            f"http={r.http_status} {fields['latency_ms']}ms {r.error_message}".rstrip())
        probe_log.log(logging.INFO if r.success else logging.WARNING, msg, extra=fields)


def _is_json() -> bool:
    handlers = logging.getLogger().handlers
    return bool(handlers) and isinstance(handlers[0].formatter, JsonFormatter)

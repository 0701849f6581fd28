"""The ``usage`` block of /status as JSON: the poller's and the budget guard's state, with
Unix times written as RFC 3339 like the rest of /status (docs/usage.md shows it)."""

from __future__ import annotations

from typing import Any

from .history_json import rfc3339

_TIMES = ("last_poll", "last_attempt", "last_success")


def _times(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key in _TIMES:
            out[key] = None if value is None else rfc3339(value)
        elif isinstance(value, dict):
            out[key] = _times(value)
        else:
            out[key] = value
    return out


def usage_json(poller: dict[str, Any] | None, budget: dict[str, Any], how_to_enable: str
               ) -> dict[str, Any]:
    """The block: the poller's status (or why there is none) and the probe budget."""
    doc: dict[str, Any] = ({"enabled": False, "reason": how_to_enable} if poller is None
                           else _times(poller))
    if poller is not None:
        doc["counting_since"] = {k: rfc3339(v) for k, v in poller["counting_since"].items()}
        if doc.get("last_poll_duration_seconds") is not None:
            doc["last_poll_duration_seconds"] = round(doc["last_poll_duration_seconds"], 3)
    doc["probe_budget"] = budget
    return doc

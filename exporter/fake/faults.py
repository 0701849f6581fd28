"""The fault vocabulary, the chaos profile and picking the fault each request gets."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Faults that replace the answer with a canned status and body.
REPLACE_FAULTS = (
    "html_200", "bad_request", "unauthorized", "forbidden", "not_found", "rate_limited",
    "rate_limited_tokens", "quota", "quota_legacy", "billing", "server_error",
    "bad_gateway_html", "bad_gateway_json", "overloaded", "gateway_timeout",
)
# Faults that change the body of an otherwise successful (200) answer.
BODY_FAULTS = ("malformed", "empty_body", "wrong_shape", "response_failed",
               "response_incomplete")
# Faults about how (or whether) bytes go over the wire.
TRANSPORT_FAULTS = ("delay", "hang", "slow_body", "trickle_body", "reset", "reset_mid_body")

FAULTS: tuple[str, ...] = TRANSPORT_FAULTS + BODY_FAULTS + REPLACE_FAULTS
"""Every fault name ``set_fault`` accepts (besides ``"none"``, which forces a normal answer)."""

# Chaos profile: percent of requests per outcome when no explicit fault is set; the
# remainder (about 84 %) is a normal answer. Weights are per error *class* the exporter
# knows, so each class shows up within a few hundred probes. ``hang`` is left out: it
# would pin a probe for the whole timeout.
CHAOS_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("rate_limited", 2.0), ("rate_limited_tokens", 0.5),             # rate_limited
    ("quota", 0.8), ("quota_legacy", 0.2), ("billing", 0.3),         # quota_exceeded
    ("server_error", 1.3), ("bad_gateway_json", 0.3),                # provider_error
    ("overloaded", 1.2), ("bad_gateway_html", 0.8), ("gateway_timeout", 0.4),  # unavailable
    ("malformed", 0.6), ("wrong_shape", 0.4), ("empty_body", 0.2), ("html_200", 0.2),
    ("reset", 0.6), ("reset_mid_body", 0.4), ("slow_body", 0.3),     # network / timeout
    ("unauthorized", 1.2), ("forbidden", 1.2), ("not_found", 1.2), ("bad_request", 1.2),
    ("response_failed", 0.3), ("response_incomplete", 0.3),          # responses (and chat)
)
CHAOS_STALL_SECONDS = 1.5  # chaos slow_body stalls this long, then cuts the body
CHAOS_LATENCY_MS = (80.0, 250.0, 1500.0)  # min, median, max of the lognormal jitter
DEFAULT_DELAY_MS = 2000.0  # the "delay" fault without delay_ms
DEFAULT_TRICKLE_MS = 200.0  # the "trickle_body" interval between chunks without delay_ms

# In-body failures exist only where the body has a status: fault -> endpoints that show it.
_IN_BODY_FAULTS = {"response_failed": ("responses",),
                   "response_incomplete": ("responses", "chat")}


@dataclass
class Fault:
    """A fault in force: its name, how many more requests it hits (None: all), its delay."""

    name: str
    count: int | None = None
    delay_ms: float | None = None


def is_target(endpoint: str, fault: str, endpoints: Iterable[str]) -> bool:
    """Whether ``endpoint=fault`` names a known endpoint (or "*") and a known fault (or "none")."""
    return (endpoint == "*" or endpoint in endpoints) and (fault == "none" or fault in FAULTS)


class FaultBook:
    """The faults set per endpoint ("*" for all) and, in chaos, the dice; thread-safe.

    ``time_scale`` multiplies chaos jitter and stalls (0 makes chaos instant, for tests).
    """

    def __init__(self, endpoints: Iterable[str], *, chaos: bool = False,
                 seed: int | None = None, time_scale: float = 1.0) -> None:
        self.endpoints = tuple(endpoints)
        self.chaos = chaos
        self.time_scale = time_scale
        self._rng = random.Random(seed)
        self._faults: dict[str, Fault] = {}
        self._lock = threading.Lock()

    def set(self, endpoint: str, fault: str, *, count: int | None = None,
            delay_ms: float | None = None) -> None:
        """Put `fault` in force on `endpoint`; ValueError names what is wrong."""
        if endpoint != "*" and endpoint not in self.endpoints:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of "
                             f"{', '.join(self.endpoints)} or *")
        if fault != "none" and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or count < 1):
            raise ValueError("count must be a positive integer or None")
        if delay_ms is not None and (isinstance(delay_ms, bool)
                                     or not isinstance(delay_ms, (int, float)) or delay_ms < 0):
            raise ValueError("delay_ms must be a number >= 0 or None")
        with self._lock:
            self._faults[endpoint] = Fault(fault, count, delay_ms)

    def clear(self) -> None:
        """Lift every fault."""
        with self._lock:
            self._faults.clear()

    def in_force(self) -> dict[str, dict[str, Any]]:
        """The faults in force: endpoint -> {fault, count, delay_ms}."""
        with self._lock:
            return {ep: {"fault": f.name, "count": f.count, "delay_ms": f.delay_ms}
                    for ep, f in self._faults.items()}

    def take(self, endpoint: str) -> tuple[Fault | None, bool]:
        """The fault for one request to `endpoint`, and whether chaos picked it.

        An endpoint's own fault wins over "*"; a counted fault is used up here. A chaos
        fault's delay is already scaled by ``time_scale``.
        """
        with self._lock:
            for key in (endpoint, "*"):
                fault = self._faults.get(key)
                if fault is None:
                    continue
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        del self._faults[key]
                if fault.name == "none":
                    return None, False
                return Fault(fault.name, None, fault.delay_ms), False
            if not self.chaos:
                return None, False
            roll = self._rng.uniform(0, 100)
            for name, weight in CHAOS_WEIGHTS:
                roll -= weight
                if roll < 0:
                    if endpoint not in _IN_BODY_FAULTS.get(name, (endpoint,)):
                        return None, False
                    delay = (CHAOS_STALL_SECONDS * 1000 * self.time_scale
                             if name == "slow_body" else None)
                    return Fault(name, None, delay), True
            return None, False

    def jitter_s(self) -> float:
        """Chaos latency: lognormal around the median, clipped to [min, max], scaled."""
        lo, median, hi = CHAOS_LATENCY_MS
        with self._lock:
            ms = self._rng.lognormvariate(math.log(median), 0.7)
        return min(hi, max(lo, ms)) / 1000 * self.time_scale

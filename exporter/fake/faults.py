"""The fault vocabulary, the chaos profile and picking the fault each request gets."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .tables import STREAMED

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
# Faults of streamed answers only (streams.py): a slow first token after an immediate
# head, slow tokens, a cut before the terminal event, an error mid-stream, a stall.
STREAM_FAULTS = ("slow_first_token", "slow_tokens", "cut_stream", "stream_error",
                 "stall_stream")
STREAM_ENDPOINTS = tuple(STREAMED)

FAULTS: tuple[str, ...] = TRANSPORT_FAULTS + BODY_FAULTS + REPLACE_FAULTS + STREAM_FAULTS
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
    # Streams only (other endpoints answer normally on these rolls): about 1 in 50 streams.
    ("slow_first_token", 0.6), ("slow_tokens", 0.4),                 # TTFT / TPOT
    ("cut_stream", 0.4), ("stall_stream", 0.2),                      # stream_interrupted
    ("stream_error", 0.4),                                           # provider_unavailable
)
CHAOS_STALL_SECONDS = 1.5  # chaos slow_body stalls this long, then cuts the body
CHAOS_LATENCY_MS = (80.0, 250.0, 1500.0)  # min, median, max of the lognormal jitter
DEFAULT_DELAY_MS = 2000.0  # the "delay" fault without delay_ms
DEFAULT_TRICKLE_MS = 200.0  # the "trickle_body" interval between chunks without delay_ms
DEFAULT_TOKEN_MS = 100.0  # the "slow_tokens" interval between content events
# Chaos delays (ms, before time_scale): a slow first token and a stall as long as the
# slow_body stall, slow tokens a little slower than the default.
_CHAOS_DELAY_MS = {"slow_body": CHAOS_STALL_SECONDS * 1000,
                   "stall_stream": CHAOS_STALL_SECONDS * 1000,
                   "slow_first_token": CHAOS_STALL_SECONDS * 1000, "slow_tokens": 150.0}

# Faults that exist only where the answer has them: fault -> endpoints that show it.
# In-body failures need a body with a status; stream faults need a stream.
_IN_BODY_FAULTS = {"response_failed": ("responses", "responses_stream"),
                   "response_incomplete": ("responses", "chat", "responses_stream",
                                           "chat_stream"),
                   **dict.fromkeys(STREAM_FAULTS, STREAM_ENDPOINTS)}


@dataclass
class Fault:
    """A fault in force: its name, how many more requests it hits (None: all), its delay."""

    name: str
    count: int | None = None
    delay_ms: float | None = None


def is_target(endpoint: str, fault: str, endpoints: Iterable[str]) -> bool:
    """Whether ``endpoint=fault`` names a known endpoint (or "*") and a known fault (or
    "none") that the endpoint can show (stream faults need a streamed answer)."""
    return ((endpoint == "*" or endpoint in endpoints) and (fault == "none" or fault in FAULTS)
            and (fault not in STREAM_FAULTS or endpoint in ("*", *STREAM_ENDPOINTS)))


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
        if fault in STREAM_FAULTS and endpoint not in ("*", *STREAM_ENDPOINTS):
            raise ValueError(f"fault {fault!r} applies to streamed answers only: "
                             f"{', '.join(STREAM_ENDPOINTS)} or *")
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
                    delay = _CHAOS_DELAY_MS.get(name)
                    return Fault(name, None, None if delay is None else
                                 delay * self.time_scale), True
            return None, False

    def jitter_s(self) -> float:
        """Chaos latency: lognormal around the median, clipped to [min, max], scaled."""
        lo, median, hi = CHAOS_LATENCY_MS
        with self._lock:
            ms = self._rng.lognormvariate(math.log(median), 0.7)
        return min(hi, max(lo, ms)) / 1000 * self.time_scale

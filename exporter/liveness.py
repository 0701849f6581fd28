"""Liveness of the probe loop: a sink that notes when a probe last completed, and the
one-line reason /healthz gives when that was too long ago.

It reads nothing of the scheduler: every completed probe reaches the sinks, whatever
runs them. A probe that fails or times out has completed too; /healthz is about the
exporter, not about the upstream.

The limit is STALE_AFTER_INTERVALS x (interval + timeout). Each target starts a probe
every interval, in roundrobin and all mode alike (any probe counts, so the mode does not
matter), and a probe ends within about its timeout; a tick that finds the previous run
still going is skipped, so completions of one job can be up to interval + timeout apart.
Three of those leave room for a slow DNS lookup or a busy pool without calling a live
loop dead, and catch a dead one within minutes at the default 30 s / 12 s (126 s). The
same limit is the start-up grace: the first probe of each job starts within one interval
(the scheduler spreads starts over it) and ends within its timeout.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from collections.abc import Callable

STALE_AFTER_INTERVALS = 3


class Liveness:
    """Monotonic time of the last completed probe; `problem()` is None while it is recent."""

    def __init__(self, interval_seconds: float, timeout_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.limit_seconds = STALE_AFTER_INTERVALS * (interval_seconds + timeout_seconds)
        self._why = (f"{STALE_AFTER_INTERVALS} x (interval {interval_seconds:g} s + timeout "
                     f"{timeout_seconds:g} s)")
        self._started = clock()
        self._last: float | None = None
        self._lock = threading.Lock()

    def observe(self, result: Any) -> None:
        """The sink: a probe completed (whatever its outcome)."""
        self.beat()

    def beat(self) -> None:
        """The loop is alive without a completed probe: call it where a scheduled probe is
        skipped on purpose (the daily budget), so a paused loop is not taken for dead."""
        now = self.clock()
        with self._lock:
            self._last = now

    def problem(self) -> str | None:
        """None while a probe completed within the limit (or since start, within it);
        else one line saying for how long none has."""
        with self._lock:
            last = self._last
        now = self.clock()
        age = now - (self._started if last is None else last)
        if age <= self.limit_seconds:
            return None
        limit = f"(limit {self.limit_seconds:g} s: {self._why})"
        if last is None:
            return f"no probe has completed since start {age:.0f} s ago {limit}"
        return f"no probe has completed for {age:.0f} s {limit}"

"""At most one log line per key per period: a failure that repeats every probe or poll is
said once a minute, not once per occurrence."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable


class Throttle:
    """`ready(key)` is True at most once per `seconds` for each key (thread-safe)."""

    def __init__(self, seconds: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._last: dict[Hashable, float] = {}
        self._lock = threading.Lock()

    def ready(self, key: Hashable = None) -> bool:
        """True when nothing was let through for `key` in the last `seconds`; then
        counts this one."""
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.seconds:
                return False
            self._last[key] = now
            return True

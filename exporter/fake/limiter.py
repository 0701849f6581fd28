"""The per-key fixed-window rate limiter behind the ``x-ratelimit-*`` headers (facts §4.1)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


def go_duration(seconds: float) -> str:
    """Format like Go's time.Duration.String after rounding to milliseconds.

    0 -> "0s", 0.02 -> "20ms", 8.64 -> "8.64s", 72 -> "1m12s", 360 -> "6m0s". OpenAI
    sends exactly these forms in x-ratelimit-reset-*; note "m" (minutes) versus "ms".
    """
    ms = max(0, round(seconds * 1000))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, frac = divmod(rest, 1000)
    text = f"{secs}" + (f".{frac:03d}".rstrip("0") if frac else "") + "s"
    if hours or minutes:
        text = f"{minutes}m" + text
    if hours:
        text = f"{hours}h" + text
    return text


@dataclass
class _Bucket:
    started: float
    requests: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class Snapshot:
    """One key's counters at one moment."""

    requests_limit: int
    requests_remaining: int
    requests_reset: float  # seconds until the requests counter is full again
    tokens_limit: int
    tokens_remaining: int
    tokens_reset: float


class Limiter:
    """Per-key fixed-window counters.

    A window opens with the first request after the previous one expired and lasts
    ``window`` seconds, so the request that opens it reports the whole window
    (``1m0s`` for 60 s) and requests near its end report milliseconds (``20ms``). A
    counter still at its limit reports ``0s``, like the real API.
    """

    def __init__(self, rpm: int, tpm: int, window: float, clock: Callable[[], float]) -> None:
        self.rpm, self.tpm, self.window, self._clock = rpm, tpm, window, clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None or now - bucket.started >= self.window:
            bucket = self._buckets[key] = _Bucket(now)
        return bucket

    def take(self, key: str, *, uses_tokens: bool) -> str | None:
        """Count one request; return "requests"/"tokens" instead when that limit is spent."""
        with self._lock:
            bucket = self._bucket(key, self._clock())
            if bucket.requests >= self.rpm:
                return "requests"
            if uses_tokens and bucket.tokens >= self.tpm:
                return "tokens"
            bucket.requests += 1
            return None

    def add_tokens(self, key: str, tokens: int) -> None:
        """Count the tokens an answer spent (never past the limit)."""
        with self._lock:
            bucket = self._bucket(key, self._clock())
            bucket.tokens = min(self.tpm, bucket.tokens + max(0, tokens))

    def snapshot(self, key: str) -> Snapshot:
        """The key's counters now (opening a window if none is open)."""
        with self._lock:
            now = self._clock()
            bucket = self._bucket(key, now)
            left = max(0.0, self.window - (now - bucket.started))
            return Snapshot(
                self.rpm, self.rpm - bucket.requests, left if bucket.requests else 0.0,
                self.tpm, self.tpm - bucket.tokens, left if bucket.tokens else 0.0,
            )

    def headers(self, key: str, *, azure: bool) -> dict[str, str]:
        """The rate-limit headers of an answer to this key."""
        snap = self.snapshot(key)
        if azure:  # Azure sends only the remaining-* pair
            return {"x-ratelimit-remaining-requests": str(snap.requests_remaining),
                    "x-ratelimit-remaining-tokens": str(snap.tokens_remaining)}
        return {
            "x-ratelimit-limit-requests": str(snap.requests_limit),
            "x-ratelimit-limit-tokens": str(snap.tokens_limit),
            "x-ratelimit-remaining-requests": str(snap.requests_remaining),
            "x-ratelimit-remaining-tokens": str(snap.tokens_remaining),
            "x-ratelimit-reset-requests": go_duration(snap.requests_reset),
            "x-ratelimit-reset-tokens": go_duration(snap.tokens_reset),
        }

    def clear(self) -> None:
        """Forget every key's counters."""
        with self._lock:
            self._buckets.clear()

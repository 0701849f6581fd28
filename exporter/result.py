"""The one object every probe run produces, and the bounded vocabularies it uses.

Every sink (metrics, history, logs) reads a ProbeResult and nothing else, so the
three can never disagree about what a probe saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Mapping

# Closed set: these are label values, so they must stay bounded (DESIGN.md).
ERROR_TYPES: tuple[str, ...] = (
    "none",
    "timeout",
    "network",
    "unauthorized",
    "forbidden",
    "not_found",
    "bad_request",
    "rate_limited",
    "quota_exceeded",
    "provider_error",
    "provider_unavailable",
    "invalid_response",
    "stream_interrupted",  # a stream that ended before its terminal event
)

# The phases of one probe, consecutive segments of its duration (docs/decisions.md):
# connect, TLS handshake, server (request sent -> response headers), first_token (streams:
# headers -> first content event), transfer (the rest of the body).
PHASES: tuple[str, ...] = ("connect", "tls", "server", "first_token", "transfer")

STATUS_SUCCESS = "success"
STATUS_ERROR = "error"


@dataclass(frozen=True)
class RateLimits:
    """Parsed x-ratelimit-* headers; None means the header was absent or unusable."""

    requests_limit: float | None = None
    requests_remaining: float | None = None
    requests_reset_seconds: float | None = None
    tokens_limit: float | None = None
    tokens_remaining: float | None = None
    tokens_reset_seconds: float | None = None


@dataclass(frozen=True)
class ProbeResult:
    """One run of one endpoint against one target."""

    target: str
    region: str
    endpoint: str
    model: str  # "" for endpoints that take no model (models, files, ...)
    started_at: float  # wall clock, Unix seconds
    duration_seconds: float
    success: bool
    error_type: str = "none"  # one of ERROR_TYPES
    http_status: int | None = None
    error_message: str = ""  # already redacted; "" on success
    request_id: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    response_bytes: int = 0
    cost_usd: float = 0.0
    rate_limits: RateLimits = field(default_factory=RateLimits)
    # Streaming probes only (None otherwise, or when the stream carried no content):
    # start -> first content event, and seconds per output token after the first.
    ttft_seconds: float | None = None
    tpot_seconds: float | None = None
    # Seconds per phase (PHASES) of this probe; empty when it was not timed by phase.
    phases: Mapping[str, float] = field(default_factory=dict)
    # The wait a 429 asked for (Retry-After / retry-after-ms), bounded; None when the
    # answer was not a 429 or carried no usable value.
    retry_after_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.error_type not in ERROR_TYPES:
            raise ValueError(f"unknown error_type {self.error_type!r}")
        if self.success != (self.error_type == "none"):
            raise ValueError("success must be True exactly when error_type is 'none'")
        for name, value in (("ttft_seconds", self.ttft_seconds),
                            ("tpot_seconds", self.tpot_seconds),
                            ("retry_after_seconds", self.retry_after_seconds),
                            *self.phases.items()):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        unknown = set(self.phases) - set(PHASES)
        if unknown:
            raise ValueError(f"unknown phase(s) {sorted(unknown)}; known: {', '.join(PHASES)}")

    @property
    def status(self) -> str:
        return STATUS_SUCCESS if self.success else STATUS_ERROR

    @property
    def finished_at(self) -> float:
        return self.started_at + self.duration_seconds

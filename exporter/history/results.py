"""Typed answers of the window queries: seconds, Unix timestamps, counts, None when there
is nothing to report. The HTTP layer (exporter/web/history_json.py) turns them into JSON."""

from __future__ import annotations

from dataclasses import dataclass

from .model import LastFailure, LastProbe


def ratio(num: int, den: int) -> float | None:
    """num / den, or None when there is nothing to divide by."""
    return None if den == 0 else num / den


@dataclass(frozen=True, slots=True)
class Figures:
    """What a window shows for one endpoint or overall."""

    count: int
    successes: int
    p50: float | None  # seconds, nearest rank (sketch: within 0.5 %)
    p95: float | None
    p99: float | None
    errors_by_type: dict[str, int]  # sorted by error type
    input_tokens: int
    output_tokens: int
    total_tokens: int
    response_bytes: int
    cost_usd: float
    # Time to first token of the streaming probes (a second sketch, the same accuracy):
    # how many probes had one, and its nearest-rank percentiles in seconds.
    ttft_count: int = 0
    ttft_p50: float | None = None
    ttft_p95: float | None = None
    ttft_p99: float | None = None

    @property
    def errors(self) -> int:
        """Failed probes."""
        return self.count - self.successes

    @property
    def success_rate(self) -> float | None:
        """successes / count, 0..1; None without probes."""
        return ratio(self.successes, self.count)


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One chart step: its start (Unix seconds, inside the window) and its figures."""

    start: int
    count: int
    successes: int
    p95: float | None  # seconds

    @property
    def success_rate(self) -> float | None:
        """successes / count, 0..1; None for a step without probes."""
        return ratio(self.successes, self.count)


@dataclass(frozen=True)
class Series:
    """Per-step figures of one endpoint, oldest first, one point per step."""

    step_minutes: int
    points: list[SeriesPoint]


@dataclass(frozen=True)
class EndpointStatus:
    """One (target, endpoint) over a window."""

    target: str
    endpoint: str
    region: str  # of the newest probe
    models: list[str]  # sorted
    figures: Figures
    mean: float | None  # seconds
    max: float | None  # seconds
    last: LastProbe | None
    last_failure: LastFailure | None
    series: Series | None  # only when asked for


@dataclass(frozen=True)
class OverallStatus:
    """All endpoints of a window together."""

    figures: Figures
    endpoints: int
    failing_endpoints: int  # whose newest probe failed
    last_at: float | None  # start of the newest probe


@dataclass(frozen=True)
class WindowStatus:
    """The answer of History.status."""

    window_minutes: int
    start: float  # first minute of the window, Unix seconds
    end: float  # now
    overall: OverallStatus
    endpoints: list[EndpointStatus]  # sorted by (target, endpoint)


@dataclass(frozen=True, slots=True)
class HistogramBucket:
    """Probes with a duration up to `le` seconds (None: +Inf) and above the previous."""

    le: float | None
    count: int
    cumulative: int


@dataclass(frozen=True)
class LatencyHistogram:
    """The answer of History.latency_histogram."""

    endpoint: str | None
    target: str | None
    window_minutes: int
    start: float
    end: float
    count: int
    sum: float  # seconds
    buckets: list[HistogramBucket]


@dataclass(frozen=True)
class StoreInfo:
    """What /status says about the store; the optional fields belong to one backend."""

    backend: str
    retention_hours: float
    resolutions_minutes: tuple[int, ...]
    max_events: int | None = None  # memory
    db_file: str | None = None  # SQLite, the file's base name

"""Minute aggregates: one per (bucket, target, endpoint, model), the plan of buckets
covering a window, and the group a window query adds them up into."""

from __future__ import annotations

from collections.abc import Iterable

from ..result import ProbeResult
from ..sketch import LatencySketch, SketchSum
from .model import LastFailure, LastProbe
from .results import Figures, SeriesPoint

QUANTILES = (0.5, 0.95, 0.99)
# Aggregates are kept per minute and per COARSE minutes. 15: a 24 h window is 96 coarse
# buckets plus at most 28 edge minutes, ~12x fewer merges than 1440 minutes, and the
# chart's 24 h step (15 min) is a whole number of coarse buckets.
COARSE = 15
RESOLUTIONS = (1, COARSE)
# /status?series=1 returns at most ~120 points per endpoint: the step is the smallest of
# these (minutes) giving <= 120 points. 24 h -> 15 min (96 points), 6 h -> 3 min.
SERIES_STEPS = (1, 2, 3, 5, 10, 15, 30, 60)
MAX_SERIES_POINTS = 120


class BucketAgg:
    """Everything /status needs about one (bucket, target, endpoint, model); a bucket is
    one minute or COARSE minutes, named by its first minute (Unix minutes)."""

    __slots__ = ("region", "count", "successes", "errors", "input_tokens", "output_tokens",
                 "total_tokens", "response_bytes", "cost_usd", "sketch", "blob", "last",
                 "last_failure", "ttft", "ttft_blob")

    def __init__(self, region: str = "") -> None:
        self.region = region
        self.count = 0
        self.successes = 0
        # error_type -> count; None on a healthy bucket (most of them: saves a dict each)
        self.errors: dict[str, int] | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        self.total_tokens = 0
        self.response_bytes = 0
        self.cost_usd = 0.0
        self.sketch: LatencySketch | None = LatencySketch()
        # Either sketch or blob (its encoding) is set. Rows read from SQLite for a query
        # stay encoded (merging bytes is cheaper than decoding first), and the memory
        # store freezes past buckets to bytes (~5x smaller than the objects).
        self.blob: bytes | None = None
        self.last: LastProbe | None = None
        self.last_failure: LastFailure | None = None
        # Time to first token of the streaming probes, a second sketch kept the same way
        # (live or as bytes); both None on the buckets of probes that do not stream.
        self.ttft: LatencySketch | None = None
        self.ttft_blob: bytes | None = None

    def add(self, r: ProbeResult) -> None:
        """Count one probe in this bucket."""
        if self.sketch is None:  # a late probe for a frozen bucket
            self.thaw()
        self.region = r.region
        self.count += 1
        if r.success:
            self.successes += 1
        else:
            if self.errors is None:
                self.errors = {}
            self.errors[r.error_type] = self.errors.get(r.error_type, 0) + 1
            if self.last_failure is None or r.started_at >= self.last_failure.ts:
                self.last_failure = LastFailure(r.started_at, r.error_type, r.http_status,
                                                r.error_message)
        self.input_tokens += r.input_tokens
        self.output_tokens += r.output_tokens
        self.total_tokens += r.total_tokens
        self.response_bytes += r.response_bytes
        self.cost_usd += r.cost_usd
        self.sketch.add(max(r.duration_seconds, 0.0))  # type: ignore[union-attr]
        if r.ttft_seconds is not None:
            if self.ttft is None:
                self.ttft = (LatencySketch.from_bytes(self.ttft_blob) if self.ttft_blob
                             else LatencySketch())
                self.ttft_blob = None
            self.ttft.add(r.ttft_seconds)
        # Probes finish out of order (a slow one started earlier); "last" is by start time.
        if self.last is None or r.started_at >= self.last.ts:
            self.last = LastProbe(r.started_at, r.success, r.error_type, r.http_status,
                                  r.error_message)

    def freeze(self) -> None:
        """Keep the sketches as bytes only (past buckets)."""
        if self.sketch is not None:
            self.blob, self.sketch = self.sketch.to_bytes(), None
        if self.ttft is not None:
            self.ttft_blob, self.ttft = self.ttft.to_bytes(), None

    def thaw(self) -> None:
        """Decode the sketch again, to add to it."""
        if self.sketch is None:
            self.sketch = LatencySketch.from_bytes(self.blob) if self.blob else LatencySketch()
            self.blob = None

    def sketch_bytes(self) -> bytes:
        """The sketch's encoding, whether live or frozen."""
        return self.sketch.to_bytes() if self.sketch is not None else (self.blob or b"")

    def merge_sketch_into(self, total: SketchSum) -> None:
        """Add this bucket's latencies to a window sum."""
        if self.sketch is not None:
            total.add(self.sketch)
        elif self.blob is not None:
            total.add_bytes(self.blob)

    def ttft_bytes(self) -> bytes | None:
        """The TTFT sketch's encoding, None when no probe of the bucket had a TTFT."""
        return self.ttft.to_bytes() if self.ttft is not None else self.ttft_blob

    def merge_ttft_into(self, total: SketchSum) -> None:
        """Add this bucket's times to first token to a window sum."""
        if self.ttft is not None:
            total.add(self.ttft)
        elif self.ttft_blob is not None:
            total.add_bytes(self.ttft_blob)


Key = tuple[str, str, str]  # target, endpoint, model
Row = tuple[int, Key, BucketAgg]  # bucket's first minute, key, aggregate
Span = tuple[int, int, int]  # resolution (minutes), first bucket, last bucket (inclusive)


def plan(first: int, last: int, step: int = COARSE) -> list[Span]:
    """Buckets covering minutes first..last exactly: whole COARSE buckets inside the
    range, minutes at the edges. With a series step that is not a multiple of COARSE,
    minutes only (a coarse bucket must fall inside one step)."""
    if step % COARSE:
        return [(1, first, last)]
    c0 = -(-first // COARSE) * COARSE  # first coarse boundary >= first
    c1 = (last + 1) // COARSE * COARSE  # end (exclusive) of the last whole coarse bucket
    if c0 >= c1:
        return [(1, first, last)]
    spans: list[Span] = []
    if first < c0:
        spans.append((1, first, c0 - 1))
    spans.append((COARSE, c0, c1 - COARSE))
    if c1 <= last:
        spans.append((1, c1, last))
    return spans


def series_step(window_minutes: int) -> int:
    """The chart step (minutes) of a window: the smallest giving <= 120 points."""
    return next((s for s in SERIES_STEPS if window_minutes / s <= MAX_SERIES_POINTS),
                SERIES_STEPS[-1])


class _Step:
    """One chart step while a window is summed: counts and the latencies of its buckets."""

    __slots__ = ("count", "successes", "sketch")

    def __init__(self) -> None:
        self.count = self.successes = 0
        self.sketch = SketchSum()


class WindowGroup:
    """A (target, endpoint) over a window: its bucket aggregates added up. The overall
    figures are a WindowGroup too, with the endpoints' groups merged in."""

    __slots__ = ("region", "models", "count", "successes", "errors", "input_tokens",
                 "output_tokens", "total_tokens", "response_bytes", "cost_usd", "sketch",
                 "ttft", "last", "last_failure", "steps")

    def __init__(self) -> None:
        self.region = ""
        self.models: set[str] = set()
        self.count = self.successes = 0
        self.errors: dict[str, int] = {}
        self.input_tokens = self.output_tokens = self.total_tokens = self.response_bytes = 0
        self.cost_usd = 0.0
        self.sketch = SketchSum()
        self.ttft = SketchSum()  # times to first token (streaming probes)
        self.last: LastProbe | None = None
        self.last_failure: LastFailure | None = None
        self.steps: dict[int, _Step] = {}  # step index in the window -> its sums

    def merge(self, agg: BucketAgg | WindowGroup) -> None:
        """Add the figures of a bucket aggregate or another group (not the sketch)."""
        self.count += agg.count
        self.successes += agg.successes
        if agg.errors:
            for k, v in agg.errors.items():
                self.errors[k] = self.errors.get(k, 0) + v
        self.input_tokens += agg.input_tokens
        self.output_tokens += agg.output_tokens
        self.total_tokens += agg.total_tokens
        self.response_bytes += agg.response_bytes
        self.cost_usd += agg.cost_usd
        if agg.last is not None and (self.last is None or agg.last.ts >= self.last.ts):
            self.last = agg.last
            self.region = agg.region
        if agg.last_failure is not None and (
                self.last_failure is None or agg.last_failure.ts >= self.last_failure.ts):
            self.last_failure = agg.last_failure

    def add_to_step(self, index: int, agg: BucketAgg) -> None:
        """Count a bucket in chart step `index` (its latencies go to the step only)."""
        st = self.steps.get(index)
        if st is None:
            st = self.steps[index] = _Step()
        st.count += agg.count
        st.successes += agg.successes
        agg.merge_sketch_into(st.sketch)

    def close_steps(self) -> None:
        """Add the steps' latencies to the window's: bucket sketches -> step sums ->
        window sum, so each aggregate is decoded once and adding a step's sum to the
        window's is one integer addition."""
        for st in self.steps.values():
            self.sketch.add(st.sketch)

    def series(self, first: int, step: int, n_steps: int) -> list[SeriesPoint]:
        """One point per step of a window starting at minute `first`; steps are aligned
        to multiples of `step` minutes, so the first may start before the window (its
        point then says the window's start)."""
        first_step = first // step
        points = []
        for i in range(n_steps):
            start = max((first_step + i) * step, first) * 60
            st = self.steps.get(i)
            points.append(SeriesPoint(start, 0, 0, None) if st is None else
                          SeriesPoint(start, st.count, st.successes, st.sketch.quantile(0.95)))
        return points

    def figures(self) -> Figures:
        """The figures of this group over its window."""
        p50, p95, p99 = self.sketch.quantiles(QUANTILES)
        return Figures(self.count, self.successes, p50, p95, p99,
                       dict(sorted(self.errors.items())), self.input_tokens,
                       self.output_tokens, self.total_tokens, self.response_bytes,
                       self.cost_usd, self.ttft.count, *self.ttft.quantiles(QUANTILES))


def overall(groups: Iterable[WindowGroup]) -> tuple[WindowGroup, int, int]:
    """The groups merged into one, with the number of groups and of failing ones."""
    total = WindowGroup()
    n = failing = 0
    for g in groups:
        n += 1
        total.merge(g)
        total.sketch.add(g.sketch)
        total.ttft.add(g.ttft)
        if g.last is not None and not g.last.success:
            failing += 1
    return total, n, failing

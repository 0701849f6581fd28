"""The History interface: writing probes, and the window and trace queries both backends
answer from the same aggregate rows (memory.py and sqlite.py supply the rows)."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any
from collections.abc import Callable, Iterable

from ..metrics import BUCKETS
from ..result import ProbeResult
from ..sketch import SketchSum
from .aggregates import COARSE, RESOLUTIONS, Row, Span, WindowGroup, overall, plan, series_step
from .model import (
    Event,
    TraceFilter,
    TracePage,
    check_limit,
    check_window,
    decode_cursor,
    encode_cursor,
)
from .results import (
    EndpointStatus,
    HistogramBucket,
    LatencyHistogram,
    OverallStatus,
    Series,
    StoreInfo,
    WindowStatus,
)

# The histogram buckets of openai_request_duration_seconds, so the page and Grafana show
# the same shape.
HISTOGRAM_BOUNDS: tuple[float, ...] = tuple(BUCKETS)


class History(ABC):
    """Common interface and the window computations shared by both backends.

    Thread-safe: probe worker threads write while HTTP threads read.
    """

    backend = "abstract"

    def __init__(self, retention_hours: float, clock: Callable[[], float]) -> None:
        if not retention_hours > 0:  # the settings have refused it already
            raise ValueError("retention_hours must be > 0")
        self.retention_seconds = retention_hours * 3600.0
        self.clock = clock
        self.epoch = os.urandom(8)  # cursors from another store/process are refused

    # -- writing ------------------------------------------------------------------------
    def add(self, result: ProbeResult) -> None:
        """Record one probe. Never raises into the probe loop; a no-op after close()."""
        self.add_many((result,))

    @abstractmethod
    def add_many(self, results: Iterable[ProbeResult]) -> None:
        """Record several probes in one go (one SQLite transaction)."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release resources; later adds are ignored."""

    # -- reading: backends supply rows ------------------------------------------------
    @abstractmethod
    def _with_rows(self, spans: list[Span], fn: Callable[[Iterable[Row]], Any]) -> Any:
        """Call fn(aggregate rows of the spans) under the store's read guard."""

    @abstractmethod
    def _query_events(self, filters: TraceFilter, below_id: int | None,
                      limit: int) -> list[Event]:
        """Up to `limit` matching events with id < below_id, newest first."""

    def info(self) -> StoreInfo:
        """The backend and its bounds, for /status."""
        return StoreInfo(self.backend, self.retention_seconds / 3600.0, RESOLUTIONS)

    # -- queries ------------------------------------------------------------------------
    def _window_bounds(self, window_minutes: int, now: float | None) -> tuple[float, int, int]:
        window_minutes = check_window(window_minutes)
        now = self.clock() if now is None else float(now)
        last = int(now // 60)
        return now, last - window_minutes + 1, last

    def status(self, window_minutes: int, now: float | None = None,
               series: bool = False) -> WindowStatus:
        """Per target/endpoint and overall figures over the last `window_minutes` minutes
        (the current, partial minute included), from aggregates only. With `series`, each
        endpoint also gets count, p95 and success rate per step (steps aligned to
        multiples of the step, so the first point may cover part of a step)."""
        now, first, last = self._window_bounds(window_minutes, now)
        step = series_step(window_minutes) if series else COARSE
        first_step = first // step

        def build(rows: Iterable[Row]) -> dict[tuple[str, str], WindowGroup]:
            groups: dict[tuple[str, str], WindowGroup] = {}
            for bucket, (target, endpoint, model), agg in rows:
                g = groups.get((target, endpoint))
                if g is None:
                    g = groups[(target, endpoint)] = WindowGroup()
                g.models.add(model)
                g.merge(agg)
                agg.merge_ttft_into(g.ttft)
                if series:
                    g.add_to_step(bucket // step - first_step, agg)
                else:
                    agg.merge_sketch_into(g.sketch)
            if series:
                for g in groups.values():
                    g.close_steps()
            return groups

        groups = self._with_rows(plan(first, last, step), build)
        n_steps = last // step - first_step + 1
        endpoints = [
            EndpointStatus(
                target, endpoint, g.region, sorted(g.models), g.figures(),
                g.sketch.sum / g.sketch.count if g.sketch.count else None,
                g.sketch.max if g.sketch.count else None, g.last, g.last_failure,
                Series(step, g.series(first, step, n_steps)) if series else None)
            for (target, endpoint), g in sorted(groups.items())]
        total, n, failing = overall(groups.values())
        return WindowStatus(
            window_minutes, first * 60.0, now,
            OverallStatus(total.figures(), n, failing,
                          None if total.last is None else total.last.ts),
            endpoints)

    def latency_histogram(self, endpoint: str | None, window_minutes: int,
                          now: float | None = None,
                          target: str | None = None) -> LatencyHistogram:
        """Probe counts per latency bucket (the Prometheus histogram's bounds) over the
        window, for one endpoint (None: all) and optionally one target."""
        now, first, last = self._window_bounds(window_minutes, now)

        def build(rows: Iterable[Row]) -> SketchSum:
            sketch = SketchSum()
            for _bucket, (t, e, _model), agg in rows:
                if (endpoint is None or e == endpoint) and (target is None or t == target):
                    agg.merge_sketch_into(sketch)
            return sketch

        sketch = self._with_rows(plan(first, last), build)
        buckets = []
        cumulative = 0
        for bound, c in zip((*HISTOGRAM_BOUNDS, None), sketch.count_le(HISTOGRAM_BOUNDS),
                            strict=True):
            cumulative += c
            buckets.append(HistogramBucket(bound, c, cumulative))
        return LatencyHistogram(endpoint, target, window_minutes, first * 60.0, now,
                                sketch.count, sketch.sum, buckets)

    def traces(self, filters: TraceFilter | None = None, limit: int = 100,
               cursor: str | None = None) -> TracePage:
        """Raw events newest first. `cursor` (from a previous page) continues strictly below
        the last id returned, so inserts made meanwhile never shift or repeat a page."""
        filters = filters or TraceFilter()
        limit = check_limit(limit)
        below = decode_cursor(cursor, self.epoch, filters) if cursor else None
        events = self._query_events(filters, below, limit + 1)
        more = len(events) > limit
        events = events[:limit]
        next_cursor = (encode_cursor(events[-1].id, self.epoch, filters)
                       if more and events else None)
        return TracePage(events, next_cursor)

"""Probe history: raw events for /traces, minute sketches for window queries.

Every ProbeResult goes to ``History.add``. Two things are kept:

* **events**: one row per probe, newest-first by a monotonic id, for ``/traces``;
* **aggregates**: per (bucket, target, endpoint, model) the count, successes, errors by
  type, tokens, bytes, cost, a mergeable latency sketch and the last probe and last
  failure seen, at two resolutions: 1-minute and 15-minute buckets (both updated on every
  add). ``status`` and ``latency_histogram`` read only these: a window is covered by whole
  15-minute buckets plus 1-minute buckets at its two edges, so a 24 h window merges at
  most ~124 aggregates per endpoint, whatever the probe rate.

Backends:

* ``MemoryHistory`` (default): a deque bounded by ``history_max_events`` and by age
  (``history_retention_hours``), and dicts of aggregates pruned by age.
* ``SQLiteHistory`` (``ENABLE_DB=1``): stdlib sqlite3 in WAL mode. Each ``add`` is one
  transaction that inserts the event and upserts its aggregate rows, committed with
  ``synchronous=FULL`` so a crash (process or power) loses at most the probe being
  written. Readers use their own connections, so HTTP queries never wait on writers.

Both are thread-safe: probe worker threads write while HTTP threads read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import os
import queue
import sqlite3
import struct
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from .metrics import BUCKETS
from .result import ERROR_TYPES, STATUS_ERROR, STATUS_SUCCESS, ProbeResult
from .settings import ConfigError, Settings
from .sketch import LatencySketch, SketchSum

log = logging.getLogger("exporter.history")

MAX_WINDOW_MINUTES = 1440
MAX_TRACE_LIMIT = 1000
QUANTILES = (0.5, 0.95, 0.99)
# The histogram buckets of openai_request_duration_seconds, so the page and Grafana show
# the same shape.
HISTOGRAM_BOUNDS = BUCKETS
# Aggregates are kept per minute and per COARSE minutes. 15: a 24 h window is 96 coarse
# buckets plus at most 28 edge minutes, ~12x fewer merges than 1440 minutes, and the
# chart's 24 h step (15 min) is a whole number of coarse buckets.
COARSE = 15
RESOLUTIONS = (1, COARSE)
# /status?series=1 returns at most ~120 points per endpoint: the step is the smallest of
# these (minutes) giving <= 120 points. 24 h -> 15 min (96 points), 6 h -> 3 min.
SERIES_STEPS = (1, 2, 3, 5, 10, 15, 30, 60)
MAX_SERIES_POINTS = 120
SCHEMA_VERSION = "1"


class HistoryError(ValueError):
    """A bad query parameter; str(err) is the message for the 400 answer."""


class HistoryClosed(RuntimeError):
    """A query during shutdown, after close()."""


class CursorError(HistoryError):
    """A cursor that is malformed, from another store, or from other filters."""


# --------------------------------------------------------------------------------------
# Events


class Event(NamedTuple):
    """One probe as stored (a tuple: ~half the memory of a ProbeResult)."""

    id: int
    ts: float  # started_at, Unix seconds
    target: str
    region: str
    endpoint: str
    model: str
    duration_seconds: float
    success: bool
    error_type: str
    http_status: int | None
    error_message: str
    request_id: str
    input_tokens: int
    output_tokens: int
    total_tokens: int
    response_bytes: int
    cost_usd: float


# Column order of /traces?format=csv (and of the dicts in json/ndjson).
TRACE_FIELDS = ("id", "time", "ts", "target", "region", "endpoint", "model", "status",
                "error_type", "http_status", "duration_ms", "error_message", "request_id",
                "input_tokens", "output_tokens", "total_tokens", "response_bytes", "cost_usd")


def rfc3339(ts: float) -> str:
    """UTC RFC 3339 with milliseconds, e.g. 2026-03-01T12:00:00.250Z."""
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def event_dict(ev: Event) -> dict[str, Any]:
    """JSON-ready form of an event, keys in TRACE_FIELDS order."""
    return {
        "id": ev.id, "time": rfc3339(ev.ts), "ts": round(ev.ts, 3), "target": ev.target,
        "region": ev.region, "endpoint": ev.endpoint, "model": ev.model,
        "status": STATUS_SUCCESS if ev.success else STATUS_ERROR,
        "error_type": ev.error_type, "http_status": ev.http_status,
        "duration_ms": round(ev.duration_seconds * 1000.0, 3),
        "error_message": ev.error_message, "request_id": ev.request_id,
        "input_tokens": ev.input_tokens, "output_tokens": ev.output_tokens,
        "total_tokens": ev.total_tokens, "response_bytes": ev.response_bytes,
        "cost_usd": ev.cost_usd,
    }


@dataclass(frozen=True)
class TraceFilter:
    """Filters of /traces; None means "any". since is inclusive, until exclusive."""

    target: str | None = None
    endpoint: str | None = None
    model: str | None = None
    status: str | None = None  # success | error
    error_type: str | None = None
    since: float | None = None
    until: float | None = None

    def __post_init__(self) -> None:
        if self.status not in (None, STATUS_SUCCESS, STATUS_ERROR):
            raise HistoryError("status must be success or error")
        if self.error_type is not None and self.error_type not in ERROR_TYPES:
            raise HistoryError("error_type must be one of " + ", ".join(ERROR_TYPES))
        if self.since is not None and self.until is not None and self.since > self.until:
            raise HistoryError("since must not be after until")

    def digest(self) -> bytes:
        """8 bytes identifying these filters, so a cursor cannot be reused with others."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).digest()[:8]


@dataclass(frozen=True)
class TracePage:
    events: list[dict[str, Any]]  # newest first
    next_cursor: str | None  # None: no older matching event


_CURSOR = struct.Struct("<Q8s8s")  # last id returned, store epoch, filter digest


def encode_cursor(last_id: int, epoch: bytes, filters: TraceFilter) -> str:
    raw = _CURSOR.pack(last_id, epoch, filters.digest())
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, epoch: bytes, filters: TraceFilter) -> int:
    """The id to continue below; CursorError if the cursor does not fit this query."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        last_id, cur_epoch, digest = _CURSOR.unpack(raw)
    except (binascii.Error, struct.error, ValueError):
        raise CursorError("cursor is not valid") from None
    if cur_epoch != epoch:
        raise CursorError("cursor is from another history store (restarted?); start over")
    if digest != filters.digest():
        raise CursorError("cursor was issued for other filters")
    return last_id


# --------------------------------------------------------------------------------------
# Minute aggregates


class BucketAgg:
    """Everything /status needs about one (bucket, target, endpoint, model); a bucket is
    one minute or COARSE minutes, named by its first minute (Unix minutes)."""

    __slots__ = ("region", "count", "successes", "errors", "input_tokens", "output_tokens",
                 "total_tokens", "response_bytes", "cost_usd", "sketch", "blob", "last",
                 "last_failure")

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
        # (ts, success, error_type, http_status, message) of the newest probe
        self.last: tuple[float, bool, str, int | None, str] | None = None
        # (ts, error_type, http_status, message) of the newest failed probe
        self.last_failure: tuple[float, str, int | None, str] | None = None

    def add(self, r: ProbeResult) -> None:
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
            if self.last_failure is None or r.started_at >= self.last_failure[0]:
                self.last_failure = (r.started_at, r.error_type, r.http_status,
                                     r.error_message)
        self.input_tokens += r.input_tokens
        self.output_tokens += r.output_tokens
        self.total_tokens += r.total_tokens
        self.response_bytes += r.response_bytes
        self.cost_usd += r.cost_usd
        self.sketch.add(max(r.duration_seconds, 0.0))  # type: ignore[union-attr]
        # Probes finish out of order (a slow one started earlier); "last" is by start time.
        if self.last is None or r.started_at >= self.last[0]:
            self.last = (r.started_at, r.success, r.error_type, r.http_status, r.error_message)

    def freeze(self) -> None:
        if self.sketch is not None:
            self.blob, self.sketch = self.sketch.to_bytes(), None

    def thaw(self) -> None:
        if self.sketch is None:
            self.sketch = LatencySketch.from_bytes(self.blob) if self.blob else LatencySketch()
            self.blob = None

    def merge_sketch_into(self, total: SketchSum) -> None:
        if self.sketch is not None:
            total.add(self.sketch)
        elif self.blob is not None:
            total.add_bytes(self.blob)


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


class _Group:
    """A (target, endpoint) over a window: its bucket aggregates added up. The overall
    block is a _Group too, with the endpoints' groups merged in."""

    __slots__ = ("region", "models", "count", "successes", "errors", "input_tokens",
                 "output_tokens", "total_tokens", "response_bytes", "cost_usd", "sketch",
                 "last", "last_failure", "steps")

    def __init__(self) -> None:
        self.region = ""
        self.models: set[str] = set()
        self.count = self.successes = 0
        self.errors: dict[str, int] = {}
        self.input_tokens = self.output_tokens = self.total_tokens = self.response_bytes = 0
        self.cost_usd = 0.0
        self.sketch = SketchSum()
        self.last: tuple | None = None
        self.last_failure: tuple | None = None
        # step index -> [count, successes, SketchSum, replaced by the step's p95 at the end]
        self.steps: dict[int, list] = {}

    def merge(self, agg: BucketAgg | _Group) -> None:
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
        if agg.last is not None and (self.last is None or agg.last[0] >= self.last[0]):
            self.last = agg.last
            self.region = agg.region
        if agg.last_failure is not None and (
                self.last_failure is None or agg.last_failure[0] >= self.last_failure[0]):
            self.last_failure = agg.last_failure

    def figures(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The figures /status shows for an endpoint and overall: (counts and percentiles,
        errors, tokens, bytes and cost), to put around the block's own keys."""
        p50, p95, p99 = self.sketch.quantiles(QUANTILES)
        return {
            "count": self.count, "successes": self.successes,
            "errors": self.count - self.successes,
            "success_rate": _ratio(self.successes, self.count),
            "p50_ms": _ms(p50), "p95_ms": _ms(p95), "p99_ms": _ms(p99),
        }, {
            "errors_by_type": dict(sorted(self.errors.items())),
            "tokens": {"input": self.input_tokens, "output": self.output_tokens,
                       "total": self.total_tokens},
            "response_bytes": self.response_bytes,
            "cost_usd": round(self.cost_usd, 8),
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def check_window(window: Any) -> int:
    """Window in minutes, an integer 1..1440; HistoryError otherwise."""
    if isinstance(window, bool) or not isinstance(window, int):
        raise HistoryError("window must be an integer number of minutes, 1..1440")
    if not 1 <= window <= MAX_WINDOW_MINUTES:
        raise HistoryError("window must be between 1 and 1440 minutes")
    return window


def check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_TRACE_LIMIT:
        raise HistoryError(f"limit must be an integer 1..{MAX_TRACE_LIMIT}")
    return limit


# --------------------------------------------------------------------------------------
# Stores


class History(ABC):
    """Common interface and the window computations shared by both backends."""

    backend = "abstract"

    def __init__(self, retention_hours: float, clock: Callable[[], float]) -> None:
        if retention_hours <= 0:
            raise ConfigError("HISTORY_RETENTION_HOURS must be > 0")
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

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "retention_hours": self.retention_seconds / 3600.0,
                "resolutions_minutes": list(RESOLUTIONS)}

    # -- queries ------------------------------------------------------------------------
    def _window_bounds(self, window_minutes: int, now: float | None) -> tuple[float, int, int]:
        window_minutes = check_window(window_minutes)
        now = self.clock() if now is None else float(now)
        last = int(now // 60)
        return now, last - window_minutes + 1, last

    def status(self, window_minutes: int, now: float | None = None,
               series: bool = False) -> dict[str, Any]:
        """Per target/endpoint and overall figures over the last `window_minutes` minutes
        (the current, partial minute included), from aggregates only. With `series`, each
        endpoint also gets count, p95 and success rate per step (steps aligned to
        multiples of the step, so the first point may cover part of a step)."""
        now, first, last = self._window_bounds(window_minutes, now)
        step = next((s for s in SERIES_STEPS if window_minutes / s <= MAX_SERIES_POINTS),
                    SERIES_STEPS[-1]) if series else COARSE
        first_step = first // step

        def build(rows: Iterable[Row]) -> dict[tuple[str, str], _Group]:
            groups: dict[tuple[str, str], _Group] = {}
            for bucket, (target, endpoint, model), agg in rows:
                g = groups.get((target, endpoint))
                if g is None:
                    g = groups[(target, endpoint)] = _Group()
                g.models.add(model)
                g.merge(agg)
                if series:
                    i = bucket // step - first_step
                    st = g.steps.get(i)
                    if st is None:
                        st = g.steps[i] = [0, 0, SketchSum()]
                    st[0] += agg.count
                    st[1] += agg.successes
                    agg.merge_sketch_into(st[2])
                else:
                    agg.merge_sketch_into(g.sketch)
            if series:
                # bucket sketches -> step sums -> window sum: each aggregate is decoded
                # once, and adding a step's sum to the window's is one integer addition.
                for g in groups.values():
                    for st in g.steps.values():
                        g.sketch.add(st[2])
                        st[2] = st[2].quantile(0.95)
            return groups

        groups = self._with_rows(plan(first, last, step), build)
        n_steps = last // step - first_step + 1 if series else 0
        rows = [self._row(target, endpoint, g, first, step, n_steps)
                for (target, endpoint), g in sorted(groups.items())]
        return {
            "window_minutes": window_minutes,
            "from": rfc3339(first * 60), "to": rfc3339(now), "now": round(now, 3),
            "quantiles": "nearest-rank; latency sketch relative error <= 0.5%",
            "store": self.describe(),
            "overall": self._overall(groups.values()),
            "endpoints": rows,
        }

    @staticmethod
    def _row(target: str, endpoint: str, g: _Group, first: int, step: int,
             n_steps: int) -> dict[str, Any]:
        """One endpoint's figures; with n_steps > 0 also its chart series."""
        head, tail = g.figures()
        last = g.last
        fail = g.last_failure
        row: dict[str, Any] = {
            "target": target, "endpoint": endpoint, "region": g.region,
            "models": sorted(g.models),
            **head,
            "mean_ms": _ms(g.sketch.sum / g.sketch.count) if g.sketch.count else None,
            "max_ms": _ms(g.sketch.max) if g.sketch.count else None,
            "last_status": None if last is None else (STATUS_SUCCESS if last[1] else STATUS_ERROR),
            "last_error_type": None if last is None else last[2],
            "last_error_message": None if last is None else last[4],
            "last_http_status": None if last is None else last[3],
            "last_at": None if last is None else rfc3339(last[0]),
            "last_failure": None if fail is None else {
                "at": rfc3339(fail[0]), "error_type": fail[1], "http_status": fail[2],
                "message": fail[3]},
            **tail,
        }
        if n_steps:
            points: list[list[Any]] = []
            first_step = first // step
            for i in range(n_steps):
                st = g.steps.get(i)
                t = max((first_step + i) * step, first) * 60  # step start, inside the window
                if st is None:
                    points.append([t, 0, None, None])
                else:
                    points.append([t, st[0], _ms(st[2]), _ratio(st[1], st[0])])
            row["series"] = {"step_minutes": step,
                             "fields": ["t", "count", "p95_ms", "success_rate"],
                             "points": points}
        return row

    @staticmethod
    def _overall(groups: Iterable[_Group]) -> dict[str, Any]:
        total = _Group()
        n = failing = 0
        for g in groups:
            n += 1
            total.merge(g)
            total.sketch.add(g.sketch)
            if g.last is not None and not g.last[1]:
                failing += 1
        head, tail = total.figures()
        return {
            **head,
            "endpoints": n, "failing_endpoints": failing,
            "last_at": None if total.last is None else rfc3339(total.last[0]),
            **tail,
        }

    def latency_histogram(self, endpoint: str | None, window_minutes: int,
                          now: float | None = None,
                          target: str | None = None) -> dict[str, Any]:
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
        counts = sketch.count_le(HISTOGRAM_BOUNDS)
        buckets = []
        cumulative = 0
        for bound, c in zip((*HISTOGRAM_BOUNDS, None), counts):
            cumulative += c
            buckets.append({"le_ms": None if bound is None else round(bound * 1000.0, 3),
                            "le": "+Inf" if bound is None else f"{bound:g}",
                            "count": c, "cumulative": cumulative})
        return {"endpoint": endpoint, "target": target, "window_minutes": window_minutes,
                "from": rfc3339(first * 60), "to": rfc3339(now), "count": sketch.count,
                "sum_ms": _ms(sketch.sum), "buckets": buckets}

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
        return TracePage([event_dict(e) for e in events], next_cursor)


# The memory store keeps each event as (packed numbers, target, region, endpoint, model,
# error_type, message, request_id): about 270 bytes instead of ~430 for a tuple of
# Python objects. Ids are not stored: they are consecutive in the deque.
_PACK = struct.Struct("<dddhIIII")  # ts, duration, cost, http (-1: none), tokens x3, bytes
_TS = struct.Struct("<d")
Stored = tuple[bytes, str, str, str, str, str, str, str]


def _pack(r: ProbeResult, intern: Callable[[str], str]) -> Stored:
    packed = _PACK.pack(r.started_at, r.duration_seconds, r.cost_usd,
                        -1 if r.http_status is None else r.http_status,
                        r.input_tokens, r.output_tokens, r.total_tokens, r.response_bytes)
    return (packed, intern(r.target), intern(r.region), intern(r.endpoint), intern(r.model),
            intern(r.error_type), r.error_message, r.request_id)


def _unpack(event_id: int, st: Stored) -> Event:
    ts, dur, cost, http, inp, out, tot, nbytes = _PACK.unpack(st[0])
    return Event(event_id, ts, st[1], st[2], st[3], st[4], dur, st[5] == "none", st[5],
                 None if http < 0 else http, st[6], st[7], inp, out, tot, nbytes, cost)


def _stored_matcher(f: TraceFilter) -> Callable[[Stored], bool]:
    """TraceFilter.matches on the packed form: strings first, numbers only if needed."""
    ok = (None if f.status is None else f.status == STATUS_SUCCESS)
    lo = -math.inf if f.since is None else f.since
    hi = math.inf if f.until is None else f.until
    check_ts = f.since is not None or f.until is not None
    unpack_ts = _TS.unpack_from

    def match(st: Stored) -> bool:
        if ((f.target is not None and st[1] != f.target)
                or (f.endpoint is not None and st[3] != f.endpoint)
                or (f.model is not None and st[4] != f.model)
                or (f.error_type is not None and st[5] != f.error_type)
                or (ok is not None and (st[5] == "none") != ok)):
            return False
        return not check_ts or lo <= unpack_ts(st[0])[0] < hi

    return match


class MemoryHistory(History):
    """In-process history: lost on restart, bounded by count and age."""

    backend = "memory"

    def __init__(self, max_events: int = 100_000, retention_hours: float = 24.0,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(retention_hours, clock)
        if max_events < 1:
            raise ConfigError("HISTORY_MAX_EVENTS must be >= 1")
        self.max_events = max_events
        self._lock = threading.Lock()
        self._events: deque[Stored] = deque(maxlen=max_events)
        self._next_id = 1  # id of the next event; events[i] has id next_id - len + i
        # resolution -> bucket's first minute -> key -> aggregate
        self._aggs: dict[int, dict[int, dict[Key, BucketAgg]]] = {r: {} for r in RESOLUTIONS}
        self._swept_minute = 0
        self._live: set[tuple[int, int]] = set()  # (res, bucket) holding unfrozen sketches
        # The same few label strings repeat in every event; keep one copy of each.
        self._strings: dict[str, str] = {}
        self._keys: dict[Key, Key] = {}
        self._closed = False

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "max_events": self.max_events}

    def _intern(self, s: str) -> str:
        return self._strings.setdefault(s, s) if len(self._strings) < 10_000 else s

    def add_many(self, results: Iterable[ProbeResult]) -> None:
        try:
            with self._lock:
                if self._closed:
                    return
                for r in results:
                    st = _pack(r, self._intern)
                    self._next_id += 1
                    self._events.append(st)  # maxlen drops the oldest
                    minute = int(r.started_at // 60)
                    key = (st[1], st[3], st[4])
                    key = self._keys.setdefault(key, key)  # one tuple per key, not per bucket
                    for res, buckets in self._aggs.items():
                        bucket = minute - minute % res
                        self._live.add((res, bucket))
                        aggs = buckets.get(bucket)
                        if aggs is None:
                            aggs = buckets[bucket] = {}
                        agg = aggs.get(key)
                        if agg is None:
                            agg = aggs[key] = BucketAgg(st[2])
                        agg.add(r)
                self._prune()
        except Exception:  # a history bug must not break the probe loop or other sinks
            log.exception("history: could not record probe")

    def _prune(self) -> None:
        cutoff = self.clock() - self.retention_seconds
        events = self._events
        while events and _TS.unpack_from(events[0][0])[0] < cutoff:
            events.popleft()
        now_minute = int(self.clock() // 60)
        if now_minute <= self._swept_minute:  # at most one sweep per minute
            return
        self._swept_minute = now_minute
        cutoff_minute = int(cutoff // 60)
        for res, buckets in self._aggs.items():
            # A bucket goes once all of it is older than the retention.
            for b in [b for b in buckets if b + res <= cutoff_minute]:
                del buckets[b]
        # Buckets that ended 2+ minutes ago only change if a probe started then is still
        # running: keep their sketches as bytes, ~5x smaller and what window queries sum
        # fastest. A late probe thaws its bucket, and the next sweep freezes it again.
        for res, b in [rb for rb in self._live if rb[1] + rb[0] <= now_minute - 2]:
            self._live.discard((res, b))
            for agg in self._aggs[res].get(b, {}).values():
                agg.freeze()

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def __len__(self) -> int:
        return len(self._events)

    def _with_rows(self, spans: list[Span], fn: Callable[[Iterable[Row]], Any]) -> Any:
        def rows() -> Iterator[Row]:
            for res, first_bucket, last_bucket in spans:
                buckets = self._aggs[res]
                for b in range(first_bucket, last_bucket + 1, res):
                    aggs = buckets.get(b)
                    if aggs:
                        for key, agg in aggs.items():
                            yield b, key, agg

        # Aggregates mutate on add: merge them under the lock (O(buckets), not O(events)).
        with self._lock:
            return fn(rows())

    def _query_events(self, filters: TraceFilter, below_id: int | None,
                      limit: int) -> list[Event]:
        out: list[Event] = []
        with self._lock:
            events = self._events
            event_id = self._next_id  # one above the newest
            it: Iterable[Stored] = reversed(events)
            if below_id is not None and below_id < event_id:
                # ids are consecutive, so the position is arithmetic; islice skips the
                # newer events in C.
                it = islice(it, event_id - below_id, None)
                event_id = below_id
            match = _stored_matcher(filters)
            for st in it:
                event_id -= 1
                if match(st):
                    out.append(_unpack(event_id, st))
                    if len(out) >= limit:
                        break
        return out


# --------------------------------------------------------------------------------------
# SQLite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids never reused after pruning
    ts REAL NOT NULL,
    target TEXT NOT NULL, region TEXT NOT NULL, endpoint TEXT NOT NULL, model TEXT NOT NULL,
    duration_seconds REAL NOT NULL, success INTEGER NOT NULL, error_type TEXT NOT NULL,
    http_status INTEGER, error_message TEXT NOT NULL, request_id TEXT NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL, response_bytes INTEGER NOT NULL, cost_usd REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_endpoint ON events (endpoint, id);
CREATE TABLE IF NOT EXISTS aggregates (
    res INTEGER NOT NULL,     -- bucket length in minutes: 1 or COARSE
    minute INTEGER NOT NULL,  -- the bucket's first minute (Unix seconds // 60)
    target TEXT NOT NULL, endpoint TEXT NOT NULL,
    model TEXT NOT NULL, region TEXT NOT NULL,
    count INTEGER NOT NULL, successes INTEGER NOT NULL,
    errors TEXT,  -- JSON {error_type: count}, NULL when none
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL, response_bytes INTEGER NOT NULL, cost_usd REAL NOT NULL,
    sketch BLOB NOT NULL,
    last_ts REAL, last_success INTEGER, last_error_type TEXT, last_http_status INTEGER,
    last_message TEXT,
    fail_ts REAL, fail_error_type TEXT, fail_http_status INTEGER, fail_message TEXT,
    PRIMARY KEY (res, minute, target, endpoint, model)
) WITHOUT ROWID;
"""

_EVENT_COLUMNS = ("id, ts, target, region, endpoint, model, duration_seconds, success, "
                  "error_type, http_status, error_message, request_id, input_tokens, "
                  "output_tokens, total_tokens, response_bytes, cost_usd")
_AGG_COLUMNS = ("res, minute, target, endpoint, model, region, count, successes, errors, "
                   "input_tokens, output_tokens, total_tokens, response_bytes, cost_usd, "
                   "sketch, last_ts, last_success, last_error_type, last_http_status, "
                   "last_message, fail_ts, fail_error_type, fail_http_status, fail_message")
_INSERT_EVENT = ("INSERT INTO events (" + _EVENT_COLUMNS[4:] + ") VALUES ("
                 + ", ".join("?" * 16) + ")")
_UPSERT_AGG = ("INSERT OR REPLACE INTO aggregates (" + _AGG_COLUMNS + ") VALUES ("
               + ", ".join("?" * 24) + ")")
_PRUNE_EVERY_SECONDS = 60.0


def _agg_to_row(ck: tuple[int, int, str, str, str], a: BucketAgg) -> tuple:
    last = a.last or (None, None, None, None, None)
    fail = a.last_failure or (None, None, None, None)
    return (*ck, a.region, a.count, a.successes,
            json.dumps(a.errors, sort_keys=True) if a.errors else None,
            a.input_tokens, a.output_tokens, a.total_tokens, a.response_bytes, a.cost_usd,
            a.sketch.to_bytes() if a.sketch is not None else a.blob,
            last[0], None if last[1] is None else int(last[1]), last[2], last[3], last[4],
            *fail)


def _agg_from_row(row: tuple, decode: bool = True) -> Row:
    """(bucket, key, aggregate) of a row; decode=False keeps the sketch encoded."""
    (_res, minute, target, endpoint, model, region, count, successes, errors, inp, out, tot,
     nbytes, cost, sketch, last_ts, last_success, last_et, last_http, last_msg,
     fail_ts, fail_et, fail_http, fail_msg) = row
    a = BucketAgg(region)
    a.count, a.successes = count, successes
    if errors:
        a.errors = json.loads(errors)
    a.input_tokens, a.output_tokens, a.total_tokens = inp, out, tot
    a.response_bytes, a.cost_usd = nbytes, cost
    if decode:
        a.sketch = LatencySketch.from_bytes(sketch)
    else:
        a.sketch, a.blob = None, sketch
    if last_ts is not None:
        a.last = (last_ts, bool(last_success), last_et, last_http, last_msg)
    if fail_ts is not None:
        a.last_failure = (fail_ts, fail_et, fail_http, fail_msg)
    return minute, (target, endpoint, model), a


class SQLiteHistory(History):
    """History in one SQLite file: survives restarts, pruned by age."""

    backend = "sqlite"

    def __init__(self, path: str, retention_hours: float = 24.0,
                 clock: Callable[[], float] = time.time, synchronous: str = "FULL") -> None:
        super().__init__(retention_hours, clock)
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError("synchronous must be OFF, NORMAL, FULL or EXTRA")
        self.path = path
        self._lock = threading.Lock()  # one writer at a time
        self._closed = False
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all_readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        # Write-through cache of the aggregate rows being written: saves reading a row back
        # on every add. Always equal to the committed rows (cleared on a failed write).
        self._cache: dict[tuple[int, int, str, str, str], BucketAgg] = {}
        self._last_prune = 0.0
        self._last_error_log = 0.0
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
            self._init_meta()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"DB_FILE={path}: cannot use as history database: {exc}") from None
        self._prune()

    def _init_meta(self) -> None:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if "schema" in meta and meta["schema"] != SCHEMA_VERSION:
            raise ConfigError(f"DB_FILE={self.path}: history schema {meta['schema']}, this "
                              f"version reads schema {SCHEMA_VERSION}; move the file away")
        if "epoch" not in meta:
            meta["epoch"] = self.epoch.hex()
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                 [("schema", SCHEMA_VERSION), ("epoch", meta["epoch"])])
            self._db.execute("COMMIT")
        # Ids persist across restarts, so cursors may too: the epoch is per file.
        self.epoch = bytes.fromhex(meta["epoch"])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "db_file": os.path.basename(self.path)}

    # -- writing ------------------------------------------------------------------------
    def _agg_for(self, ck: tuple[int, int, str, str, str], region: str) -> BucketAgg:
        agg = self._cache.get(ck)
        if agg is None:
            row = self._db.execute(
                "SELECT " + _AGG_COLUMNS + " FROM aggregates WHERE res=? AND minute=? "
                "AND target=? AND endpoint=? AND model=?", ck).fetchone()
            agg = _agg_from_row(row)[2] if row else BucketAgg(region)
            self._cache[ck] = agg
        return agg

    def add_many(self, results: Iterable[ProbeResult]) -> None:
        with self._lock:
            if self._closed:
                return
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                touched: dict[tuple[int, int, str, str, str], BucketAgg] = {}
                events = []
                for r in results:
                    minute = int(r.started_at // 60)
                    for res in RESOLUTIONS:
                        ck = (res, minute - minute % res, r.target, r.endpoint, r.model)
                        agg = self._agg_for(ck, r.region)
                        agg.add(r)
                        touched[ck] = agg
                    events.append((r.started_at, r.target, r.region, r.endpoint, r.model,
                                   r.duration_seconds, int(r.success), r.error_type,
                                   r.http_status, r.error_message, r.request_id,
                                   r.input_tokens, r.output_tokens, r.total_tokens,
                                   r.response_bytes, r.cost_usd))
                db.executemany(_INSERT_EVENT, events)
                db.executemany(_UPSERT_AGG, [_agg_to_row(ck, a) for ck, a in touched.items()])
                self._maybe_prune()
                db.execute("COMMIT")
            except Exception as exc:  # disk full, locked, a bug: keep probing, say so
                self._cache.clear()  # it may hold updates that were rolled back
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                now = time.monotonic()
                if now - self._last_error_log > 60:  # one line a minute, not one per probe
                    self._last_error_log = now
                    log.error("history: could not write to %s: %s", self.path, exc)
                return
            if len(self._cache) > 4096:  # keep the buckets still being written
                newest = max(ck[1] for ck in self._cache)
                self._cache = {ck: a for ck, a in self._cache.items()
                               if ck[1] >= newest - COARSE - 2}

    def _maybe_prune(self) -> None:
        now = self.clock()
        if now - self._last_prune >= _PRUNE_EVERY_SECONDS:
            self._prune_in_tx(now)

    def _prune_in_tx(self, now: float) -> None:
        self._last_prune = now
        cutoff = now - self.retention_seconds
        self._db.execute("DELETE FROM events WHERE ts < ?", (cutoff,))
        # A bucket goes once all of it is older than the retention.
        for res in RESOLUTIONS:
            self._db.execute("DELETE FROM aggregates WHERE res = ? AND minute < ?",
                             (res, int(cutoff // 60) - res + 1))

    def _prune(self) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._prune_in_tx(self.clock())
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._db.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            self._db.close()
        with self._readers_lock:
            for conn in self._all_readers:
                conn.close()
            self._all_readers.clear()

    # -- reading ------------------------------------------------------------------------
    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A pooled read connection: WAL readers see the last commit and never block
        the writer (nor wait for it)."""
        try:
            conn = self._readers.get_nowait()
        except queue.Empty:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only=1")
            conn.execute("PRAGMA busy_timeout=5000")
            with self._readers_lock:
                if self._closed:
                    conn.close()
                    raise HistoryClosed("history is closed") from None
                self._all_readers.append(conn)
        try:
            yield conn
        finally:
            if not self._closed:
                self._readers.put(conn)

    def _with_rows(self, spans: list[Span], fn: Callable[[Iterable[Row]], Any]) -> Any:
        with self._reader() as conn:
            # One read transaction: every span sees the same commit.
            conn.execute("BEGIN")
            try:
                def rows() -> Iterator[Row]:
                    for res, first_bucket, last_bucket in spans:
                        cur = conn.execute(
                            "SELECT " + _AGG_COLUMNS + " FROM aggregates "
                            "WHERE res = ? AND minute BETWEEN ? AND ?",
                            (res, first_bucket, last_bucket))
                        for row in cur:
                            yield _agg_from_row(row, decode=False)
                return fn(rows())
            finally:
                conn.execute("COMMIT")

    def _query_events(self, filters: TraceFilter, below_id: int | None,
                      limit: int) -> list[Event]:
        where, args = [], []
        for column in ("target", "endpoint", "model", "error_type"):
            value = getattr(filters, column)
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if filters.status is not None:
            where.append("success = ?")
            args.append(1 if filters.status == STATUS_SUCCESS else 0)
        if filters.since is not None:
            where.append("ts >= ?")
            args.append(filters.since)
        if filters.until is not None:
            where.append("ts < ?")
            args.append(filters.until)
        if below_id is not None:
            where.append("id < ?")
            args.append(below_id)
        sql = "SELECT " + _EVENT_COLUMNS + " FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._reader() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [Event(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), *r[8:])
                for r in rows]

    def __len__(self) -> int:
        with self._reader() as conn:
            return conn.execute("SELECT count(*) FROM events").fetchone()[0]


def open_history(settings: Settings, clock: Callable[[], float] = time.time) -> History:
    """The store the settings ask for: SQLite when enable_db, else memory.

    Raises ConfigError (one readable line) when the database cannot be used.
    """
    if settings.enable_db:
        return SQLiteHistory(settings.db_file, settings.history_retention_hours, clock)
    return MemoryHistory(settings.history_max_events, settings.history_retention_hours, clock)

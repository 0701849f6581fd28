"""The in-process store: a ring of packed events bounded by count and age, and dicts of
minute aggregates bounded by age. Lost on restart."""

from __future__ import annotations

import logging
import math
import struct
import threading
import time
from collections import deque
from itertools import islice
from typing import Any, NamedTuple
from collections.abc import Callable, Iterable, Iterator

from ..result import PHASES, STATUS_SUCCESS, ProbeResult
from .aggregates import RESOLUTIONS, BucketAgg, Key, Row, Span
from .model import Event, TraceFilter
from .results import StoreInfo
from .store import History

log = logging.getLogger("exporter.history")

# The numbers of an event in one bytes object: ts, duration, cost, http status (-1: none),
# tokens x3, response bytes; then, only for a probe that has any, its timings: a byte
# whose bits say which of _TIMINGS are present, and those values (most probes have none
# or a few phases: absent ones cost nothing).
_NUMBERS = struct.Struct("<dddhIIII")
_TS = struct.Struct("<d")
_TIMINGS = ("ttft", "tpot", *PHASES)


def _pack_timings(r: ProbeResult) -> bytes:
    values = (r.ttft_seconds, r.tpot_seconds, *(r.phases.get(p) for p in PHASES))
    present = [v for v in values if v is not None]
    if not present:
        return b""
    mask = sum(1 << i for i, v in enumerate(values) if v is not None)
    return struct.pack(f"<B{len(present)}d", mask, *present)


_NO_TIMINGS = (None, None, None)
_VALUES = [struct.Struct(f"<{n}d") for n in range(len(_TIMINGS) + 1)]


def _unpack_timings(tail: bytes) -> tuple[float | None, float | None, dict[str, float] | None]:
    """ttft, tpot and phases (None without any) from the tail _pack_timings wrote."""
    mask = tail[0]
    values = iter(_VALUES[(len(tail) - 1) // 8].unpack_from(tail, 1))
    ttft = next(values) if mask & 1 else None
    tpot = next(values) if mask & 2 else None
    phases = ({p: next(values) for i, p in enumerate(PHASES, 2) if mask >> i & 1}
              if mask >> 2 else None)
    return ttft, tpot, phases


class PackedEvent(NamedTuple):
    """One event as the memory store keeps it: about 270 bytes instead of ~430 for an
    Event of Python objects (a NamedTuple costs what a tuple costs). Ids are not stored:
    they are consecutive in the ring. The label strings are interned."""

    numbers: bytes  # _NUMBERS
    target: str
    region: str
    endpoint: str
    model: str
    error_type: str
    error_message: str
    request_id: str

    @classmethod
    def pack(cls, r: ProbeResult, intern: Callable[[str], str]) -> PackedEvent:
        """The packed form of a probe, its label strings interned."""
        numbers = _NUMBERS.pack(r.started_at, r.duration_seconds, r.cost_usd,
                                -1 if r.http_status is None else r.http_status,
                                r.input_tokens, r.output_tokens, r.total_tokens,
                                r.response_bytes) + _pack_timings(r)
        return cls(numbers, intern(r.target), intern(r.region), intern(r.endpoint),
                   intern(r.model), intern(r.error_type), r.error_message, r.request_id)

    def unpack(self, event_id: int) -> Event:
        """The event with its id (ids are positions in the ring, not stored)."""
        numbers = self.numbers
        ts, dur, cost, http, inp, out, tot, nbytes = _NUMBERS.unpack_from(numbers)
        timings = (_unpack_timings(numbers[_NUMBERS.size:]) if len(numbers) > _NUMBERS.size
                   else _NO_TIMINGS)
        return Event(event_id, ts, self.target, self.region, self.endpoint, self.model, dur,
                     self.error_type == "none", self.error_type, None if http < 0 else http,
                     self.error_message, self.request_id, inp, out, tot, nbytes, cost,
                     *timings)

    @property
    def ts(self) -> float:
        """Start time, Unix seconds (read without unpacking the rest)."""
        return _TS.unpack_from(self.numbers)[0]


def _matcher(f: TraceFilter) -> Callable[[PackedEvent], bool]:
    """The filters on the packed form: strings first, numbers only if needed."""
    ok = (None if f.status is None else f.status == STATUS_SUCCESS)
    lo = -math.inf if f.since is None else f.since
    hi = math.inf if f.until is None else f.until
    check_ts = f.since is not None or f.until is not None
    unpack_ts = _TS.unpack_from

    def match(ev: PackedEvent) -> bool:
        if ((f.target is not None and ev.target != f.target)
                or (f.endpoint is not None and ev.endpoint != f.endpoint)
                or (f.model is not None and ev.model != f.model)
                or (f.error_type is not None and ev.error_type != f.error_type)
                or (ok is not None and (ev.error_type == "none") != ok)):
            return False
        return not check_ts or lo <= unpack_ts(ev.numbers)[0] < hi

    return match


class MemoryHistory(History):
    """In-process history: lost on restart, bounded by count and age."""

    backend = "memory"

    def __init__(self, max_events: int = 100_000, retention_hours: float = 24.0,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(retention_hours, clock)
        if max_events < 1:  # the settings have refused it already
            raise ValueError("max_events must be >= 1")
        self.max_events = max_events
        self._lock = threading.Lock()
        self._events: deque[PackedEvent] = deque(maxlen=max_events)
        self._next_id = 1  # id of the next event; events[i] has id next_id - len + i
        # resolution -> bucket's first minute -> key -> aggregate
        self._aggs: dict[int, dict[int, dict[Key, BucketAgg]]] = {r: {} for r in RESOLUTIONS}
        self._swept_minute = 0
        self._live: set[tuple[int, int]] = set()  # (res, bucket) holding unfrozen sketches
        # The same few label strings repeat in every event; keep one copy of each.
        self._strings: dict[str, str] = {}
        self._keys: dict[Key, Key] = {}
        self._closed = False

    def info(self) -> StoreInfo:
        base = super().info()
        return StoreInfo(base.backend, base.retention_hours, base.resolutions_minutes,
                         max_events=self.max_events)

    def _intern(self, s: str) -> str:
        return self._strings.setdefault(s, s) if len(self._strings) < 10_000 else s

    def add_many(self, results: Iterable[ProbeResult]) -> None:
        try:
            with self._lock:
                if self._closed:
                    return
                for r in results:
                    ev = PackedEvent.pack(r, self._intern)
                    self._next_id += 1
                    self._events.append(ev)  # maxlen drops the oldest
                    minute = int(r.started_at // 60)
                    key = (ev.target, ev.endpoint, ev.model)
                    key = self._keys.setdefault(key, key)  # one tuple per key, not per bucket
                    for res, buckets in self._aggs.items():
                        bucket = minute - minute % res
                        self._live.add((res, bucket))
                        aggs = buckets.get(bucket)
                        if aggs is None:
                            aggs = buckets[bucket] = {}
                        agg = aggs.get(key)
                        if agg is None:
                            agg = aggs[key] = BucketAgg(ev.region)
                        agg.add(r)
                self._prune()
        except Exception:  # a history bug must not break the probe loop or other sinks
            log.exception("history: could not record probe")

    def _prune(self) -> None:
        cutoff = self.clock() - self.retention_seconds
        events = self._events
        while events and events[0].ts < cutoff:
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
            it: Iterable[PackedEvent] = reversed(events)
            if below_id is not None and below_id < event_id:
                # ids are consecutive, so the position is arithmetic; islice skips the
                # newer events in C.
                it = islice(it, event_id - below_id, None)
                event_id = below_id
            match = _matcher(filters)
            for ev in it:
                event_id -= 1
                if match(ev):
                    out.append(ev.unpack(event_id))
                    if len(out) >= limit:
                        break
        return out

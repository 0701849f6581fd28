"""The counting model: high-water marks per (kind, bucket, dimensions).

Usage buckets are historical aggregates that keep changing for a while: the current
minute fills up, late data lands in closed minutes, and a bucket is sometimes revised.
Each poll re-reads the whole lookback window. For every row (bucket start, dimensions)
and every field, the mark is the highest value already counted; a poll adds only what a
row shows above its mark. So:

* the same bucket read twice adds nothing;
* a bucket that grows (the current minute, late data) adds exactly its growth;
* a bucket revised downward adds nothing and is counted once as a correction, however many
  of its rows went down (and if it grows again later, only what exceeds the old high is
  added: nothing is counted twice);
* a row that disappears from a completely read bucket is a revision to zero.

Marks of a bucket are dropped once the bucket starts before the window of the poll, that
is, once no later poll can read it again. This module is pure: no I/O, no clock.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

Dims = tuple[str, ...]  # label values of the dimensions, in the poller's label order
Values = tuple[float | None, ...]  # one per field of the kind; None: not reported


@dataclass(slots=True)
class Row:
    """The mark of one (bucket, dimensions): per field the highest value counted, and
    whether the row is currently seen below it (its correction is already counted).
    An array of doubles, not a list of numbers: a third of the memory per row (exact for
    counts below 2**53)."""

    highs: array[float]
    low: bool = False


@dataclass
class Outcome:
    """What one poll of one kind changes."""

    increments: list[tuple[Dims, int, float]] = field(default_factory=list)  # dims, field, +n
    corrections: int = 0
    changed: set[tuple[int, Dims]] = field(default_factory=set)  # rows to persist
    seen: set[Dims] = field(default_factory=set)  # dimensions read (their series exist)


@dataclass(frozen=True)
class Reading:
    """One poll's view of a kind: rows per bucket start, and whether every page of the
    window was read (then a row missing from a bucket means zero)."""

    window_start: int  # Unix seconds: buckets starting before it are never read again
    buckets: dict[int, dict[Dims, Values]]
    complete: bool = True


class KindMarks:
    """The marks of one usage kind: bucket start -> dimensions -> Row."""

    def __init__(self, n_fields: int) -> None:
        self.n_fields = n_fields
        self.buckets: dict[int, dict[Dims, Row]] = {}
        # One tuple per label set, shared by its rows in every bucket: the label values
        # of a reading are new strings on every poll and would cost more than the marks.
        self._dims: dict[Dims, Dims] = {}
        self._dims_kept = 0

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.buckets.values())

    def rows(self) -> Iterator[tuple[int, Dims, Row]]:
        """Every mark, oldest bucket first."""
        for bucket in sorted(self.buckets):
            for dims, row in self.buckets[bucket].items():
                yield bucket, dims, row

    def put(self, bucket: int, dims: Dims, highs: Iterable[float], low: bool = False) -> None:
        """Set one mark (loading from a store)."""
        self.buckets.setdefault(bucket, {})[self._shared(dims)] = Row(array("d", highs), low)

    def evict(self, before: int) -> list[int]:
        """Drop the marks of buckets starting before `before`; returns their starts."""
        old = [b for b in self.buckets if b < before]
        for b in old:
            del self.buckets[b]
        if len(self._dims) > 2 * self._dims_kept + 64:
            # Forget label sets gone quiet, once their number has doubled: amortised O(1).
            live = {dims for rows in self.buckets.values() for dims in rows}
            self._dims = {d: d for d in self._dims if d in live}
            self._dims_kept = len(self._dims)
        return old

    def _shared(self, dims: Dims) -> Dims:
        return self._dims.setdefault(dims, dims)

    def apply(self, reading: Reading, baseline: bool = False) -> Outcome:
        """Count one poll. With `baseline` (a fresh start: nothing counted yet), the
        values read become the marks and nothing is added: the counters count usage from
        the exporter's start on, never the lookback that happened before it."""
        out = Outcome()
        for bucket, rows in reading.buckets.items():
            if bucket < reading.window_start:
                continue  # outside the window: its marks may already be gone
            marks = self.buckets.setdefault(bucket, {})
            revised = False
            for dims, values in rows.items():
                out.seen.add(dims)
                row = marks.get(dims)
                if row is None:
                    dims = self._shared(dims)
                    row = marks[dims] = Row(array("d", bytes(8 * self.n_fields)))
                    out.changed.add((bucket, dims))
                    if baseline:
                        row.highs = array("d", (v or 0.0 for v in values))
                        continue
                revised |= self._count(bucket, dims, row, values, out)
            if reading.complete:
                for dims, row in marks.items():
                    if dims not in rows and any(row.highs):
                        revised |= self._count(bucket, dims, row, (0.0,) * self.n_fields, out)
            # One correction per bucket and revision, however many of its rows went down.
            out.corrections += revised
        self.evict(reading.window_start)
        return out

    @staticmethod
    def _count(bucket: int, dims: Dims, row: Row, values: Values, out: Outcome) -> bool:
        """Add what `values` show above the row's marks; True if the row just went down."""
        down = False
        for i, value in enumerate(values):
            if value is None:
                continue  # an optional field this answer does not report
            high = row.highs[i]
            if value > high:
                out.increments.append((dims, i, value - high))
                row.highs[i] = value
                out.changed.add((bucket, dims))
            elif value < high:
                down = True
        went_down = down and not row.low
        if down != row.low:
            row.low = down
            out.changed.add((bucket, dims))
        return went_down


def sum_rows(rows: Iterable[tuple[Dims, Values]]) -> dict[Dims, Values]:
    """Rows with the same dimensions added field by field (rows folded into the overflow
    dimensions by the series cap); None + None stays None (not reported)."""
    out: dict[Dims, Values] = {}
    for dims, values in rows:
        prev = out.get(dims)
        if prev is None:
            out[dims] = values
        else:
            out[dims] = tuple(b if a is None else a if b is None else a + b
                              for a, b in zip(prev, values, strict=True))
    return out

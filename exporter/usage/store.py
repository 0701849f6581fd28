"""Where the high-water marks live between polls: in memory (lost with the process), or
with ENABLE_DB=1 in the history's SQLite file, in tables of their own (``usage_*``), so a
restart neither counts the lookback again nor loses it.

What is kept: the marks of every kind, which kinds have started counting, the dimensions
the marks are keyed by (a change of USAGE_GROUP_BY makes old marks meaningless: they are
dropped and counting starts afresh), and the increments not yet shown on a new series
(see UsageMetrics). Never a key: the tables hold label values and numbers only.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import dataclass, field

from ..sqlitetx import write_transaction
from ..throttle import Throttle
from .marks import Dims, KindMarks

log = logging.getLogger("exporter.usage")

SeriesKey = tuple[str, str, Dims, str]  # family, kind, dims, token_type

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS usage_marks (
    kind TEXT NOT NULL, bucket INTEGER NOT NULL, dims TEXT NOT NULL,
    highs TEXT NOT NULL, low INTEGER NOT NULL,
    PRIMARY KEY (kind, bucket, dims)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage_pending (series TEXT PRIMARY KEY, amount REAL NOT NULL);
"""
STORE_VERSION = "1"


@dataclass
class Loaded:
    """What a store hands the poller at start."""

    marks: dict[str, KindMarks] = field(default_factory=dict)  # kinds that have started
    pending: dict[SeriesKey, float] = field(default_factory=dict)
    started_at: dict[str, float] = field(default_factory=dict)  # kind -> first poll time


class MemoryMarks:
    """Marks in memory only: a restart starts counting afresh (nothing before start)."""

    backend = "memory"

    def load(self, dims_key: str, kinds: dict[str, int], evict_before: int) -> Loaded:
        """Nothing to load."""
        return Loaded()

    def save(self, kind: str, marks: KindMarks, changed: set[tuple[int, Dims]],
             evicted_before: int, started_at: float,
             pending: dict[SeriesKey, float]) -> None:
        """Nothing to save: the marks are the poller's objects."""

    def close(self) -> None:
        """Nothing to release."""


class SQLiteMarks:
    """Marks in the history's SQLite file, one transaction per kind and poll."""

    backend = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._closed = False
        self._error_log = Throttle(60.0)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=5000")  # the history writes the same file
        self._db.executescript(_SCHEMA)

    def load(self, dims_key: str, kinds: dict[str, int], evict_before: int) -> Loaded:
        """The marks of `kinds` (name -> number of fields) still inside the lookback.
        Marks keyed by other dimensions than `dims_key` are dropped: counting starts afresh."""
        out = Loaded()
        with self._lock:
            state = dict(self._db.execute("SELECT key, value FROM usage_state").fetchall())
            if state.get("dims") != dims_key or state.get("version") != STORE_VERSION:
                with write_transaction(self._db) as db:
                    for table in ("usage_state", "usage_marks", "usage_pending"):
                        db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
                    db.executemany("INSERT INTO usage_state VALUES (?, ?)",
                                   [("dims", dims_key), ("version", STORE_VERSION)])
                return out
            self._db.execute("DELETE FROM usage_marks WHERE bucket < ?", (evict_before,))
            for kind, n_fields in kinds.items():
                started = state.get(f"started:{kind}")
                if started is None:
                    continue
                marks = out.marks[kind] = KindMarks(n_fields)
                out.started_at[kind] = float(started)
                for bucket, dims, highs, low in self._db.execute(
                        "SELECT bucket, dims, highs, low FROM usage_marks WHERE kind = ?",
                        (kind,)):
                    values = json.loads(highs)
                    if len(values) == n_fields:
                        marks.put(bucket, tuple(json.loads(dims)), values, bool(low))
            for series, amount in self._db.execute("SELECT series, amount FROM usage_pending"):
                family, kind, dims, token_type = json.loads(series)
                out.pending[(family, kind, tuple(dims), token_type)] = amount
        return out

    def save(self, kind: str, marks: KindMarks, changed: set[tuple[int, Dims]],
             evicted_before: int, started_at: float,
             pending: dict[SeriesKey, float]) -> None:
        """Persist one poll of one kind in one transaction; a failure is logged (once a
        minute) and the poll's counting stands in memory."""
        rows = []
        for bucket, dims in changed:
            row = marks.buckets.get(bucket, {}).get(dims)
            if row is not None:
                rows.append((kind, bucket, json.dumps(list(dims)), json.dumps(row.highs.tolist()),
                             int(row.low)))
        with self._lock:
            if self._closed:
                return
            try:
                with write_transaction(self._db) as db:
                    db.execute("DELETE FROM usage_marks WHERE kind = ? AND bucket < ?",
                               (kind, evicted_before))
                    db.executemany("INSERT OR REPLACE INTO usage_marks VALUES (?, ?, ?, ?, ?)",
                                   rows)
                    db.execute("INSERT OR IGNORE INTO usage_state VALUES (?, ?)",
                               (f"started:{kind}", repr(started_at)))
                    db.execute("DELETE FROM usage_pending")
                    db.executemany("INSERT INTO usage_pending VALUES (?, ?)", [
                        (json.dumps([f, k, list(d), t]), amount)
                        for (f, k, d, t), amount in pending.items()])
            except sqlite3.Error as exc:  # disk full, locked too long: keep counting
                if self._error_log.ready():  # one line a minute, not one per kind
                    log.error("usage: could not save the marks to %s: %s", self.path, exc)

    def close(self) -> None:
        """Close the connection; later saves are ignored."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()


MarkStore = MemoryMarks | SQLiteMarks

"""The SQLite store: stdlib sqlite3 in WAL mode, survives restarts.

Each ``add`` is one transaction that inserts the event and upserts its aggregate rows,
committed with ``synchronous=FULL``, so every probe added survives a crash (process or
power); a crash loses the probes still in flight, whose answer had not come back to be
added (docs/history.md has the measured bound). Readers use their own connections, so HTTP
queries never wait on writers.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from contextlib import contextmanager, suppress
from typing import Any
from collections.abc import Callable, Iterable, Iterator

from ..result import PHASES, STATUS_SUCCESS, ProbeResult
from ..sketch import LatencySketch
from ..sqlitetx import write_transaction
from ..throttle import Throttle
from .aggregates import COARSE, RESOLUTIONS, BucketAgg, Row, Span
from .model import (
    Event,
    HistoryClosed,
    LastFailure,
    LastProbe,
    SchemaVersionError,
    StoreOpenError,
    TraceFilter,
)
from .results import StoreInfo
from .store import History

log = logging.getLogger("exporter.history")

SCHEMA_VERSION = "2"
# Schema 2 (issue 8) added the stream and phase timings: columns added at the end of the
# tables, all NULL-able, so a schema 1 file is migrated in place by ALTER TABLE ADD
# COLUMN (no rewrite, nothing lost; its old rows simply have no timings).
_TIMING_COLUMNS = ("ttft_seconds", "tpot_seconds", *(f"phase_{p}" for p in PHASES))
_MIGRATIONS = {
    "1": [f"ALTER TABLE events ADD COLUMN {c} REAL" for c in _TIMING_COLUMNS]
         + ["ALTER TABLE aggregates ADD COLUMN ttft_sketch BLOB"],
}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids never reused after pruning
    ts REAL NOT NULL,
    target TEXT NOT NULL, region TEXT NOT NULL, endpoint TEXT NOT NULL, model TEXT NOT NULL,
    duration_seconds REAL NOT NULL, success INTEGER NOT NULL, error_type TEXT NOT NULL,
    http_status INTEGER, error_message TEXT NOT NULL, request_id TEXT NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL, response_bytes INTEGER NOT NULL, cost_usd REAL NOT NULL,
    """ + ", ".join(f"{c} REAL" for c in _TIMING_COLUMNS) + """  -- NULL: not measured
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
    ttft_sketch BLOB,  -- NULL when no probe of the bucket had a time to first token
    PRIMARY KEY (res, minute, target, endpoint, model)
) WITHOUT ROWID;
"""

_EVENT_COLUMNS = ("id, ts, target, region, endpoint, model, duration_seconds, success, "
                  "error_type, http_status, error_message, request_id, input_tokens, "
                  "output_tokens, total_tokens, response_bytes, cost_usd, "
                  + ", ".join(_TIMING_COLUMNS))
_AGG_COLUMNS = ("res, minute, target, endpoint, model, region, count, successes, errors, "
                   "input_tokens, output_tokens, total_tokens, response_bytes, cost_usd, "
                   "sketch, last_ts, last_success, last_error_type, last_http_status, "
                   "last_message, fail_ts, fail_error_type, fail_http_status, fail_message, "
                   "ttft_sketch")
_INSERT_EVENT = ("INSERT INTO events (" + _EVENT_COLUMNS[4:] + ") VALUES ("
                 + ", ".join("?" * (16 + len(_TIMING_COLUMNS))) + ")")
_UPSERT_AGG = ("INSERT OR REPLACE INTO aggregates (" + _AGG_COLUMNS + ") VALUES ("
               + ", ".join("?" * 25) + ")")
_PRUNE_EVERY_SECONDS = 60.0


_NO_PHASES = (None,) * len(PHASES)


def _phases(columns: tuple) -> dict[str, float] | None:
    """The phase_* columns of an event row as Event.phases."""
    if columns == _NO_PHASES:
        return None
    return {p: v for p, v in zip(PHASES, columns, strict=True) if v is not None}


BucketKey = tuple[int, int, str, str, str]  # res, bucket's first minute, target, endpoint, model
_NO_LAST = (None,) * 5
_NO_FAILURE = (None,) * 4


def _agg_to_row(ck: BucketKey, a: BucketAgg) -> tuple:
    lp = a.last
    last = _NO_LAST if lp is None else (lp.ts, int(lp.success), lp.error_type, lp.http_status,
                                        lp.message)
    return (*ck, a.region, a.count, a.successes,
            json.dumps(a.errors, sort_keys=True) if a.errors else None,
            a.input_tokens, a.output_tokens, a.total_tokens, a.response_bytes, a.cost_usd,
            a.sketch_bytes(), *last, *(a.last_failure or _NO_FAILURE), a.ttft_bytes())


def _agg_from_row(row: tuple, decode: bool = True) -> Row:
    """(bucket, key, aggregate) of a row; decode=False keeps the sketch encoded."""
    (_res, minute, target, endpoint, model, region, count, successes, errors, inp, out, tot,
     nbytes, cost, sketch, last_ts, last_success, last_et, last_http, last_msg,
     fail_ts, fail_et, fail_http, fail_msg, ttft) = row
    a = BucketAgg(region)
    a.count, a.successes = count, successes
    if errors:
        a.errors = json.loads(errors)
    a.input_tokens, a.output_tokens, a.total_tokens = inp, out, tot
    a.response_bytes, a.cost_usd = nbytes, cost
    if decode:
        a.sketch = LatencySketch.from_bytes(sketch)
        a.ttft = LatencySketch.from_bytes(ttft) if ttft else None
    else:
        a.sketch, a.blob = None, sketch
        a.ttft_blob = ttft
    if last_ts is not None:
        a.last = LastProbe(last_ts, bool(last_success), last_et, last_http, last_msg)
    if fail_ts is not None:
        a.last_failure = LastFailure(fail_ts, fail_et, fail_http, fail_msg)
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
        self._cache: dict[BucketKey, BucketAgg] = {}
        self._last_prune = 0.0
        self._error_log = Throttle(60.0)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
            self._init_meta()
        except sqlite3.DatabaseError as exc:
            raise StoreOpenError(path, f"cannot use as history database: {exc}") from None
        self._prune()

    def _init_meta(self) -> None:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("schema") in _MIGRATIONS:  # an older file we know how to bring forward
            with write_transaction(self._db) as db:
                for statement in _MIGRATIONS[meta["schema"]]:
                    db.execute(statement)
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)",
                           (SCHEMA_VERSION,))
            log.info("history: %s migrated from schema %s to %s", self.path, meta["schema"],
                     SCHEMA_VERSION)
            meta["schema"] = SCHEMA_VERSION
        if "schema" in meta and meta["schema"] != SCHEMA_VERSION:
            raise SchemaVersionError(self.path, meta["schema"], SCHEMA_VERSION)
        if "epoch" not in meta:
            meta["epoch"] = self.epoch.hex()
            with write_transaction(self._db) as db:
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                               [("schema", SCHEMA_VERSION), ("epoch", meta["epoch"])])
        # Ids persist across restarts, so cursors may too: the epoch is per file.
        self.epoch = bytes.fromhex(meta["epoch"])

    def info(self) -> StoreInfo:
        base = super().info()
        return StoreInfo(base.backend, base.retention_hours, base.resolutions_minutes,
                         db_file=os.path.basename(self.path))

    # -- writing ------------------------------------------------------------------------
    def _agg_for(self, ck: BucketKey, region: str) -> BucketAgg:
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
            try:
                with write_transaction(self._db) as db:
                    self._write(db, results)
            except Exception as exc:  # disk full, locked, a bug: keep probing, say so
                self._cache.clear()  # it may hold updates that were rolled back
                if self._error_log.ready():  # one line a minute, not one per probe
                    log.error("history: could not write to %s: %s", self.path, exc)
                return
            if len(self._cache) > 4096:  # keep the buckets still being written
                newest = max(ck[1] for ck in self._cache)
                self._cache = {ck: a for ck, a in self._cache.items()
                               if ck[1] >= newest - COARSE - 2}

    def _write(self, db: sqlite3.Connection, results: Iterable[ProbeResult]) -> None:
        """The events and their aggregate rows, inside add_many's transaction."""
        touched: dict[BucketKey, BucketAgg] = {}
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
                           r.response_bytes, r.cost_usd, r.ttft_seconds,
                           r.tpot_seconds, *(r.phases.get(p) for p in PHASES)))
        db.executemany(_INSERT_EVENT, events)
        db.executemany(_UPSERT_AGG, [_agg_to_row(ck, a) for ck, a in touched.items()])
        self._maybe_prune()

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
        with self._lock, write_transaction(self._db):
            self._prune_in_tx(self.clock())

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with suppress(sqlite3.Error):
                self._db.execute("PRAGMA optimize")
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
        return [Event._make((*r[:7], bool(r[7]), *r[8:19], _phases(r[19:]))) for r in rows]

    def __len__(self) -> int:
        with self._reader() as conn:
            return conn.execute("SELECT count(*) FROM events").fetchone()[0]



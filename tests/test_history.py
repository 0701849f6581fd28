"""History stores: window figures against exact computation, traces and cursors,
bounds and retention, restart and crash survival, concurrent writers and readers."""

from __future__ import annotations

import math
import os
import random
import sqlite3
import subprocess
import sys
import threading

import pytest

from exporter.__main__ import open_history
from exporter.history import (
    CursorError,
    Event,
    History,
    HistoryError,
    MemoryHistory,
    SchemaVersionError,
    SQLiteHistory,
    StoreOpenError,
    TraceFilter,
    TracePage,
    plan,
)
from exporter.result import ProbeResult
from exporter.settings import ConfigError, Settings
from exporter.web.history_json import event_json, histogram_json, status_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOW = 1_800_000_030.0  # fixed (2027-01-15), mid-minute: reproducible minute boundaries
ENDPOINTS = (("openai", "chat", "gpt-4o-mini"), ("openai", "models", ""),
             ("azure", "chat", "gpt-4o"))


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def probe(ts: float, target: str = "openai", endpoint: str = "chat", model: str = "gpt-4o-mini",
          duration: float = 0.3, error_type: str = "none", message: str = "",
          http_status: int | None = 200, **kw) -> ProbeResult:
    ok = error_type == "none"
    base = dict(target=target, region="us-west-1", endpoint=endpoint, model=model,
                started_at=ts, duration_seconds=duration, success=ok, error_type=error_type,
                http_status=http_status, error_message=message,
                input_tokens=7 if ok and model else 0, output_tokens=3 if ok and model else 0,
                total_tokens=10 if ok and model else 0, response_bytes=420,
                cost_usd=0.00001 if ok and model else 0.0)
    base.update(kw)
    return ProbeResult(**base)


def synthetic(n: int, seed: int = 1, span: float = 3 * 3600.0) -> list[ProbeResult]:
    """n probes spread over the `span` seconds before NOW, in time order."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        target, endpoint, model = ENDPOINTS[i % len(ENDPOINTS)]
        ts = NOW - span + span * i / n + rng.random()
        err = "none" if rng.random() < 0.9 else rng.choice(("timeout", "rate_limited"))
        dur = rng.lognormvariate(-1.0, 0.6) if endpoint == "chat" else rng.uniform(0.05, 0.2)
        out.append(probe(ts, target, endpoint, model, duration=dur, error_type=err,
                         message="" if err == "none" else f"upstream said {err}",
                         http_status=200 if err == "none" else 429))
    return out


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request, tmp_path):
    """Factory for a store of the parametrised backend on a shared Clock."""
    stores = []

    def make(clock: Clock | None = None, **kw):
        clock = clock or Clock()
        if request.param == "memory":
            store = MemoryHistory(clock=clock, **kw)
        else:
            kw.pop("max_events", None)
            store = SQLiteHistory(str(tmp_path / "history.db"), clock=clock, **kw)
        stores.append(store)
        return store

    yield make
    for s in stores:
        s.close()


def status_doc(store: History, window, **kw) -> dict:
    """/status as the HTTP layer shapes it (times, milliseconds, key names)."""
    return status_json(store.status(window, **kw), store.info())


def histogram_doc(store: History, *args, **kw) -> dict:
    return histogram_json(store.latency_histogram(*args, **kw))


def events(page: TracePage) -> list[dict]:
    return [event_json(e) for e in page.events]


def exact_quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[max(1, math.ceil(q * len(values))) - 1]


def in_window(results: list[ProbeResult], minutes: int, now: float = NOW) -> list[ProbeResult]:
    first_minute = int(now // 60) - minutes + 1
    return [r for r in results if first_minute <= int(r.started_at // 60) <= int(now // 60)]


@pytest.mark.parametrize("window", [1, 15, 47, 60, 180, 1440])
def test_status_matches_exact_computation(make_store, window):
    results = synthetic(6000)
    store = make_store()
    store.add_many(results)
    doc = status_doc(store, window)
    assert doc["window_minutes"] == window
    chosen = in_window(results, window)
    rows = {(r["target"], r["endpoint"]): r for r in doc["endpoints"]}
    assert set(rows) == {(r.target, r.endpoint) for r in chosen}
    for (target, endpoint), row in rows.items():
        mine = [r for r in chosen if (r.target, r.endpoint) == (target, endpoint)]
        ok = [r for r in mine if r.success]
        assert row["count"] == len(mine)
        assert row["successes"] == len(ok)
        assert row["success_rate"] == pytest.approx(len(ok) / len(mine))
        assert row["tokens"] == {"input": sum(r.input_tokens for r in mine),
                                 "output": sum(r.output_tokens for r in mine),
                                 "total": sum(r.total_tokens for r in mine)}
        assert row["response_bytes"] == sum(r.response_bytes for r in mine)
        assert row["cost_usd"] == pytest.approx(sum(r.cost_usd for r in mine))
        for q, key in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
            want = exact_quantile([r.duration_seconds * 1000 for r in mine], q)
            assert abs(row[key] - want) <= 0.01 * want, (key, row[key], want)
        newest = max(mine, key=lambda r: r.started_at)
        assert row["last_status"] == newest.status
        assert row["last_error_type"] == newest.error_type
        assert row["last_error_message"] == newest.error_message
        errors = [r for r in mine if not r.success]
        if errors:
            assert row["last_failure"]["message"] == max(
                errors, key=lambda r: r.started_at).error_message
        assert row["errors_by_type"] == {
            t: sum(1 for r in errors if r.error_type == t) for t in {r.error_type for r in errors}}
    overall = doc["overall"]
    assert overall["count"] == len(chosen)
    assert overall["successes"] == sum(r.success for r in chosen)
    want = exact_quantile([r.duration_seconds * 1000 for r in chosen], 0.95)
    assert abs(overall["p95_ms"] - want) <= 0.01 * want


def test_status_reads_minute_aggregates_not_events(make_store):
    store = make_store()
    store.add_many(synthetic(3000))
    before = status_doc(store, 1440, series=True)
    # Drop every raw event: the window figures must not change.
    if isinstance(store, MemoryHistory):
        store._events.clear()
    else:
        store._db.execute("DELETE FROM events")
    assert store.traces().events == []
    assert status_doc(store, 1440, series=True) == before


def test_empty_store_and_window_validation(make_store):
    store = make_store()
    doc = status_doc(store, 60)
    assert doc["endpoints"] == []
    assert doc["overall"]["count"] == 0 and doc["overall"]["success_rate"] is None
    assert doc["overall"]["p95_ms"] is None
    for bad in (0, 1441, -5, 1.5, "60", None, True):
        with pytest.raises(HistoryError):
            status_doc(store, bad)
        with pytest.raises(HistoryError):
            histogram_doc(store, "chat", bad)


def test_last_is_by_start_time_even_when_probes_finish_out_of_order(make_store):
    store = make_store()
    store.add(probe(NOW - 10, error_type="timeout", message="slow one", http_status=None))
    store.add(probe(NOW - 30))  # started earlier, finished later
    row = status_doc(store, 5)["endpoints"][0]
    assert row["last_status"] == "error" and row["last_error_type"] == "timeout"
    assert row["last_error_message"] == "slow one"
    assert row["last_failure"]["error_type"] == "timeout"
    assert status_doc(store, 5)["overall"]["failing_endpoints"] == 1


def test_series_has_one_point_per_step(make_store):
    store = make_store()
    store.add_many(synthetic(3000, span=24 * 3600.0))
    for window, step in ((1440, 15), (360, 3), (60, 1), (15, 1)):
        doc = status_doc(store, window, series=True)
        plain = status_doc(store, window)
        for row, plain_row in zip(doc["endpoints"], plain["endpoints"], strict=True):
            series = row["series"]
            assert series["step_minutes"] == step
            # Steps are aligned to multiples of the step: one partial step at most.
            assert window // step <= len(series["points"]) <= window // step + 1
            assert sum(p[1] for p in series["points"]) == row["count"]
            times = [p[0] for p in series["points"]]
            assert times == sorted(times) and times[0] == int(NOW // 60 - window + 1) * 60
            # Same figures whether merged through steps or straight from the buckets.
            assert {k: v for k, v in row.items() if k != "series"} == plain_row
    assert "series" not in status_doc(store, 60)["endpoints"][0]


@pytest.mark.parametrize("first,last", [(0, 0), (3, 17), (15, 29), (14, 30), (1, 1439),
                                        (30000001, 30001440), (7, 13)])
def test_plan_covers_the_range_exactly(first, last):
    for step in (15, 1, 3, 30):
        minutes = []
        for res, a, b in plan(first, last, step):
            assert a % res == 0 and b % res == 0
            if res > 1:
                assert step % res == 0
            for bucket in range(a, b + 1, res):
                minutes += range(bucket, bucket + res)
        assert minutes == list(range(first, last + 1))


def test_latency_histogram_counts(make_store):
    store = make_store()
    results = synthetic(2000)
    store.add_many(results)
    doc = histogram_doc(store, "chat", 60)
    chosen = [r for r in in_window(results, 60) if r.endpoint == "chat"]
    assert doc["count"] == len(chosen) == doc["buckets"][-1]["cumulative"]
    assert doc["buckets"][-1]["le"] == "+Inf" and doc["buckets"][0]["le_ms"] == 50.0
    # Values well inside a bucket are counted exactly (edges may move by 0.5 %).
    below_250ms = sum(1 for r in chosen if r.duration_seconds <= 0.245)
    above_255ms = sum(1 for r in chosen if r.duration_seconds > 0.255)
    cum_250 = next(b["cumulative"] for b in doc["buckets"] if b["le"] == "0.25")
    assert below_250ms <= cum_250 <= len(chosen) - above_255ms
    only_azure = histogram_doc(store, "chat", 60, target="azure")
    assert only_azure["count"] == sum(1 for r in chosen if r.target == "azure")
    assert histogram_doc(store, None, 60)["count"] == len(in_window(results, 60))
    assert histogram_doc(store, "nope", 60)["count"] == 0


def test_trace_filters(make_store):
    store = make_store()
    results = synthetic(600)
    store.add_many(results)
    cases = [
        (TraceFilter(), lambda r: True),
        (TraceFilter(target="azure"), lambda r: r.target == "azure"),
        (TraceFilter(endpoint="models"), lambda r: r.endpoint == "models"),
        (TraceFilter(model="gpt-4o-mini"), lambda r: r.model == "gpt-4o-mini"),
        (TraceFilter(status="error"), lambda r: not r.success),
        (TraceFilter(status="success", endpoint="chat"),
         lambda r: r.success and r.endpoint == "chat"),
        (TraceFilter(error_type="timeout"), lambda r: r.error_type == "timeout"),
        (TraceFilter(since=NOW - 3600, until=NOW - 1800),
         lambda r: NOW - 3600 <= r.started_at < NOW - 1800),
    ]
    for filters, pred in cases:
        page = store.traces(filters, limit=1000)
        want = [r for r in results if pred(r)][::-1]  # newest first
        assert [e["ts"] for e in events(page)] == [round(r.started_at, 3) for r in want], filters
        assert page.next_cursor is None
    e = events(store.traces(TraceFilter(status="error"), limit=1))[0]
    last_error = [r for r in results if not r.success][-1]
    assert e["status"] == "error" and e["error_message"] == last_error.error_message
    assert e["duration_ms"] == round(last_error.duration_seconds * 1000, 3)
    assert e["time"].endswith("Z")


def test_bad_filters_and_limits():
    with pytest.raises(HistoryError):
        TraceFilter(status="ok")
    with pytest.raises(HistoryError):
        TraceFilter(error_type="teapot")
    with pytest.raises(HistoryError):
        TraceFilter(since=10, until=5)
    store = MemoryHistory(clock=Clock())
    for bad in (0, 1001, "10", 2.0):
        with pytest.raises(HistoryError):
            store.traces(limit=bad)


def test_pagination_is_stable_under_concurrent_inserts(make_store):
    store = make_store()
    store.add_many(synthetic(250))
    filters = TraceFilter(endpoint="chat")
    snapshot = [e["id"] for e in events(store.traces(filters, limit=1000))]
    seen: list[int] = []
    page = store.traces(filters, limit=40)
    rng = random.Random(3)
    while True:
        seen += [e["id"] for e in events(page)]
        # New probes between pages never shift, repeat or skip older ones.
        store.add_many(probe(NOW - rng.random(), endpoint="chat") for _ in range(7))
        if page.next_cursor is None:
            break
        page = store.traces(filters, limit=40, cursor=page.next_cursor)
    assert seen == snapshot
    assert len(set(seen)) == len(seen) and seen == sorted(seen, reverse=True)


def test_cursor_is_bound_to_filters_and_store(make_store, tmp_path):
    store = make_store()
    store.add_many(synthetic(50))
    page = store.traces(TraceFilter(target="openai"), limit=5)
    assert page.next_cursor
    with pytest.raises(CursorError, match="other filters"):
        store.traces(TraceFilter(target="azure"), limit=5, cursor=page.next_cursor)
    for garbage in ("x", "!!!!", "AAAA", page.next_cursor[:-3]):
        with pytest.raises(CursorError):
            store.traces(TraceFilter(target="openai"), cursor=garbage)
    other = MemoryHistory(clock=Clock())
    other.add_many(synthetic(50))
    with pytest.raises(CursorError, match="another history store"):
        other.traces(TraceFilter(target="openai"), cursor=page.next_cursor)


def test_memory_is_bounded_by_count_and_age():
    clock = Clock()
    store = MemoryHistory(max_events=100, retention_hours=1, clock=clock)
    store.add_many(probe(NOW - 600 + i) for i in range(250))
    assert len(store) == 100
    assert events(store.traces(limit=1000))[-1]["ts"] == round(NOW - 600 + 150, 3)
    # The minute figures keep everything inside retention, beyond the raw-event cap.
    assert status_doc(store, 60)["overall"]["count"] == 250
    clock.t = NOW + 3600 - 300  # the first probes pass the 1 h retention
    store.add(probe(clock.t))
    assert all(e["ts"] >= clock.t - 3600 for e in events(store.traces(limit=1000)))
    assert min(store._aggs[1]) >= int((clock.t - 3600) // 60)
    clock.t = NOW + 7200
    store.add(probe(clock.t))
    assert len(store) == 1 and list(store._aggs[1]) == [int(clock.t // 60)]


def test_sqlite_survives_restart_and_prunes_by_age(tmp_path):
    path = str(tmp_path / "h.db")
    clock = Clock()
    store = SQLiteHistory(path, retention_hours=2, clock=clock)
    results = synthetic(900, span=3600.0)
    store.add_many(results[:450])
    for r in results[450:]:
        store.add(r)
    status = status_doc(store, 120, series=True)
    page = store.traces(TraceFilter(endpoint="chat"), limit=10)
    store.close()

    reopened = SQLiteHistory(path, retention_hours=2, clock=clock)
    assert status_doc(reopened, 120, series=True) == status
    assert len(reopened) == 900
    # The epoch lives in the file, so a cursor handed out before the restart still works.
    assert events(reopened.traces(TraceFilter(endpoint="chat"), limit=10,
                                  cursor=page.next_cursor))[0]["id"] < events(page)[-1]["id"]
    reopened.close()

    clock.t = NOW + 1.5 * 3600  # the first half is now older than 2 h
    pruned = SQLiteHistory(path, retention_hours=2, clock=clock)
    cutoff = clock.t - 2 * 3600
    assert len(pruned) == sum(1 for r in results if r.started_at >= cutoff)
    oldest_minute = pruned._db.execute(
        "SELECT min(minute) FROM aggregates WHERE res = 1").fetchone()[0]
    assert oldest_minute >= int(cutoff // 60)
    pruned.close()


_CRASHER = """
import os, sys
sys.path.insert(0, {root!r})
from exporter.history import SQLiteHistory
from tests.test_history import synthetic, Clock
store = SQLiteHistory({path!r}, clock=Clock())
for i, r in enumerate(synthetic(60)):
    store.add(r)
    print(i, flush=True)
os._exit(9)  # no close(), no atexit: as abrupt as a SIGKILL
"""


def test_sqlite_crash_loses_nothing_committed(tmp_path):
    path = str(tmp_path / "crash.db")
    proc = subprocess.run([sys.executable, "-c", _CRASHER.format(root=ROOT, path=path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    acknowledged = len(proc.stdout.split())
    store = SQLiteHistory(path, clock=Clock())
    assert len(store) == acknowledged == 60
    assert status_doc(store, 1440)["overall"]["count"] == 60
    store.close()


def test_sqlite_uses_wal_and_full_sync(tmp_path):
    store = SQLiteHistory(str(tmp_path / "w.db"), clock=Clock())
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_concurrent_writers_and_readers(make_store):
    store = make_store()
    errors: list[BaseException] = []
    per_writer = 150
    stop = threading.Event()

    def write(seed: int) -> None:
        try:
            for r in synthetic(per_writer, seed=seed, span=600.0):
                store.add(r)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def read() -> None:
        try:
            while not stop.is_set():
                status_doc(store, 60, series=True)
                page = store.traces(TraceFilter(endpoint="chat"), limit=20)
                if page.next_cursor:
                    store.traces(TraceFilter(endpoint="chat"), limit=20,
                                 cursor=page.next_cursor)
                histogram_doc(store, "chat", 60)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(s,)) for s in range(4)]
    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    assert status_doc(store, 60)["overall"]["count"] == 4 * per_writer
    ids = [e["id"] for e in events(store.traces(limit=1000))]
    assert len(ids) == 4 * per_writer and len(set(ids)) == len(ids)


def test_add_after_close_and_write_errors_never_raise(make_store, caplog):
    store = make_store()
    store.add(probe(NOW))
    if isinstance(store, SQLiteHistory):
        store._db.execute("DROP TABLE events")  # make the next write fail
        store.add(probe(NOW))
        assert "could not write" in caplog.text
        assert store._cache == {}  # nothing half-applied is kept
    store.close()
    store.add(probe(NOW))  # a probe finishing after shutdown
    store.close()  # idempotent


def test_open_history_follows_settings(tmp_path):
    mem = open_history(Settings(targets=(), history_max_events=10))
    assert isinstance(mem, MemoryHistory) and mem.max_events == 10
    mem.close()
    db = open_history(Settings(targets=(), enable_db=True, db_file=str(tmp_path / "s.db"),
                               history_retention_hours=6))
    assert isinstance(db, SQLiteHistory) and db.retention_seconds == 6 * 3600
    assert status_doc(db, 60)["store"]["backend"] == "sqlite"
    db.close()
    with pytest.raises(ConfigError, match="DB_FILE"):
        open_history(Settings(targets=(), enable_db=True,
                              db_file=str(tmp_path / "no" / "such" / "dir.db")))
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="DB_FILE"):
        open_history(Settings(targets=(), enable_db=True, db_file=str(tmp_path / "junk.db")))
    other = sqlite3.connect(tmp_path / "old.db")
    other.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                        "INSERT INTO meta VALUES ('schema', '0');")
    other.close()
    with pytest.raises(ConfigError, match="schema"):
        open_history(Settings(targets=(), enable_db=True, db_file=str(tmp_path / "old.db")))


def test_stores_raise_their_own_errors_and_main_words_the_config_error(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreOpenError) as err:
        SQLiteHistory(str(junk))
    assert not isinstance(err.value, ConfigError)
    assert err.value.path == str(junk)
    assert err.value.reason == "cannot use as history database: file is not a database"
    with pytest.raises(ConfigError) as cfg:
        open_history(Settings(targets=(), enable_db=True, db_file=str(junk)))
    assert str(cfg.value) == (f"DB_FILE={junk}: cannot use as history database: "
                              "file is not a database")
    old = tmp_path / "old.db"
    other = sqlite3.connect(old)
    other.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                        "INSERT INTO meta VALUES ('schema', '0');")
    other.close()
    with pytest.raises(SchemaVersionError) as schema:
        SQLiteHistory(str(old))
    assert (schema.value.path, schema.value.found, schema.value.expected) == (str(old), "0", "2")
    with pytest.raises(ConfigError) as cfg:
        open_history(Settings(targets=(), enable_db=True, db_file=str(old)))
    assert str(cfg.value) == (f"DB_FILE={old}: history schema 0, this version reads schema 2; "
                              "move the file away")
    # Bounds are the settings' job; a store only refuses what it cannot work with.
    for bad in (lambda: MemoryHistory(max_events=0), lambda: MemoryHistory(retention_hours=0),
                lambda: SQLiteHistory(str(tmp_path / "x.db"), retention_hours=-1)):
        with pytest.raises(ValueError) as exc:
            bad()
        assert not isinstance(exc.value, ConfigError)


def test_queries_return_seconds_and_unix_times(make_store):
    store = make_store()
    store.add(probe(NOW - 30, duration=0.25))
    store.add(probe(NOW - 20, duration=0.5, error_type="timeout", message="slow",
                    http_status=None))
    st = store.status(5, series=True)
    assert (st.window_minutes, st.start, st.end) == (5, (int(NOW // 60) - 4) * 60.0, NOW)
    row = st.endpoints[0]
    assert (row.target, row.endpoint, row.models) == ("openai", "chat", ["gpt-4o-mini"])
    assert row.figures.count == 2 and row.figures.errors == 1
    assert row.figures.success_rate == 0.5
    assert abs(row.figures.p99 - 0.5) <= 0.005 * 0.5 and row.max == 0.5
    assert row.last.ts == NOW - 20 and not row.last.success
    assert row.last_failure.http_status is None and row.last_failure.message == "slow"
    assert sum(p.count for p in row.series.points) == 2 and row.series.step_minutes == 1
    assert st.overall.last_at == NOW - 20 and st.overall.failing_endpoints == 1
    hist = store.latency_histogram("chat", 5)
    assert hist.buckets[-1].le is None and hist.buckets[-1].cumulative == 2
    assert hist.sum == pytest.approx(0.75)
    page = store.traces(limit=1)
    assert isinstance(page.events[0], Event) and page.events[0].duration_seconds == 0.5


def test_memory_freezes_past_buckets_and_thaws_for_late_probes():
    clock = Clock()
    store = MemoryHistory(clock=clock)
    reference = MemoryHistory(clock=Clock(0.0))  # its clock never moves: never freezes
    early = [probe(NOW - 600 + i * 10, duration=0.1 + i / 100) for i in range(60)]
    for r in early:
        clock.t = r.finished_at  # as in real life: probes are added as they finish
        store.add(r)
        reference.add(r)
    clock.t = NOW + 120
    now = probe(clock.t)
    late = probe(NOW - 590, duration=5.0)  # started long ago, reported only now
    for r in (now, late):
        store.add(r)
        reference.add(r)
    frozen = [a for aggs in store._aggs[1].values() for a in aggs.values() if a.sketch is None]
    assert len(frozen) >= 5
    for window in (15, 60):
        assert status_doc(store, window, now=clock.t, series=True) == status_doc(
            reference, window, now=clock.t, series=True)
    assert status_doc(store, 15, now=clock.t)["endpoints"][0]["max_ms"] == 5000.0

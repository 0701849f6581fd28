"""What the history keeps of streaming probes: TTFT percentiles in /status (a second
sketch per aggregate), the timings of every /traces event in every format, and schema 1
SQLite files migrated in place."""

from __future__ import annotations

import csv
import io
import json
import logging
import random
import sqlite3

import pytest

from exporter.history import MemoryHistory, SQLiteHistory
from exporter.result import PHASES, ProbeResult
from exporter.sketch import LatencySketch
from exporter.web.history_json import TRACE_FIELDS
from tests.test_history import (  # noqa: F401 - make_store: the fixture of both stores
    NOW,
    Clock,
    events,
    exact_quantile,
    in_window,
    make_store,
    probe,
    status_doc,
)
from tests.test_status_api import call, make

PHASES_SEEN = {"connect": 0.0011, "server": 0.2502, "first_token": 0.0903, "transfer": 0.0404}


def streamed(n: int, seed: int = 2, span: float = 2 * 3600.0) -> list[ProbeResult]:
    """chat_stream probes (1 in 10 fails before any content: no TTFT) and chat probes."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = NOW - span + span * i / n
        if i % 3 == 0:
            out.append(probe(ts, endpoint="chat", duration=rng.uniform(0.2, 0.6)))
            continue
        ok = rng.random() >= 0.1
        ttft = rng.lognormvariate(-1.2, 0.5) if ok else None
        out.append(probe(ts, endpoint="chat_stream", duration=(ttft or 0.0) + 0.1,
                         error_type="none" if ok else "stream_interrupted",
                         ttft_seconds=ttft, tpot_seconds=0.01 if ok else None))
    return out


@pytest.mark.parametrize("window", [15, 60, 1440])
def test_ttft_percentiles_match_exact_nearest_rank(make_store, window):  # noqa: F811
    results = streamed(3000)
    store = make_store()
    store.add_many(results)
    doc = status_doc(store, window)
    rows = {r["endpoint"]: r for r in doc["endpoints"]}
    ttfts = [r.ttft_seconds for r in in_window(results, window)
             if r.endpoint == "chat_stream" and r.ttft_seconds is not None]
    row = rows["chat_stream"]
    assert row["ttft_count"] == len(ttfts) > 0
    for q, key in ((0.5, "ttft_p50_ms"), (0.95, "ttft_p95_ms"), (0.99, "ttft_p99_ms")):
        exact = exact_quantile(ttfts, q) * 1000
        assert row[key] == pytest.approx(exact, rel=0.005), key
    # Only streaming rows show it; the overall block keeps its shape.
    assert not any(k.startswith("ttft") for k in rows["chat"])
    assert not any(k.startswith("ttft") for k in doc["overall"])


def test_a_streaming_row_without_any_first_token_shows_nulls(make_store):  # noqa: F811
    store = make_store()
    store.add(probe(NOW - 5, endpoint="chat_stream", error_type="timeout", http_status=None))
    row = status_doc(store, 5)["endpoints"][0]
    assert (row["ttft_count"], row["ttft_p50_ms"], row["ttft_p95_ms"], row["ttft_p99_ms"]) == (
        0, None, None, None)


def test_ttft_survives_freezing_and_a_late_probe():
    clock = Clock()
    store = MemoryHistory(clock=clock)
    reference = MemoryHistory(clock=Clock(0.0))  # never freezes
    results = streamed(600, span=1800)
    for r in results:
        clock.t = r.finished_at
        store.add(r)
        reference.add(r)
    clock.t = NOW + 180  # the next add sweeps: buckets that ended 2+ minutes ago freeze
    late = probe(NOW - 1700, endpoint="chat_stream", ttft_seconds=4.0, duration=4.2)
    store.add(late)  # ... and this one thaws its bucket's TTFT sketch again
    reference.add(late)
    frozen = [a for aggs in store._aggs[1].values() for a in aggs.values()
              if a.ttft is None and a.ttft_blob]
    assert frozen
    assert status_doc(store, 60, now=clock.t) == status_doc(reference, 60, now=clock.t)
    row = {r["endpoint"]: r for r in status_doc(store, 60, now=clock.t)["endpoints"]}
    assert row["chat_stream"]["ttft_count"] == 1 + sum(r.ttft_seconds is not None
                                                       for r in results)


def test_sqlite_keeps_ttft_across_a_restart(tmp_path):
    path = str(tmp_path / "h.db")
    results = streamed(900)
    first = SQLiteHistory(path, clock=Clock())
    first.add_many(results)
    before = status_doc(first, 180)
    first.close()
    again = SQLiteHistory(path, clock=Clock())
    try:
        assert status_doc(again, 180) == before
        assert {r["endpoint"]: r for r in before["endpoints"]}["chat_stream"]["ttft_count"] > 0
    finally:
        again.close()


def test_traces_carry_ttft_tpot_and_phases_in_every_format(make_store):  # noqa: F811
    store = make_store()
    store.add(probe(NOW - 20, endpoint="chat"))  # no timings at all
    store.add(probe(NOW - 10, endpoint="chat_stream", ttft_seconds=0.3405, tpot_seconds=0.0123,
                    phases=PHASES_SEEN))
    store.add(probe(NOW - 5, endpoint="models", model="", phases={"connect": 0.0, "tls": 0.0,
                                                                   "server": 0.08}))
    newest, stream, plain = events(store.traces())
    assert (stream["ttft_ms"], stream["tpot_ms"]) == (340.5, 12.3)
    assert [stream[f"phase_{p}_ms"] for p in PHASES] == [1.1, None, 250.2, 90.3, 40.4]
    assert all(plain[k] is None for k in ("ttft_ms", "tpot_ms",
                                          *(f"phase_{p}_ms" for p in PHASES)))
    assert (newest["phase_connect_ms"], newest["phase_tls_ms"], newest["phase_server_ms"],
            newest["phase_transfer_ms"], newest["ttft_ms"]) == (0.0, 0.0, 80.0, None, None)
    assert list(stream) == list(TRACE_FIELDS)

    app = make(store)
    as_json = call(app, "/traces").json()["events"]
    assert as_json == [newest, stream, plain]
    nd = [json.loads(line) for line in call(app, "/traces?format=ndjson").body.splitlines()]
    assert nd == as_json
    rows = list(csv.DictReader(io.StringIO(call(app, "/traces?format=csv").body.decode())))
    assert list(rows[0]) == list(TRACE_FIELDS)
    assert rows[1]["ttft_ms"] == "340.5" and rows[1]["phase_first_token_ms"] == "90.3"
    assert rows[1]["phase_tls_ms"] == "" and rows[2]["ttft_ms"] == ""


# The schema 1 tables, as the code before schema 2 created them (exporter/history/sqlite.py
# at the start of issue 8), verbatim: the migration must take files written by it.
SCHEMA_1 = """
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


def _schema_1_file(path: str) -> None:
    """A history file as the schema 1 code wrote it: two probes, their two aggregate rows
    per resolution, its epoch."""
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_1)
    db.executemany("INSERT INTO meta VALUES (?, ?)", [("schema", "1"),
                                                      ("epoch", "00112233aabbccdd")])
    minute = int((NOW - 30) // 60)
    for i, (dur, ok) in enumerate(((0.25, 1), (0.75, 0))):
        db.execute(
            "INSERT INTO events (ts, target, region, endpoint, model, duration_seconds, "
            "success, error_type, http_status, error_message, request_id, input_tokens, "
            "output_tokens, total_tokens, response_bytes, cost_usd) VALUES "
            "(?, 'openai', 'us-west-1', 'chat', 'gpt-4o-mini', ?, ?, ?, ?, ?, ?, 7, 3, 10, "
            "420, 0.00001)",
            (NOW - 30 + i, dur, ok, "none" if ok else "timeout", 200 if ok else None,
             "" if ok else "slow", f"req_{i}"))
    sketch = LatencySketch()
    sketch.add(0.25)
    sketch.add(0.75)
    for res in (1, 15):
        db.execute(
            "INSERT INTO aggregates VALUES (?, ?, 'openai', 'chat', 'gpt-4o-mini', 'us-west-1', "
            "2, 1, '{\"timeout\": 1}', 14, 6, 20, 840, 0.00002, ?, ?, 0, 'timeout', NULL, "
            "'slow', ?, 'timeout', NULL, 'slow')",
            (res, minute - minute % res, sketch.to_bytes(), NOW - 29, NOW - 29))
    db.commit()
    db.close()


def test_a_schema_1_file_is_migrated_in_place_and_nothing_is_lost(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="exporter.history")
    path = str(tmp_path / "old.db")
    _schema_1_file(path)
    store = SQLiteHistory(path, clock=Clock())
    try:
        assert "migrated from schema 1 to 2" in caplog.text
        old = events(store.traces())
        assert [(e["id"], e["duration_ms"], e["error_type"], e["request_id"]) for e in old] == [
            (2, 750.0, "timeout", "req_1"), (1, 250.0, "none", "req_0")]
        assert all(e["ttft_ms"] is None and e["phase_server_ms"] is None for e in old)
        assert store.epoch == bytes.fromhex("00112233aabbccdd")  # cursors stay valid
        row = status_doc(store, 5)["endpoints"][0]
        assert (row["count"], row["errors_by_type"], row["max_ms"]) == (2, {"timeout": 1}, 750.0)
        # New probes, with timings, go into the same file and the same buckets.
        store.add(probe(NOW - 20, endpoint="chat_stream", ttft_seconds=0.2, phases=PHASES_SEEN))
        store.add(probe(NOW - 10, duration=0.5))
        rows = {r["endpoint"]: r for r in status_doc(store, 5)["endpoints"]}
        assert rows["chat"]["count"] == 3 and rows["chat_stream"]["ttft_p50_ms"] == (
            pytest.approx(200, rel=0.005))
        assert events(store.traces(limit=1))[0]["id"] == 4
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == ("2",)
    reopened = SQLiteHistory(path, clock=Clock())  # schema 2 now: opens as is
    try:
        assert len(reopened) == 4
    finally:
        reopened.close()

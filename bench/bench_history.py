"""Benchmark the history stores: /status over 24 h, and memory held by a day of probes.

    .venv/bin/python bench/bench_history.py                 # defaults, a few minutes
    .venv/bin/python bench/bench_history.py --sqlite-events 100000 --repeat 3   # quick

Figures are medians of --repeat runs. Each store is compared side by side with a naive
baseline that scans the raw events of the window and computes exact nearest-rank
percentiles (what /status would cost without minute sketches).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from wsgiref.util import setup_testing_defaults

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prometheus_client import CollectorRegistry  # noqa: E402

from exporter.history import History, MemoryHistory, SQLiteHistory, TraceFilter  # noqa: E402
from exporter.result import ProbeResult  # noqa: E402
from exporter.web import Router, history_routes, make_app  # noqa: E402
from exporter.web.history_json import event_json  # noqa: E402

DAY = 86_400.0
# (endpoint, model, median latency in seconds): the 10 default probes; the two streams
# also report a time to first token (about 60 % of their duration) and per output token.
ENDPOINTS = (("chat", "gpt-4o-mini", 0.55), ("chat_stream", "gpt-4o-mini", 0.6),
             ("responses", "gpt-4o-mini", 0.7), ("responses_stream", "gpt-4o-mini", 0.75),
             ("embeddings", "text-embedding-3-small", 0.18),
             ("moderations", "omni-moderation-latest", 0.25), ("models", "", 0.09),
             ("files", "", 0.12), ("fine_tunes", "", 0.15), ("batches", "", 0.14))
STREAMS = ("chat_stream", "responses_stream")
ERRORS = ("timeout", "rate_limited", "provider_unavailable", "network")
# --phases: every probe also carries phase timings (connect, tls, server, transfer and,
# for streams, first_token), as a probe timed by phase does: the worst case for storage.
WITH_PHASES = "--phases" in sys.argv


def probes(n: int, span: float, now: float, targets: int, seed: int = 1) -> Iterator[ProbeResult]:
    """n probes evenly over `span` seconds before `now`, round-robin over targets x
    endpoints, ~2 % failures; generated lazily, as the probe loop would hand them over."""
    rng = random.Random(seed)
    keys = [(f"target{t}", e, m, mu) for t in range(targets) for e, m, mu in ENDPOINTS]
    for i in range(n):
        target, endpoint, model, mu = keys[i % len(keys)]
        ok = rng.random() >= 0.02
        err = "none" if ok else rng.choice(ERRORS)
        duration = rng.lognormvariate(0, 0.35) * mu
        stream = endpoint in STREAMS and ok
        phases = {}
        if WITH_PHASES:
            phases = {"connect": 0.002, "tls": 0.012, "server": duration * 0.5,
                      "transfer": duration * 0.1}
            if endpoint in STREAMS:
                phases["first_token"] = duration * 0.38
        yield ProbeResult(
            target=target, region="us-west-1", endpoint=endpoint, model=model,
            started_at=now - span + span * i / n, duration_seconds=duration,
            success=ok, error_type=err, http_status=200 if ok else 503,
            error_message="" if ok else f"upstream said {err} (request {i})",
            request_id=f"req_{i:016x}", input_tokens=9 if model else 0,
            output_tokens=9 if model else 0, total_tokens=18 if model else 0,
            response_bytes=rng.randint(300, 2000), cost_usd=2e-6 if model else 0.0,
            ttft_seconds=duration * 0.6 if stream else None,
            tpot_seconds=duration * 0.05 if stream else None, phases=phases)


def batched(items: Iterable[ProbeResult], size: int) -> Iterator[list[ProbeResult]]:
    batch: list[ProbeResult] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: SQLite page cache, a pooled read connection
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def exact_summary(rows: Iterable[tuple[str, str, float, int]]) -> dict:
    """The naive /status: group raw events, sort, nearest-rank percentiles."""
    groups: dict[tuple[str, str], list] = {}
    for target, endpoint, duration, success in rows:
        g = groups.get((target, endpoint))
        if g is None:
            g = groups[(target, endpoint)] = [[], 0]
        g[0].append(duration)
        g[1] += success
    out = {}
    for key, (durations, ok) in groups.items():
        durations.sort()
        n = len(durations)
        out[key] = (n, ok / n, *(durations[max(1, math.ceil(q * n)) - 1]
                                 for q in (0.5, 0.95, 0.99)))
    return out


def wsgi_get(app: Router, path: str) -> bytes:
    path, _, query = path.partition("?")
    environ = {"PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
    assert status[0].startswith("200"), status
    return body


def bench_store(label: str, store: History, baseline: Callable[[], object], repeat: int,
                baseline_repeat: int, now: float) -> list[tuple[str, float, float | None]]:
    app = make_app(CollectorRegistry(), history_routes(store, {}))
    gc.collect()
    status_ms = median_ms(lambda: store.status(1440, now=now), repeat)
    base_ms = median_ms(baseline, baseline_repeat)
    # The page's request goes through the app with series and JSON encoding; use the
    # real clock there, so the window must sit at "now" (the data does).
    http_ms = median_ms(lambda: wsgi_get(app, "/status?window=1440&series=1"), repeat)
    h1_ms = median_ms(lambda: store.status(60, now=now), repeat)
    # The events as the route sends them (the store returns Event tuples; the dicts were
    # built inside traces() before the HTTP layer took that over).
    traces_ms = median_ms(lambda: [event_json(e) for e in store.traces(limit=1000).events],
                          repeat)
    return [(f"{label}: status(window=1440)", status_ms, base_ms),
            (f"{label}: GET /status?window=1440&series=1", http_ms, None),
            (f"{label}: status(window=60)", h1_ms, None),
            (f"{label}: traces(limit=1000), newest page as dicts", traces_ms, None)]


def run_sqlite(n: int, targets: int, repeat: int, now: float) -> list:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.db")
        # Bulk fill with synchronous=OFF (speed of set-up only); reads do not depend on it.
        store = SQLiteHistory(path, retention_hours=24, clock=lambda: now, synchronous="OFF")
        t0 = time.perf_counter()
        for batch in batched(probes(n, DAY, now, targets), 10_000):
            store.add_many(batch)
        fill = time.perf_counter() - t0
        size_mb = os.path.getsize(path) / 1e6
        aggs = store._db.execute("SELECT count(*) FROM aggregates").fetchone()[0]
        print(f"sqlite: {n} events in {fill:.1f} s ({n / fill:,.0f}/s bulk), "
              f"{aggs} aggregate rows, file {size_mb:.0f} MB", flush=True)

        def naive() -> object:
            with store._reader() as conn:
                cur = conn.execute("SELECT target, endpoint, duration_seconds, success "
                                   "FROM events WHERE ts >= ?", (now - DAY,))
                return exact_summary(cur)

        # One add with the default durability, for the record.
        durable = SQLiteHistory(os.path.join(tmp, "durable.db"), clock=lambda: now)
        sample = list(probes(200, 200, now, targets, seed=2))
        t0 = time.perf_counter()
        for r in sample:
            durable.add(r)
        add_ms = (time.perf_counter() - t0) / len(sample) * 1000.0
        durable.close()
        rows = bench_store(f"sqlite {n:,}", store, naive, repeat, max(1, repeat // 2), now)
        rows.append(("sqlite: add() one probe, synchronous=FULL", add_ms, None))
        store.close()
        return rows


def run_memory(n: int, targets: int, repeat: int, now: float) -> list:
    # The clock follows the probes during the fill, as if the day had really passed, so
    # past buckets get frozen the way they would be; then it stays at `now`.
    clock = [now - DAY]
    store = MemoryHistory(max_events=n, retention_hours=24, clock=lambda: clock[0])
    t0 = time.perf_counter()
    for r in probes(n, DAY, now, targets):
        clock[0] = r.finished_at
        store.add(r)
    clock[0] = now
    print(f"memory: {n} events in {time.perf_counter() - t0:.1f} s (one add() each)",
          flush=True)

    # The baseline scans plain tuples (the cheapest raw form), not the store's packed
    # events, so it is not slowed down by decoding.
    plain = [(ev.ts, ev.target, ev.endpoint, ev.duration_seconds, int(ev.success))
             for ev in store._query_events(TraceFilter(), None, n)]

    def naive() -> object:
        return exact_summary((t, e, d, ok) for ts, t, e, d, ok in plain if ts >= now - DAY)

    rows = bench_store(f"memory {n:,}", store, naive, repeat, repeat, now)
    store.close()
    return rows


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rss_child(backend: str, seconds: int, targets: int) -> None:
    """In a fresh interpreter: RSS growth after a day of probes at 1/s. The store's clock
    follows the probes, as if the day had really passed (pruning and freezing run)."""
    now = time.time()
    clock = [now - seconds]
    gc.collect()
    before = rss_kb()
    with tempfile.TemporaryDirectory() as tmp:
        if backend == "memory":
            store: History = MemoryHistory(max_events=100_000, clock=lambda: clock[0])
        else:
            store = SQLiteHistory(os.path.join(tmp, "rss.db"), clock=lambda: clock[0],
                                  synchronous="OFF")
        for r in probes(seconds, seconds, now, targets):
            clock[0] = r.finished_at
            store.add(r)  # one at a time, as the probe loop does
        store.status(1440, now=now, series=True)
        gc.collect()
        after = rss_kb()
        store.close()
    print(f"{(after - before) / 1024:.1f}")


def run_rss(seconds: int, targets: int) -> list:
    rows = []
    for backend in ("memory", "sqlite"):
        out = subprocess.run([sys.executable, __file__, "--rss-child", backend,
                              "--rss-seconds", str(seconds), "--targets", str(targets),
                              *(["--phases"] if WITH_PHASES else [])],
                             capture_output=True, text=True, check=True)
        mb = float(out.stdout.split()[-1])
        rows.append((f"{backend}: RSS growth after {seconds:,} probes (24 h at 1/s)", mb))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sqlite-events", type=int, default=1_000_000,
                    help="events in the SQLite store, spread over 24 h (default 1000000)")
    ap.add_argument("--memory-events", type=int, default=100_000,
                    help="events in the memory store, spread over 24 h (default 100000)")
    ap.add_argument("--targets", type=int, default=2,
                    help="targets; each has the 10 default endpoints (default 2)")
    ap.add_argument("--phases", action="store_true",
                    help="every probe carries phase timings too (read from sys.argv, so "
                         "the RSS child sees it)")
    ap.add_argument("--repeat", type=int, default=7, help="runs per median (default 7)")
    ap.add_argument("--rss-seconds", type=int, default=86_400,
                    help="probes for the RSS measurement, 1/s (default 86400 = 24 h)")
    ap.add_argument("--skip", action="append", default=[],
                    choices=["sqlite", "memory", "rss"], help="skip a section")
    ap.add_argument("--rss-child", choices=["memory", "sqlite"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.rss_seconds, args.targets)
        return

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"{args.targets * len(ENDPOINTS)} target/endpoint keys", flush=True)
    now = time.time()
    rows: list = []
    if "memory" not in args.skip:
        rows += run_memory(args.memory_events, args.targets, args.repeat, now)
    if "sqlite" not in args.skip:
        rows += run_sqlite(args.sqlite_events, args.targets, args.repeat, now)
    print()
    print(f"{'query':<58} {'median ms':>10} {'naive ms':>10} {'speed-up':>9}")
    for label, ms, base in rows:
        extra = f"{base:>10.1f} {base / ms:>8.1f}x" if base else ""
        print(f"{label:<58} {ms:>10.2f} {extra}")
    if "rss" not in args.skip:
        print()
        for label, mb in run_rss(args.rss_seconds, args.targets):
            print(f"{label:<58} {mb:>8.1f} MB")


if __name__ == "__main__":
    main()

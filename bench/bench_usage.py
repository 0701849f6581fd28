"""What the usage poller costs for a large organisation: counting one poll against the
high-water marks, the marks' memory, and the scrape of the usage families.

Synthetic readings (no HTTP): a lookback of 60 minutes (61 one-minute buckets) of
completions for D (project, model) label sets, every row present in every bucket (the
worst case); each poll after the first changes the current minute only. Baselines in the
same run, rounds interleaved:

* counting: ``KindMarks.apply`` vs a loop that only reads every value of the reading once
  (the floor of looking at the data at all);
* scrape: ``UsageMetrics.collect`` + text exposition vs the same samples from a static
  collector of pre-built families (what prometheus_client's rendering costs anyway).

    .venv/bin/python bench/bench_usage.py [--dims 1000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.core import CounterMetricFamily  # noqa: E402

from exporter.usage.kinds import KINDS  # noqa: E402
from exporter.usage.marks import KindMarks, Reading  # noqa: E402
from exporter.usage.metrics import UsageMetrics  # noqa: E402

T0 = 1_800_000_000
BUCKETS = 61
FIELDS = len(KINDS["completions"].fields)


def reading(dims: int, now_minute: int, grow: int) -> Reading:
    """61 buckets x `dims` rows; the newest bucket's values grow by `grow` per poll."""
    rows = {}
    for b in range(BUCKETS):
        start = (now_minute - BUCKETS + 1 + b) * 60
        bump = grow if b == BUCKETS - 1 else 0
        rows[start] = {(f"proj_{d % 50}", f"model-{d}"): tuple(
            float(100 + d + i + bump) for i in range(FIELDS)) for d in range(dims)}
    return Reading((now_minute - BUCKETS + 1) * 60, rows)


def touch(r: Reading) -> float:
    total = 0.0
    for rows in r.buckets.values():
        for values in rows.values():
            for v in values:
                total += v or 0.0
    return total


class Static:
    """The floor of the scrape: the same samples as pre-built families."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):  # noqa: ANN201 - prometheus_client's protocol
        return self.families


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    minute = T0 // 60

    # Counting, steady state: marks exist, the current minute grows.
    marks = KindMarks(FIELDS)
    marks.apply(reading(args.dims, minute, 0), baseline=True)
    count_ms, floor_ms = [], []
    for i in range(1, args.rounds + 1):
        r = reading(args.dims, minute, i)
        t = time.perf_counter()
        touch(r)
        floor_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        out = marks.apply(r)
        count_ms.append((time.perf_counter() - t) * 1000)
        assert len(out.increments) == args.dims * FIELDS
    c, f = statistics.median(count_ms), statistics.median(floor_ms)
    print(f"count one poll, {args.dims} label sets x {BUCKETS} buckets: "
          f"apply {c:.1f} ms, read-only floor {f:.1f} ms, ratio {c / f:.2f}")

    # Memory of the marks.
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    fresh = KindMarks(FIELDS)
    fresh.apply(reading(args.dims, minute, 0), baseline=True)
    after = tracemalloc.take_snapshot()
    size = sum(s.size_diff for s in after.compare_to(before, "filename"))
    tracemalloc.stop()
    print(f"marks: {len(fresh)} rows, {size / 1e6:.1f} MB ({size / len(fresh):.0f} B/row)")

    # Scrape of the usage families with `dims` label sets of completions.
    metrics = UsageMetrics(["completions"], ["project_id", "model"], ["completions"])
    for d in range(args.dims):
        dims = (f"proj_{d % 50}", f"model-{d}")
        for f_ in KINDS["completions"].fields:
            metrics.ensure((f_.family, "completions", dims, f_.token_type))
    metrics.begin_round()
    live = CollectorRegistry()
    live.register(metrics)
    static = CollectorRegistry()
    static.register(Static([f for f in metrics.collect()
                            if isinstance(f, CounterMetricFamily)] + []))
    live_ms, static_ms = [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        body = generate_latest(static)
        static_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        body = generate_latest(live)
        live_ms.append((time.perf_counter() - t) * 1000)
    lv, st = statistics.median(live_ms), statistics.median(static_ms)
    print(f"scrape {metrics.series_count()} usage series ({len(body)} bytes): live {lv:.1f} ms, "
          f"static families {st:.1f} ms, ratio {lv / st:.2f}")
    round_against_the_fake(args.rounds)


def round_against_the_fake(rounds: int) -> None:
    """One poll round (6 kinds, costs) on the fake upstream vs the same GETs, bare."""
    import requests

    from exporter.fake import FakeUpstream
    from exporter.usage.poller import META_ENDPOINTS, PollerConfig, UsagePoller
    from exporter.usage.store import MemoryMarks

    with FakeUpstream() as fake:
        cfg = PollerConfig(fake.base_url, "sk-admin-bench")
        poller = UsagePoller(cfg, UsageMetrics(cfg.kinds, cfg.group_by,
                                               (*cfg.kinds, *META_ENDPOINTS)), MemoryMarks())
        poller.poll_once()  # the baseline round, and projects (read hourly after)
        urls = [(f"/organization/usage/{k}", [("start_time", str(int(time.time()) // 60 * 60
                                                                   - 3600)),
                                               ("bucket_width", "1m"), ("limit", "61"),
                                               ("group_by[]", "project_id"),
                                               ("group_by[]", "model")]) for k in cfg.kinds]
        urls.append(("/organization/costs", [("start_time", str(int(time.time()) - 86400 * 20)),
                                             ("bucket_width", "1d"), ("limit", "31")]))
        session = requests.Session()
        poll_ms, bare_ms = [], []
        for _ in range(rounds):
            t = time.perf_counter()
            for path, params in urls:
                session.get(fake.base_url + path, params=params,
                            headers={"Authorization": "Bearer sk-admin-bench"}).json()
            bare_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            poller.poll_once()
            poll_ms.append((time.perf_counter() - t) * 1000)
        p, b = statistics.median(poll_ms), statistics.median(bare_ms)
        print(f"poll round on the fake (6 kinds + costs): {p:.1f} ms, the same GETs bare "
              f"{b:.1f} ms, ratio {p / b:.2f}")


if __name__ == "__main__":
    main()

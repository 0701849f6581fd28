"""Probe overhead: measured latency minus the delay the fake upstream injects.

Part ``single``: one prober, probes one after another. Baseline, side by side: a bare
requests.Session call to the same URL with the same injected delay. The difference
between the two is what the prober adds (building the request, reading the body under a
deadline, JSON parsing, classification, redaction).

Part ``fleet`` (issue 8): 10 targets x 5 endpoints in ``all`` mode through ``ProbeLoop``
(starts spread by the scheduler's per-job offsets; before the monotonic scheduler, every
probe of a round was released together), the fake upstream in its own process (so
the CPU time measured is the exporter's alone), in alternating blocks: the prober with
``fresh`` and with ``reuse`` connections, each with the sinks main() wires (metrics,
history in memory or SQLite, the probe log), and an ``http.client`` floor released the
same way, on a new connection per request and on a warm one. Per block: latency error
(duration - injected delay), the ``server`` phase - injected delay, and CPU-ms per probe
(process CPU time / probes).

    .venv/bin/python bench/bench_probe.py [--part single|fleet|all] [--n 200]
        [--delay-ms 200] [--block 6] [--cycles 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402

from exporter import logs  # noqa: E402
from exporter.catalogue import CATALOGUE  # noqa: E402
from exporter.fake import FakeUpstream  # noqa: E402
from exporter.history import MemoryHistory, SQLiteHistory  # noqa: E402
from exporter.metrics import ExporterMetrics  # noqa: E402
from exporter.prober import Prober  # noqa: E402
from exporter.result import ProbeResult  # noqa: E402
from exporter.scheduler import ProbeLoop  # noqa: E402
from exporter.settings import Settings, TargetSettings, shipped_prices  # noqa: E402

FLEET_TARGETS = 10
FLEET_ENDPOINTS = ("chat", "responses", "embeddings", "moderations", "models")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def single(args: argparse.Namespace) -> None:
    delay = args.delay_ms / 1000
    with FakeUpstream(seed=1, rpm_limit=10**9, tpm_limit=10**12) as fake:
        fake.set_fault("*", "delay", delay_ms=args.delay_ms)
        target = TargetSettings(name="bench", provider="openai", base_url=fake.base_url,
                                api_key="sk-bench", models={"chat": "gpt-4o-mini"},
                                probes=("chat", "models"))
        prober = Prober(target, timeout_seconds=10, prices=shipped_prices())
        session = requests.Session()
        print(f"n={args.n} per row, injected delay {args.delay_ms:g} ms; overhead in ms")
        print(f"{'endpoint':10} {'path':8} {'median':>8} {'p95':>8}")
        for endpoint, method, url, body in (
            ("chat", "POST", fake.base_url + "/chat/completions",
             b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"ping"}],'
             b'"max_completion_tokens":16}'),
            ("models", "GET", fake.base_url + "/models", None),
        ):
            ours, bare = [], []
            for _ in range(args.n):  # interleaved, so machine noise hits both alike
                r = prober.run(endpoint)
                assert r.success, r
                ours.append((r.duration_seconds - delay) * 1000)
                t0 = time.perf_counter()
                resp = session.request(method, url, data=body, headers={
                    "Authorization": "Bearer sk-bench", "Content-Type": "application/json"})
                resp.json()
                bare.append((time.perf_counter() - t0 - delay) * 1000)
            for name, xs in (("prober", ours), ("bare", bare)):
                print(f"{endpoint:10} {name:8} {statistics.median(xs):8.2f} {pct(xs, .95):8.2f}")
        prober.close()



# -- fleet: 10 targets x 5 endpoints through ProbeLoop -----------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_fake(delay_ms: float) -> tuple[subprocess.Popen, int]:
    """The fake upstream in its own process, every answer delayed by delay_ms."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter.fake", "--port", str(port), "--latency-ms",
         str(delay_ms), "--rpm-limit", str(10**9), "--tpm-limit", str(10**12)],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the fake upstream did not start")


# This script also runs from a tree before issue 8's connection policy (a "before" run,
# bench/README.md): there every probe reuses its connection and has no phases.
BEFORE_POLICY = "connection" not in TargetSettings.__dataclass_fields__


def _targets(base_url: str, connection: str) -> list[TargetSettings]:
    policy = {} if BEFORE_POLICY else {"connection": connection}
    return [TargetSettings(name=f"t{i}", provider="openai", base_url=base_url,
                           api_key="sk-bench", models={"chat": "gpt-4o-mini",
                                                       "embeddings": "text-embedding-3-small",
                                                       "moderation": "omni-moderation-latest"},
                           probes=FLEET_ENDPOINTS, **policy)
            for i in range(FLEET_TARGETS)]


class Block:
    """What one block of one configuration measured."""

    def __init__(self) -> None:
        self.errors_ms: list[float] = []  # duration - injected delay, warm-up dropped
        self.server_ms: list[float] = []  # server phase - injected delay
        self.cpu_s = 0.0
        self.probes = 0


def _loop_block(base_url: str, connection: str, store: str, seconds: float,
                delay: float) -> Block:
    """ProbeLoop with main()'s sinks for `seconds`; all mode, 1 s interval."""
    targets = _targets(base_url, connection)
    settings = Settings(targets=tuple(targets), interval_seconds=1.0, timeout_seconds=5.0,
                        mode="all", max_workers=64, enable_db=store == "sqlite")
    tmp = tempfile.TemporaryDirectory()
    history = (SQLiteHistory(os.path.join(tmp.name, "bench.db")) if store == "sqlite"
               else MemoryHistory())
    metrics = ExporterMetrics()
    metrics.configure(settings)
    results: list[ProbeResult] = []
    probers = [Prober(t, timeout_seconds=5.0, prices=shipped_prices()) for t in targets]
    loop = ProbeLoop(settings, probers,
                     [metrics.observe, history.add, logs.log_probe, results.append])
    cpu0 = time.process_time()
    loop.start()
    time.sleep(seconds)
    loop.stop()
    time.sleep(delay + 0.5)  # probes in flight finish
    block = Block()
    block.cpu_s, block.probes = time.process_time() - cpu0, len(results)
    history.close()
    tmp.cleanup()
    seen: set[tuple[str, str]] = set()
    for r in results:
        assert r.success, r
        key = (r.target, r.endpoint)
        if key not in seen:  # the first round warms the pool (reuse): dropped for all
            seen.add(key)
            continue
        block.errors_ms.append((r.duration_seconds - delay) * 1000)
        if "server" in r.phases:
            block.server_ms.append((r.phases["server"] - delay) * 1000)
    return block


def _floor_block(base_url: str, warm: bool, seconds: float, delay: float) -> Block:
    """http.client, the same requests released together once a second: a new
    connection per request, or one warm connection per target x endpoint."""
    host, port = "127.0.0.1", int(base_url.split(":")[2].split("/")[0])
    prober = Prober(_targets(base_url, "fresh")[0], timeout_seconds=5.0)
    calls = []
    for endpoint in FLEET_ENDPOINTS:
        probe = CATALOGUE[endpoint]
        url, _ = prober.url_for(probe)
        body = json.dumps(probe.body(prober.target.model_for(endpoint))).encode() \
            if probe.body else None
        headers = prober.headers_for(probe)
        if body is not None:
            headers["Content-Type"] = "application/json"
        calls.append((probe.method, url.split(str(port), 1)[1], body, headers))
    slots = [(i, call) for i in range(FLEET_TARGETS) for call in calls]
    conns: dict[int, http.client.HTTPConnection] = {}

    def one(n: int, call: tuple) -> float:
        method, path, body, headers = call
        t0 = time.perf_counter()
        conn = conns.get(n) if warm else None
        if conn is None:
            conn = http.client.HTTPConnection(host, port, timeout=5)
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        elapsed = time.perf_counter() - t0
        if warm:
            conns[n] = conn
        else:
            conn.close()
        return elapsed

    block = Block()
    pool = ThreadPoolExecutor(64)
    cpu0 = time.process_time()
    end = time.monotonic() + seconds
    first = True
    while time.monotonic() < end:
        tick = time.monotonic()
        times = list(pool.map(lambda s: one(*s), [(n, c) for n, (_, c) in enumerate(slots)]))
        block.probes += len(times)
        if not first:
            block.errors_ms.extend((t - delay) * 1000 for t in times)
        first = False
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    block.cpu_s = time.process_time() - cpu0
    pool.shutdown()
    for conn in conns.values():
        conn.close()
    return block


CONFIGS = (("prober fresh, memory", "loop", "fresh", "memory"),
           ("prober reuse, memory", "loop", "reuse", "memory"),
           ("prober fresh, SQLite", "loop", "fresh", "sqlite"),
           ("prober reuse, SQLite", "loop", "reuse", "sqlite"),
           ("http.client new conn", "floor", "fresh", ""),
           ("http.client warm conn", "floor", "reuse", ""))


def fleet(args: argparse.Namespace) -> None:
    delay = args.delay_ms / 1000
    configs = [c for c in CONFIGS if not (BEFORE_POLICY and c[2] == "fresh" and c[1] == "loop")]
    # The probe log as main() writes it, to /dev/null: its cost counts, its lines do not.
    stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # noqa: SIM115
    try:
        logs.setup("INFO", "json")
    finally:
        sys.stdout = stdout
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    proc, port = _start_fake(args.delay_ms)
    base_url = f"http://127.0.0.1:{port}/v1"
    blocks: dict[str, list[Block]] = {name: [] for name, *_ in configs}
    try:
        for cycle in range(args.cycles):  # alternating, so machine noise hits all alike
            for name, kind, policy, store in configs:
                if kind == "loop":
                    b = _loop_block(base_url, policy, store, args.block, delay)
                else:
                    b = _floor_block(base_url, policy == "reuse", args.block, delay)
                blocks[name].append(b)
                print(f"cycle {cycle + 1} {name:22} n={len(b.errors_ms):4} "
                      f"median {statistics.median(b.errors_ms):6.2f} "
                      f"p95 {pct(b.errors_ms, .95):6.2f} ms, "
                      f"{1000 * b.cpu_s / b.probes:5.2f} CPU-ms/probe", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"\n{FLEET_TARGETS} targets x {len(FLEET_ENDPOINTS)} endpoints, all mode, "
          f"injected {args.delay_ms:g} ms, {args.cycles} cycles of {args.block:g} s; "
          "medians of the cycles' figures, ms")
    print(f"{'client':22} {'probes':>6} {'err p50':>8} {'err p95':>8} {'server-inj':>10} "
          f"{'CPU-ms/probe':>12}")
    for name, *_ in configs:
        bs = blocks[name]
        p50 = statistics.median(statistics.median(b.errors_ms) for b in bs)
        p95 = statistics.median(pct(b.errors_ms, .95) for b in bs)
        server = (f"{statistics.median(statistics.median(b.server_ms) for b in bs):10.2f}"
                  if bs[0].server_ms else f"{'-':>10}")
        cpu = statistics.median(1000 * b.cpu_s / b.probes for b in bs)
        print(f"{name:22} {sum(len(b.errors_ms) for b in bs):6} {p50:8.2f} {p95:8.2f} "
              f"{server} {cpu:12.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("single", "fleet", "all"), default="all")
    ap.add_argument("--n", type=int, default=200, help="single: probes per endpoint (200)")
    ap.add_argument("--delay-ms", type=float, default=200.0)
    ap.add_argument("--block", type=float, default=6.0, help="fleet: seconds per block (6)")
    ap.add_argument("--cycles", type=int, default=3, help="fleet: cycles of blocks (3)")
    args = ap.parse_args()
    if args.part in ("single", "all"):
        single(args)
    if args.part in ("fleet", "all"):
        fleet(args)


if __name__ == "__main__":
    main()

"""Probe overhead: measured latency minus the delay the fake upstream injects.

Baseline, side by side: a bare requests.Session call to the same URL with the same
injected delay. The difference between the two is what the prober adds (building the
request, reading the body under a deadline, JSON parsing, classification, redaction).

    .venv/bin/python bench/bench_probe.py [--n 200] [--delay-ms 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402

from exporter.fake import FakeUpstream  # noqa: E402
from exporter.prober import Prober  # noqa: E402
from exporter.settings import TargetSettings, shipped_prices  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="probes per endpoint (default 200)")
    ap.add_argument("--delay-ms", type=float, default=200.0)
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()

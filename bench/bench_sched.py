"""Isolation: one endpoint hanging on every target, and the ticks the other endpoints keep.

    .venv/bin/python bench/bench_sched.py [--seconds 60] [--interval 0.5] [--timeout 2]

10 targets x 5 endpoints (chat, embeddings, moderations, models, files), mode ``all``;
``chat`` hangs on every target (the fake's ``hang`` fault: no answer until the probe's
timeout). Two probe loops run side by side, each against its own fake upstream, for the
same span: this branch's (exporter/scheduler.py) and the baseline, the APScheduler loop of
``main`` (``git show main:exporter/scheduler.py``, PROBE_MAX_WORKERS 8; it needs
``apscheduler`` importable, else only this branch's runs). For every healthy job (40 per
loop) the figure is ticks kept = probes started in the span / ticks due in it (span /
interval); medians and the worst job per loop, and the log lines about skipped ticks
(this branch's throttled warning; APScheduler's "maximum number of running instances
reached" per tick), and this branch's still_running skips per endpoint. A job's count
can be off by one at the edges of the span (started_at is taken inside the probe).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.fake import FakeUpstream  # noqa: E402
from exporter.prober import Prober  # noqa: E402
from exporter.result import ProbeResult  # noqa: E402
from exporter.scheduler import ProbeLoop  # noqa: E402
from exporter.settings import Settings, TargetSettings  # noqa: E402

ENDPOINTS = ("chat", "embeddings", "moderations", "models", "files")
HANGING = "chat"
TARGETS = 10
MODELS = {"chat": "gpt-4o-mini", "embeddings": "text-embedding-3-small",
          "moderation": "omni-moderation-latest"}


def old_loop_class() -> Any:
    """main's ProbeLoop (APScheduler), or None when it cannot be loaded here."""
    try:
        import apscheduler  # noqa: F401
        source = subprocess.run(["git", "show", "main:exporter/scheduler.py"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout
    except (ImportError, subprocess.CalledProcessError, OSError) as exc:
        print(f"baseline skipped: {exc}")
        return None
    path = Path(tempfile.mkdtemp()) / "old_scheduler.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("exporter._old_scheduler", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # relative imports resolve in the exporter package
    return module.ProbeLoop


class Count:
    """Sink: probes started in the measured span, per (target, endpoint)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.window = (float("inf"), float("inf"))
        self.started: Counter[tuple[str, str]] = Counter()
        self.skipped: Counter[str] = Counter()  # this branch's still_running skips in the span

    def skip(self, target: str, endpoint: str, reason: str) -> None:
        if self.window[0] <= time.time() < self.window[1]:
            with self.lock:
                self.skipped[endpoint] += 1

    def __call__(self, r: ProbeResult) -> None:
        if self.window[0] <= r.started_at < self.window[1]:
            with self.lock:
                self.started[(r.target, r.endpoint)] += 1


class LogCount(logging.Handler):
    """WARNING lines per logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines[record.name.split(".")[0] if record.name.startswith("apscheduler")
                   else record.name] += 1


def build(loop_class: Any, fake: FakeUpstream, interval: float, timeout: float,
          sink: Count) -> Any:
    targets = tuple(TargetSettings(name=f"t{i}", provider="openai", base_url=fake.base_url,
                                   api_key="sk-bench", models=dict(MODELS), probes=ENDPOINTS)
                    for i in range(TARGETS))
    settings = Settings(targets=targets, interval_seconds=interval, timeout_seconds=timeout,
                        mode="all", max_workers=8)
    probers = [Prober(t, timeout_seconds=timeout) for t in targets]
    if loop_class is ProbeLoop:
        return loop_class(settings, probers, [sink], on_skip=sink.skip)
    return loop_class(settings, probers, [sink])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--timeout", type=float, default=2.0)
    args = ap.parse_args()
    handler = LogCount()
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    for name in ("exporter", "apscheduler"):
        logging.getLogger(name).propagate = True
    old = old_loop_class()
    loops = {"this branch": ProbeLoop} | ({"main (APScheduler)": old} if old else {})
    fakes = {name: FakeUpstream(rpm_limit=10_000_000, tpm_limit=10_000_000_000).start()
             for name in loops}
    sinks = {name: Count() for name in loops}
    running = {}
    for name, cls in loops.items():
        fakes[name].set_fault(HANGING, "hang")
        running[name] = build(cls, fakes[name], args.interval, args.timeout, sinks[name])
    warmup = 2 * args.interval + args.timeout  # every job past its first tick
    print(f"{TARGETS} targets x {len(ENDPOINTS)} endpoints, mode all, {HANGING} hanging "
          f"on every target; interval {args.interval:g} s, timeout {args.timeout:g} s, "
          f"{args.seconds:g} s measured after {warmup:g} s; Python {sys.version.split()[0]}")
    for loop in running.values():
        loop.start()
    time.sleep(warmup)
    t0 = time.time()
    for sink in sinks.values():
        sink.window = (t0, t0 + args.seconds)
    lines_before = Counter(handler.lines)
    time.sleep(args.seconds + 0.2)
    lines = handler.lines - lines_before
    due = args.seconds / args.interval
    for name in running:
        started = sinks[name].started
        kept = [min(1.0, started[(f"t{i}", e)] / due)
                for i in range(TARGETS) for e in ENDPOINTS if e != HANGING]
        per_endpoint = {e: statistics.median(min(1.0, started[(f"t{i}", e)] / due)
                                             for i in range(TARGETS))
                        for e in ENDPOINTS if e != HANGING}
        logger = "exporter.scheduler" if name == "this branch" else "apscheduler"
        print(f"{name}: healthy jobs' ticks kept median {100 * statistics.median(kept):.1f} %,"
              f" worst job {100 * min(kept):.1f} %, mean {100 * statistics.mean(kept):.1f} % "
              f"(of {due:g} due each); per endpoint (median over targets): "
              + ", ".join(f"{e} {100 * v:.1f} %" for e, v in per_endpoint.items())
              + f"; skip log lines in the span: {lines[logger]}"
              + (f"; still_running skips counted: {dict(sinks[name].skipped)}"
                 if name == "this branch" else ""))
    stops = []
    for loop in running.values():
        th = threading.Thread(target=loop.stop)
        th.start()
        stops.append(th)
    for th in stops:
        th.join()
    for fake in fakes.values():
        fake.stop()


if __name__ == "__main__":
    main()

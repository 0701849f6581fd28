"""The probe loop: all mode isolates a hanging endpoint, roundrobin cycles, no overlap."""

from __future__ import annotations

import threading
import time
from collections import Counter

from exporter.prober import Prober
from exporter.result import ProbeResult
from exporter.scheduler import ProbeLoop
from exporter.settings import Settings
from tests.conftest import make_target


class Collect:
    def __init__(self) -> None:
        self.results: list[ProbeResult] = []
        self.lock = threading.Lock()

    def __call__(self, r: ProbeResult) -> None:
        with self.lock:
            self.results.append(r)

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(list(self.results)):
                    return True
            time.sleep(0.02)
        return False


def loop_for(fake, mode: str, interval: float, timeout: float, probes, sinks, workers=8):
    target = make_target(fake.base_url, probes=tuple(probes))
    settings = Settings(targets=(target,), interval_seconds=interval, timeout_seconds=timeout,
                        mode=mode, max_workers=workers)
    return ProbeLoop(settings, [Prober(target, timeout_seconds=timeout)], sinks)


def test_all_mode_hanging_endpoint_does_not_delay_others(fake):
    fake.set_fault("chat", "hang")
    sink = Collect()
    loop = loop_for(fake, "all", interval=0.5, timeout=3.0,
                    probes=("chat", "embeddings", "models", "files"), sinks=[sink])
    loop.start()
    try:
        # within 2 s (less than the 3 s timeout of the hanging chat probe) the other
        # endpoints have been probed several times each
        ok = sink.wait_for(lambda rs: all(
            Counter(r.endpoint for r in rs)[e] >= 3 for e in ("embeddings", "models", "files")),
            timeout=2.5)
        with sink.lock:
            seen = Counter(r.endpoint for r in sink.results)
        assert ok, seen
        assert seen["chat"] == 0  # still hanging, and never started twice (no overlap)
        assert sink.wait_for(lambda rs: any(r.endpoint == "chat" for r in rs), timeout=3.0)
        with sink.lock:
            chat = [r for r in sink.results if r.endpoint == "chat"]
        assert chat[0].error_type == "timeout"
    finally:
        loop.stop()
    hung = [r for r in fake.requests if r["endpoint"] == "chat"]
    # ticks every 0.5 s during a 3 s hang: without max_instances=1 there would be ~6
    assert len(hung) <= 2


def test_roundrobin_cycles_through_endpoints(fake):
    sink = Collect()
    loop = loop_for(fake, "roundrobin", interval=0.1, timeout=2.0,
                    probes=("models", "files", "batches"), sinks=[sink])
    loop.start()
    try:
        assert sink.wait_for(lambda rs: len(rs) >= 6, timeout=5)
    finally:
        loop.stop()
    with sink.lock:
        order = [r.endpoint for r in sink.results[:6]]
    assert order == ["models", "files", "batches"] * 2


def test_failing_sink_does_not_stop_the_loop(fake):
    sink = Collect()

    def broken(_r):
        raise RuntimeError("sink bug")

    loop = loop_for(fake, "all", interval=0.1, timeout=2.0, probes=("models",),
                    sinks=[broken, sink])
    loop.start()
    try:
        assert sink.wait_for(lambda rs: len(rs) >= 3, timeout=5)
    finally:
        loop.stop()

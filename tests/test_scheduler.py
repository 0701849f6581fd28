"""The probe loop: isolation (a hanging endpoint or target costs no other a tick), no
overlap, still_running skips counted and throttled, stable spread offsets, the monotonic
schedule under a stepped wall clock, the drain at stop; roundrobin cycles."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from exporter.prober import Prober
from exporter.result import ProbeResult
from exporter.scheduler import ProbeLoop
from exporter.settings import Settings
from tests.conftest import Clock, make_target


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


# -- the schedule on an injected clock, with probers that hang on demand --------------------

class FakeProber:
    """A prober that answers at once, or blocks on `release` for the endpoints in `hang`."""

    def __init__(self, name: str, probes, hang=()) -> None:
        self.target = make_target("http://127.0.0.1:9", name=name, probes=tuple(probes))
        self.hang = set(hang)
        self.release = threading.Event()
        self.calls: Counter = Counter()
        self.lock = threading.Lock()
        self.closed = False

    def run(self, endpoint: str) -> ProbeResult:
        with self.lock:
            self.calls[endpoint] += 1
        if endpoint in self.hang:
            self.release.wait(10)
        return ProbeResult(target=self.target.name, region="r", endpoint=endpoint, model="",
                           started_at=time.time(), duration_seconds=0.001, success=True)

    def close(self) -> None:
        self.closed = True


def fake_loop(probers, mode="all", interval=10.0, timeout=5.0, sinks=(), clock=None,
              on_skip=None):
    settings = Settings(targets=tuple(p.target for p in probers), interval_seconds=interval,
                        timeout_seconds=timeout, mode=mode)
    return ProbeLoop(settings, probers, list(sinks), on_skip=on_skip,
                     clock=clock or Clock(0.0))


def settle(loop: ProbeLoop, hanging: int) -> None:
    """Wait (real time) until only the `hanging` probes are still in flight."""
    deadline = time.monotonic() + 5
    while loop.in_flight > hanging:
        assert time.monotonic() < deadline, loop.in_flight
        time.sleep(0.0005)


def drive(loop: ProbeLoop, clock: Clock, intervals: int, steps: int = 10,
          hanging: int = 0) -> None:
    """Tick `steps` times per interval over `intervals` intervals from t=0, and once just
    before their end: every job is due exactly `intervals` times in that span."""
    step = loop.interval / steps
    for t in [i * step for i in range(intervals * steps)] + [intervals * loop.interval - 1e-6]:
        clock.t = t
        loop.tick()
        settle(loop, hanging)


def test_one_endpoint_hanging_on_every_target_costs_the_others_no_tick():
    # Issue 8: one endpoint hanging on all 10 targets left the others 15 % of their ticks.
    probers = [FakeProber(f"t{i}", ("chat", "embeddings", "moderations", "models", "files"),
                          hang=("chat",)) for i in range(10)]
    skips = []
    clock = Clock(0.0)
    loop = fake_loop(probers, clock=clock, on_skip=lambda *a: skips.append(a))
    loop.schedule(now=0.0)
    drive(loop, clock, intervals=20, hanging=10)
    for p in probers:
        assert p.calls == {"chat": 1, "embeddings": 20, "moderations": 20, "models": 20,
                           "files": 20}, (p.target.name, p.calls)
    assert Counter(skips) == {(f"t{i}", "chat", "still_running"): 19 for i in range(10)}
    assert loop.threads <= len(loop.jobs)  # one slot per job at most
    for p in probers:
        p.release.set()
    assert loop.stop(drain_seconds=5)


def test_roundrobin_a_hanging_target_costs_the_healthy_one_no_tick():
    # Two targets, one hanging: the healthy one used to be starved completely.
    stuck = FakeProber("stuck", ("models", "files"), hang=("models", "files"))
    healthy = FakeProber("healthy", ("models", "files", "batches"))
    clock = Clock(0.0)
    loop = fake_loop([stuck, healthy], mode="roundrobin", clock=clock)
    loop.schedule(now=0.0)
    drive(loop, clock, intervals=30, hanging=1)
    assert healthy.calls == {"models": 10, "files": 10, "batches": 10}
    assert stuck.calls == {"models": 1}  # never overlapped, the cycle did not move on
    stuck.release.set()
    assert loop.stop(drain_seconds=5)


def test_still_running_skips_are_counted_and_logged_once_a_minute(caplog):
    from exporter.metrics import ExporterMetrics

    prober = FakeProber("openai", ("chat", "models"), hang=("chat",))
    metrics = ExporterMetrics()
    clock = Clock(0.0)
    loop = fake_loop([prober], interval=1.0, clock=clock, on_skip=metrics.skip)
    metrics.configure(loop.settings)
    loop.schedule(now=0.0)
    with caplog.at_level("INFO", logger="exporter.scheduler"):
        drive(loop, clock, intervals=150, steps=2, hanging=1)
    skipped = metrics.registry.get_sample_value(
        "openai_probe_skipped_total",
        {"target": "openai", "endpoint": "chat", "reason": "still_running"})
    assert skipped == 149
    assert metrics.registry.get_sample_value(
        "openai_probe_skipped_total",
        {"target": "openai", "endpoint": "models", "reason": "still_running"}) == 0
    lines = [r for r in caplog.records if r.levelname == "WARNING"]
    # 150 s of skips: three lines (at the first skip, a minute later, two minutes later),
    # not one per tick; each says how many ticks it stands for.
    assert len(lines) == 3, [r.getMessage() for r in lines]
    assert "probe openai/chat was still running at its next tick: skipped 1 tick(s)" in \
        lines[0].getMessage()
    assert "skipped 60 tick(s)" in lines[1].getMessage()
    prober.release.set()
    assert loop.stop(drain_seconds=5)


def test_offsets_are_stable_across_processes_and_spread_over_the_interval():
    import subprocess
    import sys

    from exporter.scheduler import offset_fraction

    names = [f"t{i}/{e}" for i in range(10)
             for e in ("chat", "embeddings", "moderations", "models", "files")]
    here = [offset_fraction(n) for n in names]
    code = ("import sys; from exporter.scheduler import offset_fraction as f; "
            "print(repr([f(n) for n in sys.argv[1:]]))")
    for seed in ("1", "2"):  # Python's own hash() would differ between these
        out = subprocess.run([sys.executable, "-c", code, *names], capture_output=True,
                             text=True, check=True, env={"PYTHONHASHSEED": seed,
                                                         "PATH": "/usr/bin:/bin"},
                             cwd=str(__import__("pathlib").Path(__file__).parent.parent))
        assert eval(out.stdout) == here  # noqa: S307 - our own repr of floats
    assert all(0 <= f < 1 for f in here)
    assert len(set(here)) == len(here)
    # spread: every tenth of the interval gets some of the 50 starts, none gets a crowd
    tenths = Counter(int(f * 10) for f in here)
    assert set(tenths) == set(range(10)) and max(tenths.values()) <= 10, tenths


def test_starts_are_spread_and_each_job_starts_within_one_interval():
    probers = [FakeProber(f"t{i}", ("chat", "embeddings", "moderations", "models", "files"))
               for i in range(10)]
    clock = Clock(100.0)
    loop = fake_loop(probers, interval=60.0, clock=clock)
    loop.schedule()
    assert all(100.0 <= j.due < 160.0 for j in loop.jobs)
    for i in range(60):  # one tick a second through the first interval
        clock.t = 100.0 + i
        loop.tick()
        settle(loop, 0)
    assert all(j.ticks == 1 for j in loop.jobs)  # every job ran once in the first interval
    assert sum(sum(p.calls.values()) for p in probers) == 50
    per_second = Counter(int(j.offset) for j in loop.jobs)
    assert max(per_second.values()) <= 5, per_second  # not 50 released at the same instant
    assert loop.tick() > 0  # the next start is ahead, not now
    assert loop.stop(drain_seconds=1)


def test_a_timer_late_by_several_intervals_runs_each_job_once_then_keeps_its_cadence():
    prober = FakeProber("openai", ("models",))
    clock = Clock(0.0)
    loop = fake_loop([prober], interval=10.0, clock=clock)
    loop.schedule(now=0.0)
    (job,) = loop.jobs
    clock.t = job.offset
    loop.tick()
    settle(loop, 0)
    clock.t = job.offset + 55  # the process was stopped for 5.5 intervals
    loop.tick()
    settle(loop, 0)
    assert prober.calls["models"] == 2
    assert job.due == job.offset + 60  # back on its own phase, not a burst of five
    clock.t = job.offset + 60
    loop.tick()
    settle(loop, 0)
    assert prober.calls["models"] == 3
    assert loop.stop(drain_seconds=1)


def test_too_many_jobs_is_a_one_line_config_error(tmp_path):
    import json

    from exporter.settings import ConfigError, load
    from exporter.settings.jobs import MAX_JOBS

    targets = [{"name": f"t{i}", "base_url": "http://127.0.0.1:9/v1",
                "probes": ["models", "files"]} for i in range(MAX_JOBS // 2 + 1)]
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({"mode": "all", "targets": targets}))
    env = {"OPENAI_API_KEY": "sk-x"}
    with pytest.raises(ConfigError) as err:
        load(["--config.file", str(path)], env)
    assert str(err.value) == (
        "config file mode: all mode makes 1002 probe jobs (targets x endpoints) on this "
        "exporter, at most 1000 (each gets its own probe thread when it hangs); use "
        "roundrobin, fewer endpoints, or shard the targets (SHARD_COUNT)")
    # roundrobin: one job per target, well within the bound
    path.write_text(json.dumps({"mode": "roundrobin", "targets": targets}))
    assert len(load(["--config.file", str(path)], env).targets) == MAX_JOBS // 2 + 1


# -- the wall clock steps in a running loop ------------------------------------------------

@pytest.mark.parametrize("step", [-3600.0, 3600.0])
def test_a_wall_clock_step_never_stops_probing(monkeypatch, step):
    prober = FakeProber("openai", ("models", "files"))
    sink = Collect()
    loop = fake_loop([prober], interval=0.1, timeout=1.0, sinks=[sink], clock=time.monotonic)
    loop.start()
    try:
        assert sink.wait_for(lambda rs: len(rs) >= 4, timeout=5)
        real_time = time.time
        monkeypatch.setattr(time, "time", lambda: real_time() + step)
        with sink.lock:
            before = len(sink.results)
        # two jobs at 0.1 s: about 20 probes a second go on across the step
        assert sink.wait_for(lambda rs: len(rs) >= before + 10, timeout=2), len(sink.results)
        with sink.lock:
            last = sink.results[-1]
        # started_at stays a wall-clock timestamp: it follows the step
        assert abs(last.started_at - (real_time() + step)) < 5
    finally:
        loop.stop()


# -- stop: the drain ------------------------------------------------------------------------

def test_stop_waits_for_probes_in_flight_and_their_sinks_then_starts_none():
    prober = FakeProber("openai", ("chat", "models"), hang=("chat",))
    sink = Collect()
    clock = Clock(0.0)
    loop = fake_loop([prober], interval=1.0, timeout=5.0, sinks=[sink], clock=clock)
    loop.schedule(now=0.0)
    drive(loop, clock, intervals=1, hanging=1)
    assert loop.in_flight == 1
    done = []
    stopper = threading.Thread(target=lambda: done.append(loop.stop()))
    stopper.start()
    time.sleep(0.2)
    assert stopper.is_alive() and not prober.closed  # waiting for chat
    clock.t = 50.0
    assert loop.tick() == float("inf")  # stopping: nothing new starts
    prober.release.set()
    stopper.join(5)
    assert done == [True]
    assert prober.closed
    with sink.lock:
        assert sorted(r.endpoint for r in sink.results) == ["chat", "models"]
    assert prober.calls == {"chat": 1, "models": 1}


def test_stop_gives_up_on_a_probe_past_the_drain_bound_and_drops_its_result():
    prober = FakeProber("openai", ("chat",), hang=("chat",))
    sink = Collect()
    clock = Clock(0.0)
    loop = fake_loop([prober], interval=1.0, timeout=0.1, sinks=[sink], clock=clock)
    assert loop.drain_seconds == pytest.approx(0.1 + 2.0)  # the timeout + the margin
    loop.schedule(now=0.0)
    drive(loop, clock, intervals=1, hanging=1)
    t0 = time.monotonic()
    assert loop.stop(drain_seconds=0.3) is False
    assert 0.25 < time.monotonic() - t0 < 2
    prober.release.set()
    time.sleep(0.2)
    with sink.lock:
        assert sink.results == []  # finished after the stores closed: not recorded

"""/healthz means the probe loop is alive: 503 with a one-line reason once no probe has
completed for several intervals; the container health check finds the configured port.

Cases tried (issue 10, item 6): the liveness sink on a fake clock (start-up grace, a probe
completing, going stale, the limit in roundrobin and all mode); the routes with a stale
sink (GET, HEAD, both paths); a real ProbeLoop against the fake upstream that is stopped
(503 after the limit) and one whose upstream hangs (probes time out: still 200); the
health-check command against a running exporter on a non-default port and against a
port where nothing listens.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from exporter.liveness import STALE_AFTER_INTERVALS, Liveness
from exporter.prober import Prober
from exporter.scheduler import ProbeLoop
from exporter.settings import Settings
from exporter.web import make_app
from tests.conftest import clean_env, free_port, make_target
from tests.test_main import Daemon
from tests.test_status_api import call, registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_limit_is_several_intervals_plus_the_timeout():
    live = Liveness(interval_seconds=60, timeout_seconds=12)
    assert STALE_AFTER_INTERVALS == 3
    assert live.limit_seconds == 3 * (60 + 12)


def test_grace_then_stale_then_alive_again():
    clock = Clock()
    live = Liveness(interval_seconds=10, timeout_seconds=2, clock=clock)
    assert live.problem() is None  # just started
    clock.t += 36
    assert live.problem() is None  # 36 s = the limit: still in the start-up grace
    clock.t += 1
    assert live.problem() == ("no probe has completed since start 37 s ago (limit 36 s: 3 x "
                              "(interval 10 s + timeout 2 s))")
    live.observe(None)  # a sink: any completed probe
    assert live.problem() is None
    clock.t += 40
    assert live.problem() == ("no probe has completed for 40 s (limit 36 s: 3 x (interval "
                              "10 s + timeout 2 s))")
    live.beat()  # a scheduled probe skipped on purpose (budget) is the loop alive too
    assert live.problem() is None


@pytest.mark.parametrize("path", ["/healthz", "/-/healthy"])
def test_routes_answer_503_with_the_reason(path):
    clock = Clock()
    live = Liveness(interval_seconds=1, timeout_seconds=1, clock=clock)
    app = make_app(registry(), {}, "", health=live.problem)
    ok = call(app, path)
    assert (ok.code, ok.body) == (200, b"ok\n")
    clock.t += 100
    stale = call(app, path)
    assert stale.code == 503
    assert stale.header("Content-Type") == "text/plain; charset=utf-8"
    assert stale.body.decode() == live.problem() + "\n"
    assert len(stale.body.decode().splitlines()) == 1
    head = call(app, path, method="HEAD")
    assert (head.code, head.body) == (503, b"")


def _loop(fake, interval: float, timeout: float, mode: str):
    target = make_target(fake.base_url, probes=("models", "files"))
    settings = Settings(targets=(target,), interval_seconds=interval,
                        timeout_seconds=timeout, mode=mode)
    live = Liveness(interval, timeout)
    loop = ProbeLoop(settings, [Prober(target, timeout_seconds=timeout)], [live.observe])
    return loop, make_app(registry(), {}, "", health=live.problem), live


def _wait_for(app, code: int, within: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        if call(app, "/healthz").code == code:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"/healthz never answered {code} within {within} s")


@pytest.mark.parametrize("mode", ["roundrobin", "all"])
def test_a_loop_that_stops_completing_probes_turns_healthz_503(fake, mode):
    loop, app, live = _loop(fake, interval=0.1, timeout=0.2, mode=mode)
    loop.start()
    try:
        _wait_for(app, 200, 5)
        time.sleep(0.5)
        assert call(app, "/healthz").code == 200  # probing: alive
    finally:
        loop.stop()  # the scheduler is gone: no probe completes any more
    took = _wait_for(app, 503, 10 * live.limit_seconds)
    assert took >= live.limit_seconds * 0.8, took
    assert call(app, "/healthz").body.startswith(b"no probe has completed for ")


def test_a_hanging_upstream_is_not_a_dead_loop(fake):
    # Probes that time out still complete: /healthz is about the exporter, not upstream.
    fake.set_fault("*", "hang")
    loop, app, live = _loop(fake, interval=0.1, timeout=0.2, mode="all")
    loop.start()
    try:
        time.sleep(3 * live.limit_seconds)
        assert call(app, "/healthz").code == 200
    finally:
        loop.stop()


# -- the container health check ----------------------------------------------------------

def healthcheck(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter.healthcheck", *args], cwd=ROOT,
                          env=env, capture_output=True, timeout=30)


def test_healthcheck_command_reads_the_listen_address_like_the_exporter():
    d = Daemon(clean_env(DEMO="1", PROBE_INTERVAL_SEC="1"))
    try:
        d.wait_ready()
        env = clean_env(DEMO="1", LISTEN_ADDRESS=f"127.0.0.1:{d.port}")
        ok = healthcheck(env)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout == f"http://127.0.0.1:{d.port}/healthz: ok\n".encode()
        # the flag, as the exporter takes it, wins over the environment
        flag = healthcheck(clean_env(DEMO="1", LISTEN_ADDRESS="127.0.0.1:1"),
                           "--web.listen-address", f"127.0.0.1:{d.port}")
        assert flag.returncode == 0, flag.stderr
    finally:
        d.stop()


def test_healthcheck_command_fails_where_nothing_listens():
    port = free_port()
    proc = healthcheck(clean_env(DEMO="1", LISTEN_ADDRESS=f"0.0.0.0:{port}"))
    assert proc.returncode == 1
    out = proc.stdout.decode()
    assert out.startswith(f"http://127.0.0.1:{port}/healthz: ") and "refused" in out, out
    assert len(out.splitlines()) == 1

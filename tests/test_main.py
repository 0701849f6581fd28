"""The daemon end to end: config errors, the key-less demo, secrets, clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from exporter.fake import FakeUpstream
from tests.conftest import CANARY_KEY, clean_env, free_port
from tests.tools import require_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Daemon:
    def __init__(self, env: dict[str, str], args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        env = dict(env, LISTEN_ADDRESS=f"127.0.0.1:{self.port}")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", *args], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise AssertionError("exporter did not come up")

    def metric(self, name: str, **labels: str) -> float | None:
        from prometheus_client.parser import text_string_to_metric_families
        text = requests.get(self.url + "/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        return None

    def wait_metric(self, name: str, predicate, timeout: float = 15, **labels: str) -> float:
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.metric(name, **labels)
            if value is not None and predicate(value):
                return value
            time.sleep(0.2)
        raise AssertionError(f"{name}{labels} = {value}")

    def stop(self) -> tuple[float, str, str]:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        # The drain takes up to the probe timeout + 2 s; tests that bound it assert on
        # the time returned, this is only a ceiling for a loaded machine.
        out, err = self.proc.communicate(timeout=30)
        return time.monotonic() - t0, out.decode(), err.decode()


@pytest.mark.parametrize("args,env,needle", [
    (("--probe.interval", "0"), {"OPENAI_API_KEY": "sk-x"}, "interval"),
    ((), {"OPENAI_API_KEY": "sk-x", "PROBE_ENDPOINTS": "chat,chatt"}, "chatt"),
    ((), {"OPENAI_API_KEY": "sk-x", "PROBE_MODE": "sometimes"}, "PROBE_MODE"),
    ((), {"OPENAI_API_KEY": "sk-x", "LISTEN_ADDRESS": "nowhere:99999"}, "LISTEN_ADDRESS"),
    (("--config.file", "/nonexistent/x.yaml"), {"OPENAI_API_KEY": "sk-x"}, "x.yaml"),
    ((), {"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}, "OPENAI_API_KEY"),
    ((), {"OPENAI_API_KEY": "sk-x", "ENABLE_DB": "1", "DB_FILE": "/nonexistent/dir/h.db"},
     "DB_FILE=/nonexistent/dir/h.db"),
])
def test_bad_config_exits_2_with_one_line(args, env, needle):
    proc = subprocess.run([sys.executable, "-m", "exporter", *args], cwd=ROOT,
                          env=clean_env(**env), capture_output=True, timeout=30)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert "sk-x" not in err


def test_db_file_that_is_not_a_history_database_exits_2_with_one_line(tmp_path):
    not_a_db = tmp_path / "notes.db"
    text = "these are notes, not an SQLite database\n" * 10
    not_a_db.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "exporter"], cwd=ROOT, timeout=30,
                          env=clean_env(OPENAI_API_KEY="sk-x", ENABLE_DB="1",
                                        DB_FILE=str(not_a_db)), capture_output=True)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and f"DB_FILE={not_a_db}" in err, err
    assert not_a_db.read_text() == text  # left as it was


def test_config_check_exits_0():
    proc = subprocess.run([sys.executable, "-m", "exporter", "--config.check"], cwd=ROOT,
                          env=clean_env(OPENAI_API_KEY="sk-x"), capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_keyless_demo_probes_the_bundled_fake_and_stops_fast():
    d = Daemon(clean_env(PROBE_INTERVAL_SEC="0.5", PROBE_ALLOW_FAST="1", PROBE_MODE="all"))
    try:
        d.wait_ready()
        d.wait_metric("openai_requests_total", lambda v: v > 0, endpoint="chat")
        assert d.metric("openai_exporter_build_info") == 1
    finally:
        elapsed, out, _ = d.stop()
    assert d.proc.returncode == 0
    assert elapsed < 2.0, elapsed
    lines = [json.loads(line) for line in out.splitlines()]
    demo = [rec for rec in lines if "demo" in rec["message"]]
    assert len(demo) == 1 and "127.0.0.1" in demo[0]["message"]


def test_canary_key_never_leaves(tmp_path):
    # The fake expects another key, so every probe gets a 401 that echoes ours back.
    with FakeUpstream(api_key="sk-the-right-one-0000000000000000") as fake:
        d = Daemon(clean_env(OPENAI_API_KEY=CANARY_KEY, OPENAI_BASE_URL=fake.base_url,
                             PROBE_INTERVAL_SEC="0.3", PROBE_ALLOW_FAST="1", PROBE_MODE="all",
                             LOG_LEVEL="DEBUG"))
        try:
            d.wait_ready()
            d.wait_metric("openai_requests_total", lambda v: v >= 2, endpoint="chat",
                          error_type="unauthorized")
            bodies = {path: requests.get(d.url + path, timeout=5).text for path in (
                "/metrics", "/status", "/traces", "/traces?format=csv", "/traces?format=ndjson",
                "/", "/latency_histogram?endpoint=chat", "/healthz")}
        finally:
            _, out, err = d.stop()
    assert "Incorrect API key provided" in bodies["/traces"]  # the echo did arrive ...
    bodies["stdout"], bodies["stderr"] = out, err
    for where, text in bodies.items():  # ... and was redacted everywhere
        for fragment in (CANARY_KEY, CANARY_KEY[:12], CANARY_KEY[-12:], CANARY_KEY[-4:]):
            assert fragment not in text, f"{fragment!r} leaked into {where}"
    assert '"config"' in out  # the start-up line with the effective config


def test_live_exposition_passes_promtool():
    promtool = require_tool("promtool")
    with FakeUpstream(profile="chaos", seed=3) as fake:
        d = Daemon(clean_env(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=fake.base_url,
                             PROBE_INTERVAL_SEC="0.2", PROBE_ALLOW_FAST="1", PROBE_MODE="all"))
        try:
            d.wait_ready()
            d.wait_metric("openai_requests_total", lambda v: v >= 3, endpoint="embeddings",
                          status="success")
            text = requests.get(d.url + "/metrics", timeout=5).content
        finally:
            d.stop()
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")


def test_metrics_answers_fast_while_upstream_hangs():
    with FakeUpstream() as fake:
        fake.set_fault("*", "hang")
        d = Daemon(clean_env(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=fake.base_url,
                             PROBE_INTERVAL_SEC="0.5", PROBE_ALLOW_FAST="1", PROBE_MODE="all",
                             HTTP_TIMEOUT_MS="3000"))
        try:
            d.wait_ready()
            time.sleep(1.0)  # every probe is now blocked on the hanging upstream
            t0 = time.monotonic()
            assert requests.get(d.url + "/metrics", timeout=5).ok
            assert time.monotonic() - t0 < 1.0
        finally:
            elapsed, out, _ = d.stop()
    # The drain waits for the hanging probes, which end at their 3 s timeout (started at
    # least 0.5 s before the signal), and records them; never longer than timeout + 2 s.
    assert d.proc.returncode == 0
    assert elapsed < 3.0 + 2.0, elapsed
    assert "in flight finished and were recorded" in out

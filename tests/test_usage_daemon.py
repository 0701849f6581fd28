"""The usage poller in the running exporter: keys go where they belong, the admin key
appears nowhere, /status shows the usage block, the demo polls its fake, config errors."""

from __future__ import annotations

import glob
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import requests

from exporter.fake import FakeUpstream
from tests.conftest import CANARY_KEY, clean_env
from tests.test_main import ROOT, Daemon
from tests.tools import require_tool
from tests.usage_helpers import ADMIN_KEY

USAGE_ENDPOINTS = ("completions", "embeddings", "moderations", "images", "audio_speeches",
                   "audio_transcriptions", "costs", "projects", "rate_limits")


def test_each_key_goes_only_where_it_belongs() -> None:
    # The fake takes only the probe key on probe routes and only the admin key on admin
    # routes: a key sent to the wrong place would show up as a 401 or 403.
    with FakeUpstream(api_key=CANARY_KEY, admin_key=ADMIN_KEY) as fake:
        d = Daemon(clean_env(OPENAI_API_KEY=CANARY_KEY, OPENAI_ADMIN_KEY=ADMIN_KEY,
                             OPENAI_BASE_URL=fake.base_url, PROBE_INTERVAL_SEC="0.3",
                             PROBE_ALLOW_FAST="1",
                             PROBE_MODE="all", USAGE_POLL_INTERVAL_SEC="1"))
        try:
            d.wait_ready()
            for endpoint in USAGE_ENDPOINTS:
                d.wait_metric("openai_usage_poll_success", lambda v: v == 1, endpoint=endpoint)
            d.wait_metric("openai_requests_total", lambda v: v >= 2, endpoint="chat",
                          status="success")
            status = requests.get(d.url + "/status", timeout=5).json()
            exposition = requests.get(d.url + "/metrics", timeout=5).content
        finally:
            d.stop()
        records = fake.requests
    promtool = require_tool("promtool")
    proc = subprocess.run([promtool, "check", "metrics"], input=exposition,
                          capture_output=True, timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    assert b'openai_project_rate_limit{kind="tpm",model="gpt-4o-mini",project="proj_alpha"}' \
        in exposition
    admin = [r for r in records if r["path"].startswith("/v1/organization/")]
    probes = [r for r in records if not r["path"].startswith("/v1/organization/")]
    assert admin and probes
    assert {r["status"] for r in admin} == {200} and {r["status"] for r in probes} == {200}
    usage = status["usage"]
    assert usage["enabled"] and usage["marks"] == "memory"
    assert all(e["success"] for e in usage["endpoints"].values())
    assert usage["last_poll"].endswith("Z") and usage["cost_usd"]["month"] > 0
    assert usage["probe_budget"] == {"budget_usd_per_day": None, "spent_usd_24h": 0.0,
                                     "exhausted": False, "paused": []}
    assert status["config"]["admin_key"] == "***"
    assert status["config"]["targets"][0]["admin_key"] == "***"


def test_the_admin_key_never_leaves(tmp_path) -> None:
    # The fake expects another admin key: every admin read gets a 401 echoing ours masked.
    db = tmp_path / "data.db"
    with FakeUpstream(admin_key="sk-admin-the-right-one-000000000000") as fake:
        d = Daemon(clean_env(OPENAI_API_KEY="sk-test-probe", OPENAI_ADMIN_KEY=ADMIN_KEY,
                             OPENAI_BASE_URL=fake.base_url, PROBE_INTERVAL_SEC="0.5",
                             PROBE_ALLOW_FAST="1",
                             USAGE_POLL_INTERVAL_SEC="1", LOG_LEVEL="DEBUG", ENABLE_DB="1",
                             DB_FILE=str(db)))
        try:
            d.wait_ready()
            d.wait_metric("openai_usage_poll_errors_total", lambda v: v >= 2,
                          endpoint="costs", error_type="unauthorized")
            status = requests.get(d.url + "/status", timeout=5).text
            fake.admin_key = ADMIN_KEY  # now accepted: marks get written to the database
            d.wait_metric("openai_usage_poll_success", lambda v: v == 1, endpoint="completions")
            bodies = {path: requests.get(d.url + path, timeout=5).text for path in (
                "/metrics", "/status", "/traces", "/traces?format=csv", "/")}
            bodies["/status (401)"] = status
        finally:
            _, out, err = d.stop()
    assert "Incorrect API key provided" in bodies["/status (401)"]  # the echo arrived ...
    bodies["stdout"], bodies["stderr"] = out, err
    files = glob.glob(str(db) + "*")
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM usage_marks").fetchone()[0] > 0
    for path in files:  # the database, its WAL and shared memory
        bodies[path] = Path(path).read_bytes().decode("latin-1")
    for where, text in bodies.items():  # ... and was redacted everywhere
        for fragment in (ADMIN_KEY, ADMIN_KEY[:14], ADMIN_KEY[-12:], ADMIN_KEY[-4:]):
            assert fragment not in text, f"{fragment!r} leaked into {where}"
    assert any("usage poll" in line for line in out.splitlines())


def test_config_errors_never_repeat_an_admin_key(tmp_path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"targets:\n  - name: a\n    admin_key_env: {ADMIN_KEY}\n")
    cases = [
        (["--config.file", str(config)], {}),
        ([], {"OPENAI_ADMIN_KEY": ADMIN_KEY, "USAGE_LOOKBACK_MIN": "1"}),
    ]
    for args, env in cases:
        proc = subprocess.run([sys.executable, "-m", "exporter", *args], cwd=ROOT, timeout=30,
                              env=clean_env(OPENAI_API_KEY="sk-x", **env), capture_output=True)
        err = proc.stderr.decode()
        assert proc.returncode == 2 and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err
        for fragment in (ADMIN_KEY, ADMIN_KEY[:14], ADMIN_KEY[-12:]):
            assert fragment not in err


def test_without_an_admin_key_one_line_says_how_to_enable_it() -> None:
    with FakeUpstream() as fake:
        d = Daemon(clean_env(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=fake.base_url,
                             PROBE_INTERVAL_SEC="5"))
        try:
            d.wait_ready()
            status = requests.get(d.url + "/status", timeout=5).json()
            metrics = requests.get(d.url + "/metrics", timeout=5).text
        finally:
            _, out, _ = d.stop()
    lines = [json.loads(line) for line in out.splitlines()]
    usage = [rec for rec in lines if rec["logger"] == "exporter.usage"]
    assert len(usage) == 1 and usage[0]["level"] == "INFO"
    assert "OPENAI_ADMIN_KEY" in usage[0]["message"]
    assert status["usage"]["enabled"] is False and "OPENAI_ADMIN_KEY" in status["usage"]["reason"]
    assert "openai_usage_" not in metrics and "openai_probe_budget_exhausted 0.0" in metrics


def test_the_keyless_demo_polls_the_fake_admin_api() -> None:
    d = Daemon(clean_env(PROBE_INTERVAL_SEC="5", USAGE_POLL_INTERVAL_SEC="1"))
    try:
        d.wait_ready()
        d.wait_metric("openai_usage_last_poll_timestamp_seconds", lambda v: v > 0)
        d.wait_metric("openai_project_info", lambda v: v == 1, project="proj_alpha",
                      timeout=30)
    finally:
        elapsed, _, _ = d.stop()
    assert d.proc.returncode == 0 and elapsed < 3.0


def test_a_db_file_that_cannot_hold_the_marks_exits_2_with_one_line(tmp_path) -> None:
    from exporter.history import SQLiteHistory

    db = tmp_path / "data.db"
    SQLiteHistory(str(db)).close()  # a good history database ...
    with sqlite3.connect(db) as conn:  # ... with a usage table of someone else's shape
        conn.execute("CREATE TABLE usage_state (x INTEGER)")
    proc = subprocess.run([sys.executable, "-m", "exporter"], cwd=ROOT, timeout=30,
                          env=clean_env(OPENAI_API_KEY="sk-x", OPENAI_ADMIN_KEY=ADMIN_KEY,
                                        ENABLE_DB="1", DB_FILE=str(db)), capture_output=True)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert err.strip().splitlines() == [
        f"openai-exporter: error: DB_FILE={db}: cannot keep the usage marks there: no such "
        "column: key"]

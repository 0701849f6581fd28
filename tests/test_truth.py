"""Truth test: every query the bundle and the docs ship returns data from a real Prometheus.

A real `prometheus` (Debian package) scrapes the real exporter, which probes the fake
upstream in chaos mode (latency, failures of every kind, rate-limit headers), with the
repository's recording and alerting rules loaded. Then every expression of the
dashboard (panel targets and variable queries), every ```promql example in README.md
and docs/, every recording rule and every
recorded series must come back non-empty, and every alert expression must at least
evaluate. An empty answer is what a user sees as "No data".

Everything listens on 127.0.0.1 on free ports and is killed at the end.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from collections.abc import Iterator

import pytest

from tests import promql
from tests.conftest import clean_env, free_port
from tests.tools import require_tool

ROOT = promql.ROOT
DASHBOARD = ROOT / "grafana" / "dashboards" / "openai-api.json"
JOB = "openai-exporter"  # the job name the rules and the dashboard's default expect
SETTLE_TIMEOUT = 90.0  # seconds to wait for enough samples
RETRY_TIMEOUT = 30.0  # extra seconds for expressions that were still empty

# Talk to 127.0.0.1 directly, whatever *_proxy says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with _OPENER.open(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _wait(what: str, check, timeout: float,
          procs: list[tuple[str, subprocess.Popen, Path]]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc, log in procs:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode} while waiting for {what}:\n"
                            + _tail(log))
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n"
                + "\n".join(f"--- {n}\n{_tail(log)}" for n, _, log in procs))


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Prometheus:
    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, expr: str) -> dict:
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = _get(url, timeout=10)
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {"status": "error", "error": f"HTTP {status}: {body[:200]}"}
        return doc

    def result(self, expr: str) -> list:
        doc = self.query(expr)
        if doc.get("status") != "success":
            raise AssertionError(f"{doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]["result"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    prometheus = require_tool("prometheus")
    require_tool("promtool")
    tmp = tmp_path_factory.mktemp("truth")
    upstream_port, exporter_port, prom_port = free_port(), free_port(), free_port()
    env = clean_env()

    procs: list[tuple[str, subprocess.Popen, Path]] = []

    def start(name: str, args: list[str], extra_env: dict[str, str] | None = None) -> None:
        log = tmp / f"{name}.log"
        fh = log.open("wb")
        proc = subprocess.Popen(args, cwd=ROOT, env={**env, **(extra_env or {})},
                                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        fh.close()
        procs.append((name, proc, log))

    try:
        start("fake-upstream", [sys.executable, "-m", "exporter.fake",
                                "--host", "127.0.0.1", "--port", str(upstream_port),
                                "--profile", "chaos", "--seed", "1"])
        _wait("the fake upstream", lambda: socket.create_connection(
            ("127.0.0.1", upstream_port), 1).close() is None, 20, procs)

        start("exporter", [sys.executable, "-m", "exporter"], {
            "OPENAI_API_KEY": "sk-test-truth-0000",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
            "PROBE_INTERVAL_SEC": "1",
            "PROBE_MODE": "all",
            # The organisation panels and rules: the fake's admin API, polled every second.
            "OPENAI_ADMIN_KEY": "sk-admin-test-truth-0000",
            "USAGE_POLL_INTERVAL_SEC": "1",
            "LISTEN_ADDRESS": f"127.0.0.1:{exporter_port}",
        })
        _wait("the exporter's /healthz", lambda: _get(
            f"http://127.0.0.1:{exporter_port}/healthz")[0] == 200, 30, procs)

        config = tmp / "prometheus.yml"
        rule_files = "\n".join(f"  - {p}" for p in promql.RULE_FILES)
        config.write_text(f"""\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
{rule_files}
scrape_configs:
  - job_name: {JOB}
    static_configs:
      - targets: ["127.0.0.1:{exporter_port}"]
""")
        start("prometheus", [prometheus, f"--config.file={config}",
                             f"--storage.tsdb.path={tmp / 'data'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}",
                             "--log.level=warn"])
        prom = Prometheus(f"http://127.0.0.1:{prom_port}")
        _wait("Prometheus /-/ready", lambda: _get(f"{prom.base}/-/ready")[0] == 200, 30, procs)

        def settled() -> bool:
            # Enough scrapes for every rate(), and the rule groups evaluated on them.
            scrapes = prom.result(f'count_over_time(up{{job="{JOB}"}}[5m])')
            if not scrapes or float(scrapes[0]["value"][1]) < 20:
                return False
            return bool(prom.result("target:openai_requests_errors_per_requests:ratio_rate5m"))

        _wait("20 scrapes and the recording rules", settled, SETTLE_TIMEOUT, procs)
        yield prom
    finally:
        for _, proc, _ in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc, _ in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _prometheus_queries() -> list[promql.Query]:
    qs = [q for q in promql.dashboard_queries(DASHBOARD) if q.datasource == "prometheus"]
    # The ```promql examples of README.md and docs/ too: a user pastes those.
    return qs + promql.rule_queries() + promql.doc_queries("promql")



def _as_promql(q: promql.Query) -> str:
    expr = promql.substitute(q.expr)
    lv = promql.label_values(expr)
    return lv[0] if lv else expr


def test_every_dashboard_and_rule_query_returns_data(stack: Prometheus) -> None:
    queries = _prometheus_queries()
    assert len(queries) > 40
    # Recorded series by name too: an expression can evaluate fine while the rule fails
    # to write it (static rule labels collapsing two series into one label set), and
    # then every panel or alert reading the recorded name is empty.
    queries += [promql.Query("recorded series", name, name, source="rules")
                for name in sorted(promql.recorded_names())]

    pending: dict[promql.Query, str] = {}
    errors: list[str] = []
    for q in queries:
        expr = _as_promql(q)
        doc = stack.query(expr)
        if doc.get("status") != "success":
            errors.append(f"{q.describe()}\n    -> {doc.get('errorType')}: {doc.get('error')}")
            continue
        result = doc["data"]["result"]
        if q.where == "alert":
            continue  # a condition: an empty answer means "not firing", which is fine
        if q.where == "variable":
            lv = promql.label_values(promql.substitute(q.expr))
            result = [r for r in result if r["metric"].get(lv[1])] if lv else result
        if not result:
            pending[q] = expr
    assert not errors, "queries Prometheus rejects:\n" + "\n".join(errors)

    # Some windows need a few more samples (a rule evaluated once so far): retry the
    # empty ones for a while before calling them broken.
    deadline = time.monotonic() + RETRY_TIMEOUT
    while pending and time.monotonic() < deadline:
        time.sleep(2)
        for q, expr in list(pending.items()):
            result = stack.result(expr)
            if q.where == "variable":
                lv = promql.label_values(promql.substitute(q.expr))
                result = [r for r in result if lv and r["metric"].get(lv[1])]
            if result:
                del pending[q]
    assert not pending, "queries that return no data (a user sees \"No data\"):\n" + "\n".join(
        f"{q.describe()}\n    -> ran as: {expr}" for q, expr in pending.items())


def test_variables_offer_the_values_the_exporter_exposes(stack: Prometheus) -> None:
    """The target/endpoint/model drop-downs list what the exporter probes."""
    values = {}
    for q in promql.dashboard_queries(DASHBOARD):
        if q.where != "variable":
            continue
        selector, label = promql.label_values(promql.substitute(q.expr))
        values[q.name] = {r["metric"].get(label) for r in stack.result(selector)} - {None}
    assert values["job"] == {JOB}
    assert values["target"] == {"openai"}
    assert {"chat", "responses", "embeddings", "moderations", "models", "files", "fine_tunes",
            "batches"} <= values["endpoint"]
    assert "gpt-4o-mini" in values["model"]


def test_chaos_shows_up_in_the_error_panels(stack: Prometheus) -> None:
    """Chaos mode makes probes fail; the error-type query must see it, not only zeros."""
    rows = stack.result(
        'sum by (error_type) (increase(openai_requests_total{status="error"}[5m])) > 0')
    assert {r["metric"]["error_type"] for r in rows} - {"none"}, rows

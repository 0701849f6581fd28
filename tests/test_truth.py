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

import socket
import sys
from collections.abc import Iterator

import pytest

from tests import promql
from tests.conftest import clean_env, free_port
from tests.prom import Processes, Prometheus, assert_queries_answer, get
from tests.tools import require_tool

ROOT = promql.ROOT
DASHBOARD = ROOT / "grafana" / "dashboards" / "openai-api.json"
JOB = "openai-exporter"  # the job name the rules and the dashboard's default expect
SETTLE_TIMEOUT = 90.0  # seconds to wait for enough samples
RETRY_TIMEOUT = 30.0  # extra seconds for expressions that were still empty


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    prometheus = require_tool("prometheus")
    require_tool("promtool")
    tmp = tmp_path_factory.mktemp("truth")
    upstream_port, exporter_port, prom_port = free_port(), free_port(), free_port()
    procs = Processes(tmp, ROOT, clean_env())
    try:
        procs.start("fake-upstream", [sys.executable, "-m", "exporter.fake",
                                      "--host", "127.0.0.1", "--port", str(upstream_port),
                                      "--profile", "chaos", "--seed", "1"])
        procs.wait("the fake upstream", lambda: socket.create_connection(
            ("127.0.0.1", upstream_port), 1).close() is None, 20)

        procs.start("exporter", [sys.executable, "-m", "exporter"], {
            "OPENAI_API_KEY": "sk-test-truth-0000",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
            "PROBE_INTERVAL_SEC": "1",
            "PROBE_MODE": "all",
            # The organisation panels and rules: the fake's admin API, polled every second.
            "OPENAI_ADMIN_KEY": "sk-admin-test-truth-0000",
            "USAGE_POLL_INTERVAL_SEC": "1",
            "LISTEN_ADDRESS": f"127.0.0.1:{exporter_port}",
        })
        procs.wait("the exporter's /healthz", lambda: get(
            f"http://127.0.0.1:{exporter_port}/healthz")[0] == 200, 30)

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
        procs.start("prometheus", [prometheus, f"--config.file={config}",
                                   f"--storage.tsdb.path={tmp / 'data'}",
                                   f"--web.listen-address=127.0.0.1:{prom_port}",
                                   "--log.level=warn"])
        prom = Prometheus(f"http://127.0.0.1:{prom_port}")
        procs.wait("Prometheus /-/ready", lambda: get(f"{prom.base}/-/ready")[0] == 200, 30)

        def settled() -> bool:
            # Enough scrapes for every rate(), and the rule groups evaluated on them.
            scrapes = prom.result(f'count_over_time(up{{job="{JOB}"}}[5m])')
            if not scrapes or float(scrapes[0]["value"][1]) < 20:
                return False
            return bool(prom.result("target:openai_requests_errors_per_requests:ratio_rate5m"))

        procs.wait("20 scrapes and the recording rules", settled, SETTLE_TIMEOUT)
        yield prom
    finally:
        procs.stop()


def _prometheus_queries() -> list[promql.Query]:
    qs = [q for q in promql.dashboard_queries(DASHBOARD) if q.datasource == "prometheus"]
    # The ```promql examples of README.md and docs/ too: a user pastes those.
    return qs + promql.rule_queries() + promql.doc_queries("promql")


def test_every_dashboard_and_rule_query_returns_data(stack: Prometheus) -> None:
    queries = _prometheus_queries()
    assert len(queries) > 40
    # Recorded series by name too: an expression can evaluate fine while the rule fails
    # to write it (static rule labels collapsing two series into one label set), and
    # then every panel or alert reading the recorded name is empty.
    queries += [promql.Query("recorded series", name, name, source="rules")
                for name in sorted(promql.recorded_names())]

    assert_queries_answer(stack, queries, RETRY_TIMEOUT)


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

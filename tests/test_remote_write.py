"""Scale-out through remote_write, for real: two Prometheus 2.42 scraping one exporter
(an HA pair), one of them remote-writing to a third started with
--web.enable-remote-write-receiver, as a stand-in for Mimir or Thanos.

The scraper runs the shipped prometheus/prometheus.remote-write.yml (external labels,
the repository's rules; only addresses and intervals changed for the test), and the
receiver has no rules and scrapes nothing. Then:
- every dashboard expression, every rule expression and every recorded series answers on
  the receiver (the rules run on the scraper; their series arrive by remote_write);
- the HA pair costs no extra probe: the fake upstream sees the exporter's timer, not the
  scrapes of two Prometheus.

The second replica does not remote-write here: a plain Prometheus receiver keeps both
copies (Mimir's HA tracker or Thanos Query's deduplication keep one; docs/bundle.md).
Everything listens on 127.0.0.1 and is killed at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml

from exporter.catalogue import default_probes
from exporter.fake import FakeUpstream
from tests import promql
from tests.conftest import clean_env, free_port
from tests.prom import Processes, Prometheus, assert_queries_answer, get
from tests.tools import require_tool

ROOT = promql.ROOT
SCRAPER_CONFIG = ROOT / "prometheus" / "prometheus.remote-write.yml"
DASHBOARD = ROOT / "grafana" / "dashboards" / "openai-api.json"
JOB = "openai-exporter"
PROBE_INTERVAL = 2.0  # seconds; the Prometheus pair scrapes every second
# The default probes, all probed every interval (PROBE_MODE=all).
ENDPOINTS = len(default_probes("openai", heavy=False))
SETTLE_TIMEOUT = 120.0
RETRY_TIMEOUT = 30.0


@dataclass
class Stack:
    scraper: Prometheus  # replica a: scrapes, evaluates the rules, remote-writes
    partner: Prometheus  # replica b: scrapes the same exporter
    receiver: Prometheus  # receives, stores, answers queries; no rules, no scrapes
    fake: FakeUpstream
    both_scraping_since: float  # Unix time both replicas had scraped the exporter


def scraper_config(exporter: str, receiver: str | None, replica: str) -> str:
    """The shipped scraper config, pointed at the test's processes."""
    doc = yaml.safe_load(SCRAPER_CONFIG.read_text())
    doc["global"].update(scrape_interval="1s", evaluation_interval="1s")
    doc["global"]["external_labels"]["__replica__"] = replica
    doc["rule_files"] = [str(SCRAPER_CONFIG.parent / p) for p in doc["rule_files"]]
    (job,) = [j for j in doc["scrape_configs"] if j["job_name"] == JOB]
    job["static_configs"] = [{"targets": [exporter]}]
    if receiver is None:
        del doc["remote_write"]
    else:
        (remote,) = doc["remote_write"]
        remote["url"] = f"http://{receiver}/api/v1/write"
        remote["queue_config"] = {"batch_send_deadline": "1s"}  # default 5 s: a slower test
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("remote-write")
    exporter_port = free_port()
    procs = Processes(tmp, ROOT, clean_env())
    fake = FakeUpstream(profile="chaos", seed=1, time_scale=0.25).start()

    def start_prometheus(name: str, config: str, *flags: str) -> Prometheus:
        port = free_port()
        path = tmp / f"{name}.yml"
        path.write_text(config)
        procs.start(name, [prometheus, f"--config.file={path}",
                           f"--storage.tsdb.path={tmp / name}",
                           f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
                           *flags])
        prom = Prometheus(f"http://127.0.0.1:{port}")
        procs.wait(f"{name} /-/ready", lambda: get(f"{prom.base}/-/ready")[0] == 200, 30)
        return prom

    try:
        procs.start("exporter", [sys.executable, "-m", "exporter"], {
            "OPENAI_API_KEY": "sk-test-remote-write-0000",
            "OPENAI_BASE_URL": fake.base_url,
            "PROBE_INTERVAL_SEC": str(PROBE_INTERVAL),
            "PROBE_MODE": "all",
            "HTTP_TIMEOUT_MS": "5000",
            # The organisation row and rules: the fake's admin API, polled every second.
            "OPENAI_ADMIN_KEY": "sk-admin-test-remote-write-0000",
            "USAGE_POLL_INTERVAL_SEC": "1",
            "LISTEN_ADDRESS": f"127.0.0.1:{exporter_port}",
        })
        procs.wait("the exporter's /healthz", lambda: get(
            f"http://127.0.0.1:{exporter_port}/healthz")[0] == 200, 30)

        receiver = start_prometheus("receiver", "global:\n  scrape_interval: 1s\n",
                                    "--web.enable-remote-write-receiver")
        exporter = f"127.0.0.1:{exporter_port}"
        receiver_address = receiver.base.removeprefix("http://")
        scraper = start_prometheus("scraper-a", scraper_config(exporter, receiver_address,
                                                                "replica-a"))
        partner = start_prometheus("scraper-b", scraper_config(exporter, None, "replica-b"))

        def scraped(prom: Prometheus) -> bool:
            return bool(prom.result(f'up{{job="{JOB}"}} == 1'))

        procs.wait("both replicas scraping", lambda: scraped(scraper) and scraped(partner), 30)
        since = time.time()

        def settled() -> bool:
            # Enough samples on the receiver for every rate(), and the scraper's recorded
            # series arrived there.
            scrapes = receiver.result(f'count_over_time(up{{job="{JOB}"}}[5m])')
            if not scrapes or float(scrapes[0]["value"][1]) < 20:
                return False
            return bool(receiver.result("target:openai_requests_errors_per_requests:ratio_rate5m"))

        procs.wait("20 scrapes and the recorded series on the receiver", settled,
                   SETTLE_TIMEOUT)
        yield Stack(scraper, partner, receiver, fake, since)
    finally:
        procs.stop()
        fake.stop()


def test_every_dashboard_and_rule_query_answers_on_the_receiver(stack: Stack) -> None:
    queries = [q for q in promql.dashboard_queries(DASHBOARD) if q.datasource == "prometheus"]
    assert len(queries) > 25
    # The rule expressions too: with an agent that evaluates no rules (Alloy), they run on
    # the receiver's ruler, against the remote-written raw series.
    queries += promql.rule_queries()
    queries += [promql.Query("recorded series", name, name, source="rules")
                for name in sorted(promql.recorded_names())]
    assert_queries_answer(stack.receiver, queries, RETRY_TIMEOUT)


def test_recorded_series_come_from_the_scraper_with_its_external_labels(stack: Stack) -> None:
    status, body = get(f"{stack.receiver.base}/api/v1/rules")
    assert status == 200 and '"groups":[]' in body, body  # the receiver evaluates nothing
    for name in sorted(promql.recorded_names()):
        rows = stack.receiver.result(name)
        assert rows, name
        for row in rows:
            labels = row["metric"]
            assert labels.get("cluster") == "eu-west-1", (name, labels)
            assert labels.get("__replica__") == "replica-a", (name, labels)
    # The exporter's own `region` survives: no external label overrides it.
    rows = stack.receiver.result(f'openai_probe_success{{job="{JOB}"}}')
    assert rows and {r["metric"]["region"] for r in rows} == {"us-west-1"}
    assert {r["metric"]["cluster"] for r in rows} == {"eu-west-1"}


def test_an_ha_pair_of_prometheus_costs_no_extra_probe(stack: Stack) -> None:
    window = time.time() - stack.both_scraping_since
    assert window >= 15, window
    seconds = int(window)
    scrapes = sum(
        float(prom.result(f'count_over_time(up{{job="{JOB}"}}[{seconds}s])')[0]["value"][1])
        for prom in (stack.scraper, stack.partner))
    end = stack.both_scraping_since + seconds
    probes = [r for r in stack.fake.requests
              if stack.both_scraping_since <= r["ts"] <= end
              and not r["path"].startswith("/v1/organization/")]  # the usage poller's reads
    ticks = seconds / PROBE_INTERVAL
    # The pair scraped about twice a second, four times the probe ticks ...
    assert scrapes >= 3 * ticks, (scrapes, ticks)
    # ... and the upstream saw the timer's probes only: at most every endpoint once a tick
    # (two ticks of slack for the window's edges). Probing on scrape would be at least
    # ENDPOINTS x scrapes, twice as much per replica.
    assert 0 < len(probes) <= ENDPOINTS * (ticks + 2), (len(probes), ticks, scrapes)

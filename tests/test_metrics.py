"""Metric families after probes: names, labels, values, exposition lint."""

from __future__ import annotations

import subprocess

import pytest
import requests
from prometheus_client import (
    disable_created_metrics, enable_created_metrics, generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families

from exporter.metrics import ExporterMetrics
from exporter.result import ProbeResult, RateLimits
from exporter.settings import Settings, TargetSettings
from tests.conftest import clean_env
from tests.test_main import Daemon
from tests.tools import require_tool

T = dict(target="openai", region="us-west-1")


@pytest.fixture(autouse=True)
def _as_in_main():
    """What main() does for the process before it builds ExporterMetrics (the switch is
    process-wide, so it is put back for the tests that follow)."""
    disable_created_metrics()
    yield
    enable_created_metrics()


def result(**kw) -> ProbeResult:
    base = dict(T, endpoint="chat", model="gpt-4o-mini", started_at=1_700_000_000.0,
                duration_seconds=0.42, success=True)
    base.update(kw)
    return ProbeResult(**base)


def settings() -> Settings:
    return Settings(targets=(TargetSettings(
        name="openai", provider="openai", base_url="http://x/v1", region="us-west-1",
        models={"chat": "gpt-4o-mini", "embeddings": "text-embedding-3-small"},
        probes=("chat", "embeddings", "models")),), interval_seconds=30)


def test_success_observation():
    m = ExporterMetrics()
    m.observe(result(input_tokens=8, output_tokens=2, total_tokens=10, cost_usd=2.4e-6,
                     response_bytes=321, rate_limits=RateLimits(
                         requests_limit=500, requests_remaining=499, requests_reset_seconds=0.12,
                         tokens_limit=200000, tokens_remaining=199990,
                         tokens_reset_seconds=360)))
    g = m.registry.get_sample_value
    lab = dict(T, endpoint="chat", model="gpt-4o-mini")
    assert g("openai_requests_total", dict(lab, status="success", error_type="none")) == 1
    assert g("openai_request_duration_seconds_count", dict(lab, status="success")) == 1
    assert g("openai_request_duration_seconds_bucket", dict(lab, status="success", le="0.5")) == 1
    assert g("openai_request_duration_seconds_bucket", dict(lab, status="success", le="0.25")) == 0
    assert g("openai_tokens_total", dict(lab, token_type="input")) == 8
    assert g("openai_tokens_total", dict(lab, token_type="output")) == 2
    assert g("openai_tokens_total", dict(lab, token_type="total")) == 10
    assert g("openai_cost_usd_total", lab) == pytest.approx(2.4e-6)
    assert g("openai_response_bytes_total", dict(T, endpoint="chat")) == 321
    assert g("openai_probe_success", lab) == 1
    assert g("openai_probe_last_run_timestamp_seconds", dict(T, endpoint="chat")) == (
        pytest.approx(1_700_000_000.42))
    assert g("openai_probe_last_success_timestamp_seconds", dict(T, endpoint="chat")) == (
        pytest.approx(1_700_000_000.42))
    rl = dict(T, model="gpt-4o-mini")
    assert g("openai_rate_limit_requests_limit", rl) == 500
    assert g("openai_rate_limit_requests_remaining", rl) == 499
    assert g("openai_rate_limit_requests_reset_seconds", rl) == 0.12
    assert g("openai_rate_limit_tokens_limit", rl) == 200000
    assert g("openai_rate_limit_tokens_remaining", rl) == 199990
    assert g("openai_rate_limit_tokens_reset_seconds", rl) == 360
    assert g("openai_exporter_build_info", {"version": __import__("exporter").__version__}) == 1


def test_failure_keeps_last_success_and_rate_limits():
    m = ExporterMetrics()
    m.observe(result(rate_limits=RateLimits(requests_remaining=10)))
    m.observe(result(started_at=1_700_000_100.0, success=False, error_type="rate_limited",
                     http_status=429))
    g = m.registry.get_sample_value
    lab = dict(T, endpoint="chat", model="gpt-4o-mini")
    assert g("openai_requests_total", dict(lab, status="error", error_type="rate_limited")) == 1
    assert g("openai_request_duration_seconds_count", dict(lab, status="error")) == 1
    assert g("openai_probe_success", lab) == 0
    assert g("openai_probe_last_success_timestamp_seconds", dict(T, endpoint="chat")) == (
        pytest.approx(1_700_000_000.42))
    assert g("openai_probe_last_run_timestamp_seconds", dict(T, endpoint="chat")) == (
        pytest.approx(1_700_000_100.42))
    # the 429 carried no headers: the last known value stays, not a false 0
    assert g("openai_rate_limit_requests_remaining", dict(T, model="gpt-4o-mini")) == 10
    assert g("openai_tokens_total", dict(lab, token_type="total")) is None


def test_configure_precreates_series():
    m = ExporterMetrics()
    m.configure(settings())
    g = m.registry.get_sample_value
    lab = dict(T, endpoint="embeddings", model="text-embedding-3-small")
    assert g("openai_probe_interval_seconds") == 30
    for error_type in ("timeout", "quota_exceeded", "invalid_response"):
        assert g("openai_requests_total", dict(lab, status="error", error_type=error_type)) == 0
    assert g("openai_requests_total", dict(T, endpoint="models", model="", status="success",
                                           error_type="none")) == 0
    assert g("openai_tokens_total", dict(lab, token_type="input")) == 0
    assert g("openai_cost_usd_total", lab) == 0
    # model-less endpoints have no token or cost series
    assert g("openai_cost_usd_total", dict(T, endpoint="models", model="")) is None


def test_no_created_series_and_no_timestamps():
    m = ExporterMetrics()
    m.configure(settings())
    m.observe(result())
    text = generate_latest(m.registry).decode()
    assert "_created" not in text
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    assert samples and all(s.timestamp is None for s in samples)


def test_the_daemon_serves_no_created_series():
    enable_created_metrics()  # as in a fresh process: main() must switch them off itself
    d = Daemon(clean_env(DEMO="1", PROBE_INTERVAL_SEC="60"))
    try:
        d.wait_ready()
        text = requests.get(d.url + "/metrics", timeout=5).text
    finally:
        d.stop()
    # configure() pre-creates the counters and histograms, each of which has a _created
    assert 'openai_requests_total{' in text and "openai_request_duration_seconds_count{" in text
    assert "_created" not in text


def test_promtool_check_metrics_is_clean():
    promtool = require_tool("promtool")
    m = ExporterMetrics()
    m.configure(settings())
    m.observe(result(input_tokens=1, output_tokens=1, total_tokens=2, cost_usd=1e-6,
                     rate_limits=RateLimits(requests_limit=1, tokens_reset_seconds=1)))
    m.observe(result(success=False, error_type="timeout"))
    m.observe(result(ttft_seconds=0.3, tpot_seconds=0.01,
                     phases={"connect": 0.001, "tls": 0.002, "server": 0.2}))
    m.skip("openai", "chat", "still_running")
    proc = subprocess.run([promtool, "check", "metrics"], input=generate_latest(m.registry),
                          capture_output=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout == b"" and proc.stderr == b"", proc


def test_stream_figures_and_phases():
    m = ExporterMetrics()
    m.observe(result(endpoint="chat", ttft_seconds=0.31, tpot_seconds=0.012,
                     phases={"connect": 0.002, "tls": 0.01, "server": 0.2, "transfer": 0.05}))
    g = m.registry.get_sample_value
    lab = dict(T, endpoint="chat", model="gpt-4o-mini")
    assert g("openai_time_to_first_token_seconds_count", lab) == 1
    assert g("openai_time_to_first_token_seconds_sum", lab) == pytest.approx(0.31)
    assert g("openai_time_to_first_token_seconds_bucket", dict(lab, le="0.5")) == 1
    assert g("openai_time_to_first_token_seconds_bucket", dict(lab, le="0.25")) == 0
    assert g("openai_time_per_output_token_seconds_bucket", dict(lab, le="0.015")) == 1
    assert g("openai_time_per_output_token_seconds_bucket", dict(lab, le="0.01")) == 0
    ph = dict(T, endpoint="chat")
    assert g("openai_probe_phase_seconds", dict(ph, phase="server")) == pytest.approx(0.2)
    # a phase the probe did not go through reads 0, not the value of an older probe
    assert g("openai_probe_phase_seconds", dict(ph, phase="first_token")) == 0
    m.observe(result(endpoint="chat", phases={"connect": 0.001, "server": 0.1}))
    assert g("openai_probe_phase_seconds", dict(ph, phase="tls")) == 0
    assert g("openai_probe_phase_seconds", dict(ph, phase="server")) == pytest.approx(0.1)
    # a probe that was not timed by phase leaves the last probe's phases
    m.observe(result(endpoint="chat"))
    assert g("openai_probe_phase_seconds", dict(ph, phase="server")) == pytest.approx(0.1)
    # without stream figures the stream histograms are not touched
    assert g("openai_time_to_first_token_seconds_count", lab) == 1


@pytest.mark.parametrize("bad", [
    dict(ttft_seconds=-0.1), dict(tpot_seconds=float("nan")), dict(ttft_seconds=float("inf")),
    dict(phases={"server": -1.0}), dict(phases={"dns": 0.1}),
])
def test_probe_result_refuses_impossible_stream_figures(bad):
    with pytest.raises(ValueError):
        result(**bad)


def test_skipped_probes_by_reason():
    m = ExporterMetrics()
    m.configure(settings())
    g = m.registry.get_sample_value
    for reason in ("still_running", "budget"):
        assert g("openai_probe_skipped_total", dict(target="openai", endpoint="models",
                                                    reason=reason)) == 0
    m.skip("openai", "chat", "still_running")
    assert g("openai_probe_skipped_total", dict(target="openai", endpoint="chat",
                                                reason="still_running")) == 1
    with pytest.raises(ValueError):
        m.skip("openai", "chat", "because")


def test_configure_precreates_stream_interrupted():
    m = ExporterMetrics()
    m.configure(settings())
    assert m.registry.get_sample_value("openai_requests_total", dict(
        T, endpoint="chat", model="gpt-4o-mini", status="error",
        error_type="stream_interrupted")) == 0

"""Every error class through the fake upstream over a real socket."""

from __future__ import annotations

import socket

import pytest

from exporter.catalogue import default_probes
from exporter.prober import Prober
from tests.conftest import CANARY_KEY, make_target

TIMEOUT = 1.0

FAULT_CLASSES = [
    ("hang", "timeout", None),
    ("slow_body", "timeout", 200),
    ("reset", "network", None),
    ("reset_mid_body", "network", 200),
    ("malformed", "invalid_response", 200),
    ("empty_body", "invalid_response", 200),
    ("wrong_shape", "invalid_response", 200),
    ("html_200", "invalid_response", 200),
    ("bad_request", "bad_request", 400),
    ("unauthorized", "unauthorized", 401),
    ("forbidden", "forbidden", 403),
    ("not_found", "not_found", 404),
    ("rate_limited", "rate_limited", 429),
    ("rate_limited_tokens", "rate_limited", 429),
    ("quota", "quota_exceeded", 429),
    ("quota_legacy", "quota_exceeded", 429),
    ("billing", "quota_exceeded", 429),
    ("server_error", "provider_error", 500),
    ("bad_gateway_html", "provider_unavailable", 502),
    ("bad_gateway_json", "provider_unavailable", 502),
    ("overloaded", "provider_unavailable", 503),
    ("gateway_timeout", "provider_unavailable", 504),
]


@pytest.mark.parametrize("endpoint", default_probes("openai", heavy=False))
def test_every_default_probe_succeeds(fake, endpoint):
    r = Prober(make_target(fake.base_url), timeout_seconds=5).run(endpoint)
    assert r.success, r
    assert r.http_status == 200 and r.request_id.startswith("req_")
    assert r.response_bytes > 0


def test_model_probes_report_tokens_and_rate_limits(fake):
    p = Prober(make_target(fake.base_url), timeout_seconds=5,
               prices={"gpt-4o-mini": {"input": 0.15, "output": 0.6}})
    first, second = p.run("chat"), p.run("chat")
    assert first.total_tokens == first.input_tokens + first.output_tokens > 0
    assert first.cost_usd > 0
    lim = second.rate_limits
    assert None not in (lim.requests_limit, lim.requests_remaining, lim.requests_reset_seconds,
                        lim.tokens_limit, lim.tokens_remaining, lim.tokens_reset_seconds)
    assert second.rate_limits.requests_remaining < first.rate_limits.requests_remaining


@pytest.mark.parametrize("fault,error_type,http_status", FAULT_CLASSES)
def test_fault_classification(fake, fault, error_type, http_status):
    fake.set_fault("chat", fault)
    r = Prober(make_target(fake.base_url), timeout_seconds=TIMEOUT).run("chat")
    assert (r.success, r.error_type, r.http_status) == (False, error_type, http_status), r
    assert r.duration_seconds < TIMEOUT * 2.5
    assert CANARY_KEY not in r.error_message and CANARY_KEY[8:20] not in r.error_message


@pytest.mark.parametrize("fault,error_type", [
    ("response_failed", "provider_error"), ("response_incomplete", "none")])
def test_responses_in_body_status(fake, fault, error_type):
    fake.set_fault("responses", fault)
    r = Prober(make_target(fake.base_url), timeout_seconds=5).run("responses")
    assert (r.error_type, r.http_status) == (error_type, 200)


def test_delay_is_measured(fake):
    fake.set_fault("models", "delay", delay_ms=300)
    r = Prober(make_target(fake.base_url), timeout_seconds=5).run("models")
    assert r.success and 0.3 <= r.duration_seconds < 2.0


def test_wrong_key_is_unauthorized_and_redacted(fake):
    fake_with_key = type(fake)(api_key="sk-the-right-key-000000000000").start()
    try:
        r = Prober(make_target(fake_with_key.base_url), timeout_seconds=5).run("models")
    finally:
        fake_with_key.stop()
    assert r.error_type == "unauthorized" and r.http_status == 401
    assert "Incorrect API key provided: sk-***" in r.error_message
    assert CANARY_KEY[:8] not in r.error_message and CANARY_KEY[-4:] not in r.error_message


def test_flapping_recovers(fake):
    fake.set_fault("embeddings", "server_error", count=2)
    p = Prober(make_target(fake.base_url), timeout_seconds=5)
    assert [p.run("embeddings").error_type for _ in range(3)] == [
        "provider_error", "provider_error", "none"]


def test_connection_refused_is_network():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the probe: nothing listens
    r = Prober(make_target(f"http://127.0.0.1:{port}/v1"), timeout_seconds=2).run("models")
    assert (r.error_type, r.http_status, r.error_message) == (
        "network", None, "connection refused")


def test_azure_through_fake(fake):
    t = make_target(fake.root_url, provider="azure", api_version="2024-10-21",
                    models={"chat": "gpt-4o-mini", "embeddings": "text-embedding-3-small"})
    p = Prober(t, timeout_seconds=5)
    for endpoint in ("chat", "embeddings", "models"):
        assert p.run(endpoint).success, endpoint
    missing_version = Prober(make_target(fake.root_url, provider="azure", api_version=""),
                             timeout_seconds=5).run("models")
    assert missing_version.error_type == "not_found"


def test_requests_sent_are_tiny_and_never_retried(fake):
    p = Prober(make_target(fake.base_url), timeout_seconds=5)
    fake.set_fault("chat", "server_error")
    p.run("chat")
    chat_calls = [r for r in fake.requests if r["endpoint"] == "chat"]
    assert len(chat_calls) == 1
    assert chat_calls[0]["json"]["max_completion_tokens"] == 16
    p.run("responses")
    resp = [r for r in fake.requests if r["endpoint"] == "responses"][0]
    assert resp["json"]["store"] is False


def test_trickling_body_is_cut_at_the_deadline(fake):
    # each 16-byte chunk arrives well within the read timeout; only a total deadline sees it
    fake.set_fault("chat", "trickle_body", delay_ms=150)
    r = Prober(make_target(fake.base_url), timeout_seconds=TIMEOUT).run("chat")
    assert (r.error_type, r.http_status) == ("timeout", 200)
    assert TIMEOUT <= r.duration_seconds < TIMEOUT + 0.5

"""Prober pieces that need no socket: durations, redaction, classification, headers."""

from __future__ import annotations

import json

import pytest
import requests
import responses

from exporter.durations import parse_duration
from exporter.errors import classify_error, classify_status, failed_response
from exporter.prober import Prober, parse_rate_limits
from exporter.redact import redact
from exporter.result import RateLimits
from exporter.settings import TargetSettings

CANARY = "sk-canary-Zq8rT3vB9xW2mN5kL7pJ"


def target(**kw) -> TargetSettings:
    base = dict(name="openai", provider="openai", base_url="https://api.test/v1", api_key=CANARY,
                models={"chat": "gpt-4o-mini", "embeddings": "text-embedding-3-small",
                        "moderation": "omni-moderation-latest", "image": "gpt-image-1-mini"},
                probes=("chat", "responses", "embeddings", "models"))
    base.update(kw)
    return TargetSettings(**base)


PRICES = {"gpt-4o-mini": {"input": 0.15, "output": 0.60}}


@pytest.mark.parametrize("text,seconds", [
    ("12ms", 0.012), ("1s", 1.0), ("6m0s", 360.0), ("1m12s", 72.0), ("1h2m3.5s", 3723.5),
    ("8.64s", 8.64), ("0s", 0.0), ("20ms", 0.02), ("3.114s", 3.114), ("500us", 0.0005),
    ("7", 7.0), ("1.5", 1.5),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "x", "-1", "5 s", "1d", "m", "ms", "1.2.3s", "s1"])
def test_parse_duration_rejects_garbage(text):
    assert parse_duration(text) is None


def test_m_is_minutes_and_ms_is_milliseconds():
    assert parse_duration("1m") == 60.0
    assert parse_duration("1ms") == 0.001
    assert parse_duration("2m30ms") == pytest.approx(120.03)


@pytest.mark.parametrize("text", [
    f"Incorrect API key provided: {CANARY}.",
    "Incorrect API key provided: sk-canar*****L7pJ. You can find your API key at ...",
    f"echo: Authorization: Bearer {CANARY}",
    f"proxy said api-key: {CANARY}",
])
def test_redact_removes_keys_and_masked_echoes(text):
    out = redact(text, [CANARY])
    assert CANARY not in out
    assert "canar" not in out
    assert "L7pJ" not in out


def test_redact_keeps_ordinary_text():
    assert redact("The model `gpt-4o-mini` does not exist", [CANARY]) == (
        "The model `gpt-4o-mini` does not exist")


@pytest.mark.parametrize("status,error,expected", [
    (400, {"type": "invalid_request_error"}, "bad_request"),
    (422, {}, "bad_request"),
    (401, {"code": "invalid_api_key"}, "unauthorized"),
    (403, {"code": "unsupported_country_region_territory"}, "forbidden"),
    (404, {"code": "model_not_found"}, "not_found"),
    (408, {}, "timeout"),
    (429, {"code": "rate_limit_exceeded", "type": "requests"}, "rate_limited"),
    (429, {"code": "rate_limit_exceeded", "type": "tokens"}, "rate_limited"),
    (429, {"code": "slow_down", "type": "rate_limit_error"}, "rate_limited"),
    (429, {"code": "insufficient_quota", "type": "insufficient_quota"}, "quota_exceeded"),
    (429, {"code": None, "type": "insufficient_quota"}, "quota_exceeded"),
    (429, {"code": "credit_balance_exhausted", "type": "insufficient_quota"}, "quota_exceeded"),
    (429, {"code": "project_spend_limit_exceeded"}, "quota_exceeded"),
    (429, {"code": "organization_usage_limit_exceeded"}, "quota_exceeded"),
    (429, {}, "rate_limited"),
    (429, {"code": "429"}, "rate_limited"),  # Azure: string status as code
    (500, {"type": "server_error"}, "provider_error"),
    (501, {}, "provider_error"),
    (502, {"code": 502, "type": "cf_bad_gateway"}, "provider_unavailable"),
    (503, {"code": "server_is_overloaded"}, "provider_unavailable"),
    (504, {}, "provider_unavailable"),
    (522, {}, "provider_unavailable"),
    (302, {}, "invalid_response"),
])
def test_classify_status(status, error, expected):
    assert classify_status(status, error) == expected
    # One mapping: the same error object without its status (mid-stream, or in a failed
    # Responses body) is classified as that HTTP answer is.
    if error.get("code") is not None or error.get("type") is not None:
        assert classify_error(error) == expected


@pytest.mark.parametrize("code, expected", [
    ("server_error", "provider_error"), (None, "provider_error"),
    ("rate_limit_exceeded", "rate_limited"), ("insufficient_quota", "quota_exceeded"),
    ("invalid_prompt", "bad_request"), ("vector_store_timeout", "provider_error"),
])
def test_a_failed_response_is_classified_by_its_code(code, expected):
    assert failed_response(code) == expected


def test_rate_limit_headers():
    lim = parse_rate_limits({
        "x-ratelimit-limit-requests": "10000", "x-ratelimit-remaining-requests": "9999",
        "x-ratelimit-reset-requests": "8.64s", "x-ratelimit-limit-tokens": "200000",
        "x-ratelimit-remaining-tokens": "199978", "x-ratelimit-reset-tokens": "6m0s",
    })
    assert (lim.requests_limit, lim.requests_remaining, lim.requests_reset_seconds) == (
        10000, 9999, pytest.approx(8.64))
    assert (lim.tokens_limit, lim.tokens_remaining, lim.tokens_reset_seconds) == (
        200000, 199978, 360.0)


def test_rate_limit_headers_unknown_values_are_none():
    lim = parse_rate_limits({"x-ratelimit-remaining-tokens": "-1",  # Azure "unknown"
                             "x-ratelimit-limit-tokens": "lots",
                             "x-ratelimit-reset-tokens": "soon"})
    assert lim == RateLimits()  # every field None


CHAT_OK = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "pong"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}}


@responses.activate
def test_success_tokens_cost_and_request_shape():
    responses.post("https://api.test/v1/chat/completions", json=CHAT_OK,
                   headers={"x-request-id": "req_abc", "x-ratelimit-remaining-requests": "5"})
    r = Prober(target(org_id="org-1", project_id="proj_1"), timeout_seconds=5,
               prices=PRICES).run("chat")
    assert r.success and r.error_type == "none" and r.http_status == 200
    assert (r.input_tokens, r.output_tokens, r.total_tokens) == (8, 2, 10)
    assert r.cost_usd == pytest.approx((8 * 0.15 + 2 * 0.60) / 1e6)
    assert r.request_id == "req_abc" and r.rate_limits.requests_remaining == 5
    assert r.model == "gpt-4o-mini" and r.response_bytes > 0
    sent = responses.calls[0].request
    assert sent.headers["Authorization"] == f"Bearer {CANARY}"
    assert sent.headers["OpenAI-Organization"] == "org-1"
    assert sent.headers["OpenAI-Project"] == "proj_1"
    body = json.loads(sent.body)
    assert body["max_completion_tokens"] == 16 and body["model"] == "gpt-4o-mini"


@responses.activate
def test_responses_probe_sends_store_false_and_accepts_incomplete():
    responses.post("https://api.test/v1/responses", json={
        "id": "resp_1", "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "usage": {"input_tokens": 5, "output_tokens": 16, "total_tokens": 21}})
    r = Prober(target(), timeout_seconds=5).run("responses")
    body = json.loads(responses.calls[0].request.body)
    assert body["store"] is False and body["max_output_tokens"] == 16
    assert r.success and r.total_tokens == 21


@pytest.mark.parametrize("payload,expected", [
    ({"id": "resp_1", "status": "failed", "error": {"code": "server_error"}}, "provider_error"),
    ({"id": "resp_1", "status": "failed", "error": {"code": "rate_limit_exceeded"}},
     "rate_limited"),
    ({"id": "resp_1", "status": "incomplete", "incomplete_details": {"reason": "content_filter"}},
     "provider_error"),
])
@responses.activate
def test_responses_failed_in_body(payload, expected):
    responses.post("https://api.test/v1/responses", json=payload)
    assert Prober(target(), timeout_seconds=5).run("responses").error_type == expected


@pytest.mark.parametrize("body,content_type", [
    (b'{"id": "chatcmpl-1", "choices": [', "application/json"),
    (b"", "application/json"),
    (b"\xff\xfe{}", "application/json"),
    (b'{"id": "x", "choices": [], "usage": {}}', "application/json"),
    (b'{"id": "x", "choices": [{}]}', "application/json"),
    (b'{"id": "x", "choices": [{}], "usage": {"prompt_tokens": "8", "completion_tokens": 1,'
     b' "total_tokens": 9}}', "application/json"),
    (b"[]", "application/json"),
    (b"<html><title>Login</title></html>", "text/html"),
])
@responses.activate
def test_invalid_response(body, content_type):
    responses.post("https://api.test/v1/chat/completions", body=body, content_type=content_type)
    r = Prober(target(), timeout_seconds=5).run("chat")
    assert (r.success, r.error_type, r.http_status) == (False, "invalid_response", 200)
    assert r.total_tokens == 0 and r.cost_usd == 0


@responses.activate
def test_error_message_is_redacted_and_bounded():
    responses.post("https://api.test/v1/chat/completions", status=401, json={"error": {
        "message": f"Incorrect API key provided: {CANARY[:8]}*****{CANARY[-4:]}. " + "x" * 999,
        "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})
    r = Prober(target(), timeout_seconds=5).run("chat")
    assert r.error_type == "unauthorized" and r.http_status == 401
    assert CANARY[:8] not in r.error_message and CANARY[-4:] not in r.error_message
    assert r.error_message.startswith("HTTP 401: Incorrect API key provided: sk-***")
    assert len(r.error_message) <= 300


@responses.activate
def test_html_502_message_uses_title():
    responses.post("https://api.test/v1/chat/completions", status=502, content_type="text/html",
                   body="<html><head><title>502 Bad Gateway</title></head><body>cloudflare")
    r = Prober(target(), timeout_seconds=5).run("chat")
    assert r.error_type == "provider_unavailable"
    assert r.error_message == "HTTP 502: 502 Bad Gateway"


@responses.activate
def test_vllm_string_error_body():
    responses.post("https://api.test/v1/chat/completions", status=401,
                   json={"error": "Unauthorized"})
    r = Prober(target(provider="openai_compatible"), timeout_seconds=5).run("chat")
    assert r.error_type == "unauthorized" and r.error_message == "HTTP 401: Unauthorized"


@responses.activate
def test_redirect_is_not_followed():
    responses.get("https://api.test/v1/models", status=302,
                  headers={"Location": "https://elsewhere.test/steal"})
    r = Prober(target(), timeout_seconds=5).run("models")
    assert r.error_type == "invalid_response" and len(responses.calls) == 1


@responses.activate
def test_connection_error_is_network_and_timeout_is_timeout():
    responses.get("https://api.test/v1/models", body=requests.ConnectionError("Connection refused"))
    responses.post("https://api.test/v1/chat/completions", body=requests.ReadTimeout("slow"))
    p = Prober(target(), timeout_seconds=5)
    r = p.run("models")
    assert (r.error_type, r.http_status, r.error_message) == ("network", None, "connection refused")
    assert p.run("chat").error_type == "timeout"


@responses.activate
def test_azure_paths_and_api_key_header():
    base = "https://res.openai.azure.com"
    responses.post(f"{base}/openai/deployments/my-gpt/chat/completions", json=CHAT_OK)
    responses.get(f"{base}/openai/models", json={"object": "list", "data": []})
    t = target(provider="azure", base_url=base, api_version="2024-10-21",
               models={"chat": "my-gpt"})
    p = Prober(t, timeout_seconds=5)
    assert p.run("chat").success and p.run("models").success
    for call in responses.calls:
        assert "api-version=2024-10-21" in call.request.url
        assert call.request.headers["api-key"] == CANARY
        assert "Authorization" not in call.request.headers


@responses.activate
def test_compatible_target_without_key_sends_no_authorization():
    responses.get("https://api.test/v1/models", json={"object": "list", "data": []})
    Prober(target(provider="openai_compatible", api_key=""), timeout_seconds=5).run("models")
    assert "Authorization" not in responses.calls[0].request.headers


@responses.activate
def test_unknown_model_price_warns_once(caplog):
    responses.post("https://api.test/v1/chat/completions", json=CHAT_OK)
    p = Prober(target(models={"chat": "mystery-model"}), timeout_seconds=5, prices=PRICES)
    with caplog.at_level("WARNING", logger="exporter.pricing"):
        assert p.run("chat").cost_usd == 0 and p.run("chat").cost_usd == 0
    assert [r.message for r in caplog.records].count(
        "no price for model 'mystery-model': its probes add no cost; add it under `prices:` "
        "in the config file") == 1


@responses.activate
def test_gzip_body_is_decoded():
    import gzip
    responses.post("https://api.test/v1/chat/completions", body=gzip.compress(
        json.dumps(CHAT_OK).encode()), content_type="application/json",
        headers={"Content-Encoding": "gzip"})
    r = Prober(target(), timeout_seconds=5).run("chat")
    assert r.success and r.total_tokens == 10

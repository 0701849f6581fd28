"""The fake OpenAI upstream, exercised over real sockets with requests."""

from __future__ import annotations

import ast
import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

import exporter.fake
from exporter.catalogue import CATALOGUE, ResponseFailed, ShapeError
from exporter.durations import parse_duration
from exporter.fake import (
    CHAOS_LATENCY_MS,
    ENDPOINTS,
    FAULTS,
    MODELS,
    FakeUpstream,
    go_duration,
    mask_key,
)
from exporter.fake.faults import FaultBook
from tests import conftest

KEY = "sk-proj-VKMIsabcdefghijklmnopwjh3"
AUTH = {"Authorization": f"Bearer {KEY}"}
ROOT = Path(__file__).resolve().parent.parent
REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")
RL_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-limit-tokens",
              "x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens",
              "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")


@pytest.fixture
def fake():
    with FakeUpstream(api_key=KEY) as server:
        yield server


def call(fake: FakeUpstream, endpoint: str, *, body: Any = ..., headers: dict | None = None,
         params: dict | None = None, timeout: float = 5, model: str | None = None,
         session: Any = requests) -> requests.Response:
    """Send what the exporter's catalogue sends for `endpoint`, with overrides."""
    probe = CATALOGUE[endpoint]
    if body is ...:
        kind = probe.model_kind or ""
        body = probe.body(model or conftest.MODELS[kind]) if probe.body else None
    return session.request(
        probe.method, fake.base_url + probe.path, json=body, timeout=timeout,
        params=probe.params if params is None else params,
        headers={**AUTH, **probe.headers, **(headers or {})})


def sse_events(resp: requests.Response) -> list[tuple[str, str]]:
    """(event name, data) of each event of a text/event-stream answer the fake sent (LF
    line ends only, one data line per event: what the fake writes, parsed on its own)."""
    assert resp.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = []
    for block in resp.content.decode().split("\n\n"):
        if not block:
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        assert set(fields) <= {"event", "data"}, block
        events.append((fields.get("event", "message"), fields["data"]))
    return events


def error_of(resp: requests.Response) -> dict:
    assert resp.headers["content-type"] == "application/json"
    err = resp.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    return err


# ------------------------------------------------------------------ helpers


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (0.0004, "0s"), (0.006, "6ms"), (0.02, "20ms"), (0.12, "120ms"),
    (1, "1s"), (8.64, "8.64s"), (3.114, "3.114s"), (59.995, "59.995s"), (60, "1m0s"),
    (72, "1m12s"), (360, "6m0s"), (3723.5, "1h2m3.5s"),
])
def test_go_duration_matches_go_and_parses_back(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(round(seconds, 3))


def test_mask_key_keeps_first_eight_and_last_four() -> None:
    assert mask_key("sk-VKMIsXXXXXXXXXXXXXXXXwjh3") == "sk-VKMIs*****wjh3"
    assert mask_key("short-key") == "sho*****"
    assert mask_key("abc") == "*****"


# ------------------------------------------------------------------ happy path


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_every_endpoint_answers_spec_shaped_json(fake: FakeUpstream, endpoint: str) -> None:
    resp = call(fake, endpoint)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert REQUEST_ID.match(resp.headers["x-request-id"])
    assert resp.headers["openai-version"] == "2020-10-01"
    assert resp.headers["openai-processing-ms"].isdigit()
    for name in RL_HEADERS:
        assert name in resp.headers
    # The exporter's own shape checks accept every happy answer.
    CATALOGUE[endpoint].check(resp.json())
    assert fake.requests[-1]["endpoint"] == endpoint
    assert fake.requests[-1]["status"] == 200


def test_usage_totals_add_up(fake: FakeUpstream) -> None:
    chat = call(fake, "chat").json()["usage"]
    assert chat["prompt_tokens"] + chat["completion_tokens"] == chat["total_tokens"] > 0
    resp = call(fake, "responses").json()
    assert resp["status"] == "completed" and resp["store"] is False
    usage = resp["usage"]
    assert usage["input_tokens"] + usage["output_tokens"] == usage["total_tokens"] > 0
    emb = call(fake, "embeddings").json()
    assert emb["usage"]["prompt_tokens"] == emb["usage"]["total_tokens"] > 0
    assert len(emb["data"][0]["embedding"]) == 1536
    img = call(fake, "images").json()["usage"]
    assert img["input_tokens"] + img["output_tokens"] == img["total_tokens"]
    dalle = call(fake, "images", model="dall-e-2").json()
    assert "usage" not in dalle and dalle["data"][0]["url"]
    assert "usage" not in call(fake, "moderations").json()


def test_chat_echoes_the_dated_snapshot_and_honours_the_cap(fake: FakeUpstream) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "ping"}],
            "max_completion_tokens": 3}
    answer = call(fake, "chat", body=body).json()
    assert answer["model"] == "gpt-4o-2024-08-06"
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 3


def test_reasoning_model_runs_out_of_a_small_cap(fake: FakeUpstream) -> None:
    # facts §2: a 16-token probe on a reasoning model ends "incomplete" while healthy.
    resp = call(fake, "responses", model="gpt-5-mini").json()
    assert resp["status"] == "incomplete"
    assert resp["incomplete_details"] == {"reason": "max_output_tokens"}
    assert resp["usage"]["output_tokens_details"]["reasoning_tokens"] == 16
    CATALOGUE["responses"].check(resp)  # treated as available
    chat = call(fake, "chat", model="gpt-5-mini").json()
    assert chat["choices"][0]["finish_reason"] == "length"
    assert chat["choices"][0]["message"]["content"] == ""


def test_embeddings_are_deterministic_and_honour_options(fake: FakeUpstream) -> None:
    body = {"model": "text-embedding-3-large", "input": ["a", "b"], "dimensions": 8}
    first, second = call(fake, "embeddings", body=body).json(), call(
        fake, "embeddings", body=body).json()
    assert first["data"] == second["data"] and len(first["data"]) == 2
    assert len(first["data"][1]["embedding"]) == 8
    b64 = call(fake, "embeddings", body={**body, "encoding_format": "base64"}).json()
    assert isinstance(b64["data"][0]["embedding"], str)


def test_models_list_has_known_models_and_shutdown_dates(fake: FakeUpstream) -> None:
    body = call(fake, "models").json()
    assert [m["id"] for m in body["data"]] == list(MODELS)
    dates = {m["id"]: m["shutdown_date"] for m in body["data"]}
    assert any(isinstance(d, str) for d in dates.values())
    assert any(d is None for d in dates.values())
    assert "has_more" not in body  # ListModelsResponse is not paginated


def test_list_endpoints_page_with_limit_and_after(fake: FakeUpstream) -> None:
    page = call(fake, "files", params={"limit": "1"}).json()
    assert len(page["data"]) == 1 and page["has_more"] is True
    assert page["first_id"] == page["last_id"] == page["data"][0]["id"]
    rest = call(fake, "files", params={"limit": "5", "after": page["last_id"]}).json()
    assert rest["has_more"] is False and len(rest["data"]) == 2
    assert page["last_id"] not in [f["id"] for f in rest["data"]]
    jobs = call(fake, "fine_tunes", params={"limit": "1"}).json()
    assert jobs["has_more"] is True and "first_id" not in jobs  # not in the spec
    batches = call(fake, "batches", params={"limit": "20"}).json()
    assert batches["has_more"] is False and batches["last_id"] == batches["data"][-1]["id"]
    bad = call(fake, "batches", params={"limit": "0"})
    assert bad.status_code == 400 and error_of(bad)["param"] == "limit"


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("endpoint, body, status, param, code", [
    ("chat", {"messages": [{"role": "user", "content": "hi"}]}, 400, None, None),
    ("chat", {"model": "gpt-4o-mini"}, 400, "messages", "missing_required_parameter"),
    ("chat", {"model": "gpt-4o-mini", "messages": []}, 400, "messages", "empty_array"),
    ("responses", {"model": "gpt-4o-mini", "input": "x", "max_output_tokens": 1}, 400,
     "max_output_tokens", "integer_below_min_value"),
    ("embeddings", {"model": "text-embedding-3-small"}, 400, "input",
     "missing_required_parameter"),
    ("images", {"model": "gpt-image-1-mini"}, 400, "prompt", "missing_required_parameter"),
    ("chat", {"model": "text-embedding-3-small", "messages": [{"role": "user", "content": "x"}]},
     404, "model", None),
])
def test_requests_are_validated_like_the_api(fake: FakeUpstream, endpoint: str, body: dict,
                                             status: int, param: str | None,
                                             code: str | None) -> None:
    resp = call(fake, endpoint, body=body)
    assert resp.status_code == status
    err = error_of(resp)
    assert (err["type"], err["param"], err["code"]) == ("invalid_request_error", param, code)
    assert REQUEST_ID.match(resp.headers["x-request-id"])
    assert "x-ratelimit-remaining-requests" in resp.headers  # errors carry them too


def test_invalid_json_body_is_a_400(fake: FakeUpstream) -> None:
    resp = requests.post(fake.base_url + "/chat/completions", data=b"{nope", timeout=5,
                         headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status_code == 400
    assert "could not parse the JSON body" in error_of(resp)["message"]


@pytest.mark.parametrize("endpoint", ["chat", "responses", "embeddings", "moderations", "images"])
def test_unknown_model_is_model_not_found(fake: FakeUpstream, endpoint: str) -> None:
    resp = call(fake, endpoint, model="gpt-nope")
    assert resp.status_code == 404
    err = error_of(resp)
    assert err["code"] == "model_not_found"
    assert err["message"] == "The model `gpt-nope` does not exist or you do not have access to it."


def test_assistants_need_the_beta_header(fake: FakeUpstream) -> None:
    resp = requests.get(fake.base_url + "/assistants", headers=AUTH, timeout=5)
    assert resp.status_code == 400
    assert error_of(resp)["code"] == "invalid_beta"


def test_unknown_route_is_invalid_url(fake: FakeUpstream) -> None:
    resp = requests.get(fake.base_url + "/nope", headers=AUTH, timeout=5)
    assert resp.status_code == 404
    assert error_of(resp)["message"] == "Invalid URL (GET /v1/nope)"


# ------------------------------------------------------------------------ auth


def test_wrong_key_is_401_with_the_masked_echo(fake: FakeUpstream) -> None:
    wrong = "sk-VKMIsZZZZZZZZZZZZZZZZZZZZwjh3"
    resp = call(fake, "models", headers={"Authorization": f"Bearer {wrong}"})
    assert resp.status_code == 401
    err = error_of(resp)
    assert err["code"] == "invalid_api_key" and err["type"] == "invalid_request_error"
    assert err["message"] == ("Incorrect API key provided: sk-VKMIs*****wjh3. You can find your "
                              "API key at https://platform.openai.com/account/api-keys.")
    assert wrong not in resp.text
    assert REQUEST_ID.match(resp.headers["x-request-id"])
    # An unknown key belongs to no organisation: no rate-limit headers.
    assert "x-ratelimit-remaining-requests" not in resp.headers


def test_missing_key_is_401(fake: FakeUpstream) -> None:
    resp = requests.get(fake.base_url + "/models", timeout=5)
    assert resp.status_code == 401
    assert error_of(resp)["message"].startswith("You didn't provide an API key.")


def test_any_non_empty_key_works_without_api_key() -> None:
    with FakeUpstream() as fake:
        resp = requests.get(fake.base_url + "/models", timeout=5,
                            headers={"Authorization": "Bearer anything"})
        assert resp.status_code == 200
        assert requests.get(fake.base_url + "/models", timeout=5).status_code == 401


# ----------------------------------------------------------------- rate limits


def test_request_counter_counts_down_then_429s_then_resets() -> None:
    with FakeUpstream(rpm_limit=3, window_seconds=0.5) as fake:
        seen = []
        for _ in range(3):
            resp = call(fake, "models")
            assert resp.status_code == 200
            seen.append(int(resp.headers["x-ratelimit-remaining-requests"]))
        assert seen == [2, 1, 0]
        limited = call(fake, "models")
        assert limited.status_code == 429
        err = error_of(limited)
        assert (err["type"], err["code"]) == ("requests", "rate_limit_exceeded")
        assert re.match(r"Rate limit reached for .* on requests per min \(RPM\): Limit 3, "
                        r"Used 3, Requested 1\. Please try again in \d+ms\.", err["message"])
        assert limited.headers["retry-after"] == "1"  # integer seconds, at least 1
        assert limited.headers["x-ratelimit-remaining-requests"] == "0"
        time.sleep(0.55)
        again = call(fake, "models")
        assert again.status_code == 200
        assert again.headers["x-ratelimit-remaining-requests"] == "2"


def test_token_counter_counts_down_by_usage(fake: FakeUpstream) -> None:
    first = call(fake, "models")
    assert first.headers["x-ratelimit-remaining-tokens"] == "200000"
    assert first.headers["x-ratelimit-reset-tokens"] == "0s"  # untouched counter
    chat = call(fake, "chat")
    spent = chat.json()["usage"]["total_tokens"]
    assert int(chat.headers["x-ratelimit-remaining-tokens"]) == 200000 - spent
    chat2 = call(fake, "chat")
    spent2 = chat2.json()["usage"]["total_tokens"]
    assert int(chat2.headers["x-ratelimit-remaining-tokens"]) == 200000 - spent - spent2


def test_spent_tokens_429_only_token_endpoints() -> None:
    with FakeUpstream(tpm_limit=10) as fake:
        assert call(fake, "chat").headers["x-ratelimit-remaining-tokens"] == "0"
        limited = call(fake, "chat")
        assert limited.status_code == 429
        assert error_of(limited)["type"] == "tokens"
        assert "tokens per min (TPM)" in error_of(limited)["message"]
        assert call(fake, "models").status_code == 200  # uses no tokens


def test_reset_headers_use_both_ms_and_minute_forms() -> None:
    now = [1000.0]
    with FakeUpstream(clock=lambda: now[0]) as fake:
        opening = call(fake, "models").headers
        assert opening["x-ratelimit-reset-requests"] == "1m0s"  # the request opening a window
        assert opening["x-ratelimit-reset-tokens"] == "0s"
        now[0] = 1047.36
        assert call(fake, "models").headers["x-ratelimit-reset-requests"] == "12.64s"
        now[0] = 1059.98
        late = call(fake, "chat").headers
        assert late["x-ratelimit-reset-requests"] == "20ms"
        assert late["x-ratelimit-reset-tokens"] == "20ms"
        assert late["x-ratelimit-remaining-requests"] == "497"
        now[0] = 1060.0  # window over: full counters again
        fresh = call(fake, "models").headers
        assert fresh["x-ratelimit-remaining-requests"] == "499"
        assert fresh["x-ratelimit-reset-requests"] == "1m0s"
    with FakeUpstream(window_seconds=72, clock=lambda: 0.0) as fake:
        assert call(fake, "models").headers["x-ratelimit-reset-requests"] == "1m12s"


def test_counters_are_per_key() -> None:
    with FakeUpstream() as fake:
        for key, expected in (("sk-one", "499"), ("sk-one", "498"), ("sk-two", "499")):
            resp = requests.get(fake.base_url + "/models", timeout=5,
                                headers={"Authorization": f"Bearer {key}"})
            assert resp.headers["x-ratelimit-remaining-requests"] == expected


# ---------------------------------------------------------------------- faults


def _json_error(status: int, type_: str | None, code: Any) -> Callable:
    def check(resp: requests.Response) -> None:
        assert resp.status_code == status
        err = error_of(resp)
        assert (err["type"], err["code"]) == (type_, code)
        assert REQUEST_ID.match(resp.headers["x-request-id"])
    return check


def _html(status: int, marker: str) -> Callable:
    def check(resp: requests.Response) -> None:
        assert resp.status_code == status
        assert resp.headers["content-type"].startswith("text/html")
        assert marker in resp.text
        assert "openai-version" not in resp.headers  # a proxy page, not the API
    return check


def _check_retry_after(expected: str | None) -> Callable:
    def check(resp: requests.Response) -> None:
        assert resp.headers.get("retry-after") == expected
    return check


def _raises(*errors: type[BaseException]) -> Callable:
    def check(call_it: Callable[[], requests.Response]) -> None:
        with pytest.raises(errors):
            call_it()
    check.raises = True  # type: ignore[attr-defined]
    return check


def _ok_json(resp: requests.Response) -> None:
    assert resp.status_code == 200
    CATALOGUE["chat"].check(resp.json())


def _bad_json(resp: requests.Response) -> None:
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    with pytest.raises(ValueError):
        resp.json()


def _wrong_shape(resp: requests.Response) -> None:
    assert resp.status_code == 200
    body = resp.json()
    assert body["choices"] == [] and "usage" not in body
    with pytest.raises(ShapeError):
        CATALOGUE["chat"].check(body)


def _failed(resp: requests.Response) -> None:
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "failed"
    assert body["error"]["code"] == "server_error"
    with pytest.raises(ResponseFailed):
        CATALOGUE["responses"].check(body)


def _incomplete(resp: requests.Response) -> None:
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "incomplete"
    assert body["incomplete_details"]["reason"] == "max_output_tokens"
    usage = body["usage"]
    assert usage["input_tokens"] + usage["output_tokens"] == usage["total_tokens"]


def _all(*checks: Callable) -> Callable:
    def check(resp: requests.Response) -> None:
        for c in checks:
            c(resp)
    return check


# fault -> (endpoint, check on the response, or a _raises check on the call)
FAULT_EXPECTATIONS: dict[str, tuple[str, Callable]] = {
    "delay": ("chat", _ok_json),
    "hang": ("chat", _raises(requests.Timeout)),
    # A stalled *body* surfaces in requests as ConnectionError(ReadTimeoutError), not Timeout.
    "slow_body": ("chat", _raises(requests.Timeout, requests.ConnectionError)),
    "trickle_body": ("chat", _ok_json),
    "reset": ("chat", _raises(requests.ConnectionError)),
    "reset_mid_body": ("chat", _raises(requests.exceptions.ChunkedEncodingError,
                                       requests.ConnectionError)),
    "malformed": ("chat", _bad_json),
    "empty_body": ("chat", _all(_bad_json, lambda r: r.content == b"" or pytest.fail())),
    "wrong_shape": ("chat", _wrong_shape),
    "response_failed": ("responses", _failed),
    "response_incomplete": ("responses", _incomplete),
    "html_200": ("chat", _html(200, "Sign in")),
    "bad_request": ("chat", _json_error(400, "invalid_request_error", "unsupported_parameter")),
    "unauthorized": ("chat", _all(_json_error(401, "invalid_request_error", "invalid_api_key"),
                                  lambda r: mask_key(KEY) in r.json()["error"]["message"])),
    "forbidden": ("chat", _json_error(403, "request_forbidden",
                                      "unsupported_country_region_territory")),
    "not_found": ("chat", _json_error(404, "invalid_request_error", "model_not_found")),
    "rate_limited": ("chat", _all(_json_error(429, "requests", "rate_limit_exceeded"),
                                  _check_retry_after("20"),
                                  lambda r: "try again in 20s." in r.text)),
    "rate_limited_tokens": ("chat", _all(_json_error(429, "tokens", "rate_limit_exceeded"),
                                         lambda r: "try again in 644ms." in r.text)),
    "quota": ("chat", _all(_json_error(429, "insufficient_quota", "insufficient_quota"),
                           _check_retry_after(None))),
    "quota_legacy": ("chat", _all(_json_error(429, "insufficient_quota", None),
                                  _check_retry_after(None))),
    "billing": ("chat", _all(_json_error(429, "insufficient_quota", "credit_balance_exhausted"),
                             _check_retry_after(None))),
    "server_error": ("chat", _json_error(500, "server_error", None)),
    "bad_gateway_html": ("chat", _html(502, "502 Bad Gateway")),
    "bad_gateway_json": ("chat", _json_error(502, "cf_bad_gateway", 502)),
    "overloaded": ("chat", _json_error(503, "service_unavailable_error", "server_is_overloaded")),
    "gateway_timeout": ("chat", _html(504, "504 Gateway Time-out")),
    # Stream faults (tests/test_fake_streams.py has the timings and shapes).
    "slow_first_token": ("chat_stream", lambda r: sse_events(r)[-1] == ("message", "[DONE]")
                         or pytest.fail()),
    "slow_tokens": ("responses_stream",
                    lambda r: sse_events(r)[-1][0] == "response.completed" or pytest.fail()),
    "cut_stream": ("chat_stream", _raises(requests.exceptions.ChunkedEncodingError)),
    "stream_error": ("chat_stream", lambda r: "error" in json.loads(sse_events(r)[-1][1])
                     or pytest.fail()),
    "stall_stream": ("responses_stream", _raises(requests.ConnectionError)),
}


def test_every_fault_has_an_expectation() -> None:
    assert set(FAULT_EXPECTATIONS) == set(FAULTS)


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_behaves_as_documented(fake: FakeUpstream, fault: str) -> None:
    endpoint, check = FAULT_EXPECTATIONS[fault]
    delay = {"delay": 50, "trickle_body": 1, "slow_first_token": 50, "slow_tokens": 5}.get(fault)
    fake.set_fault(endpoint, fault, delay_ms=delay)
    started = time.monotonic()
    if getattr(check, "raises", False):
        check(lambda: call(fake, endpoint, timeout=0.3))
    else:
        check(call(fake, endpoint))
    if fault == "delay":
        assert time.monotonic() - started >= 0.05
    assert fake.requests[-1]["fault"] == fault


def test_api_errors_carry_rate_limit_headers(fake: FakeUpstream) -> None:
    for fault in ("server_error", "overloaded", "quota", "rate_limited"):
        fake.set_fault("chat", fault, count=1)
        resp = call(fake, "chat")
        assert all(h in resp.headers for h in RL_HEADERS), fault
    fake.set_fault("chat", "rate_limited", count=1)
    resp = call(fake, "chat")
    assert resp.headers["x-ratelimit-remaining-requests"] == "0"
    assert resp.headers["x-ratelimit-reset-requests"] == "20s"


def test_count_makes_a_fault_flap_then_recover(fake: FakeUpstream) -> None:
    fake.set_fault("chat", "server_error", count=2)
    assert [call(fake, "chat").status_code for _ in range(3)] == [500, 500, 200]
    assert fake.faults() == {}


def test_endpoint_fault_wins_over_star_and_none_clears(fake: FakeUpstream) -> None:
    fake.set_fault("*", "overloaded")
    fake.set_fault("models", "none")
    fake.set_fault("files", "server_error")
    assert call(fake, "batches").status_code == 503
    assert call(fake, "models").status_code == 200
    assert call(fake, "files").status_code == 500
    fake.clear_faults()
    assert call(fake, "batches").status_code == 200


def test_delay_ms_delays_other_faults_and_shows_in_processing_ms(fake: FakeUpstream) -> None:
    fake.set_fault("chat", "server_error", delay_ms=120)
    started = time.monotonic()
    resp = call(fake, "chat")
    assert resp.status_code == 500 and time.monotonic() - started >= 0.12
    assert int(resp.headers["openai-processing-ms"]) >= 120


def test_bounded_stalls_end_in_a_broken_connection(fake: FakeUpstream) -> None:
    fake.set_fault("models", "slow_body", delay_ms=50, count=1)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        call(fake, "models")
    fake.set_fault("models", "hang", delay_ms=50, count=1)
    with pytest.raises(requests.ConnectionError):
        call(fake, "models")
    assert call(fake, "models").status_code == 200


@pytest.mark.parametrize("endpoint, fault, count, delay_ms", [
    ("nope", "server_error", None, None), ("chat", "nope", None, None),
    ("chat", "server_error", 0, None), ("chat", "delay", None, -1),
])
def test_set_fault_rejects_bad_arguments(fake: FakeUpstream, endpoint: str, fault: str,
                                         count: int | None, delay_ms: float | None) -> None:
    with pytest.raises(ValueError):
        fake.set_fault(endpoint, fault, count=count, delay_ms=delay_ms)


def test_latency_ms_slows_every_answer() -> None:
    with FakeUpstream(latency_ms=100) as fake:
        started = time.monotonic()
        resp = call(fake, "models")
        assert time.monotonic() - started >= 0.1
        assert int(resp.headers["openai-processing-ms"]) >= 100


# ----------------------------------------------------------------------- azure


def test_azure_paths_with_api_key() -> None:
    with FakeUpstream(api_key=KEY) as fake:
        q, hdr = {"api-version": "2024-10-21"}, {"api-key": KEY}
        chat = requests.post(fake.root_url + "/openai/deployments/gpt-4o/chat/completions",
                             params=q, headers=hdr, timeout=5,
                             json={"messages": [{"role": "user", "content": "ping"}]})
        assert chat.status_code == 200
        assert chat.json()["model"] == "gpt-4o-2024-08-06"  # the deployment decides
        assert {h for h in chat.headers if h.startswith("x-ratelimit")} == {
            "x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens"}
        emb = requests.post(fake.root_url + "/openai/deployments/emb/embeddings", params=q,
                            headers=hdr, json={"input": "ping"}, timeout=5)
        assert emb.status_code == 200
        for path in ("models", "files", "batches", "fine_tuning/jobs"):
            resp = requests.get(f"{fake.root_url}/openai/{path}", params=q, headers=hdr,
                                timeout=5)
            assert resp.status_code == 200, path
        assert [r["endpoint"] for r in fake.requests][:2] == ["chat", "embeddings"]
        assert fake.requests[0]["headers"]["api-key"] == "<redacted>"


def test_azure_without_api_version_is_resource_not_found(fake: FakeUpstream) -> None:
    resp = requests.post(fake.root_url + "/openai/deployments/d/chat/completions",
                         headers={"api-key": KEY}, json={"messages": []}, timeout=5)
    assert resp.status_code == 404
    assert resp.json() == {"error": {"code": "404", "message": "Resource not found"}}


def test_azure_wrong_key_and_rate_limit_are_azure_shaped() -> None:
    with FakeUpstream(api_key=KEY, rpm_limit=1) as fake:
        url = fake.root_url + "/openai/deployments/d/chat/completions?api-version=2024-10-21"
        body = {"messages": [{"role": "user", "content": "ping"}]}
        bad = requests.post(url, headers={"api-key": "wrong"}, json=body, timeout=5)
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "401"
        assert requests.post(url, headers={"api-key": KEY}, json=body, timeout=5).ok
        limited = requests.post(url, headers={"api-key": KEY}, json=body, timeout=5)
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "429"
        assert "ChatCompletions_Create" in limited.json()["error"]["message"]
        assert int(limited.headers["retry-after"]) >= 1 and "retry-after-ms" in limited.headers


# --------------------------------------------------------------- control plane


def test_requests_are_recorded_with_secrets_redacted(fake: FakeUpstream) -> None:
    call(fake, "responses")
    record = fake.requests[-1]
    assert record["method"] == "POST" and record["path"] == "/v1/responses"
    assert record["headers"]["authorization"] == "<redacted>"
    assert record["json"]["store"] is False and record["model"] == "gpt-4o-mini"
    # One name per field: the parsed body is "json", and only that.
    assert set(record) == {"method", "path", "query", "headers", "json", "endpoint", "model",
                           "ts", "fault", "chaos", "status"}
    assert KEY not in repr(fake.requests)
    call(fake, "files")
    assert fake.requests[-1]["query"] == {"limit": "1"} and fake.requests[-1]["json"] is None


def test_control_endpoint(fake: FakeUpstream) -> None:
    ctl = fake.root_url + "/__fake__"
    resp = requests.post(ctl + "/faults", json={"endpoint": "models", "fault": "server_error",
                                                "count": 1}, timeout=5)
    assert resp.status_code == 200 and resp.json()["faults"]["models"]["count"] == 1
    assert call(fake, "models").status_code == 500
    assert call(fake, "models").status_code == 200
    requests.post(ctl + "/faults", json={"endpoint": "*", "fault": "overloaded"}, timeout=5)
    assert requests.delete(ctl + "/faults", timeout=5).status_code == 200
    assert call(fake, "models").status_code == 200
    recorded = requests.get(ctl + "/requests", timeout=5).json()
    assert [r["status"] for r in recorded] == [500, 200, 200]
    bad = requests.post(ctl + "/faults", json={"endpoint": "chat", "fault": "meltdown"},
                        timeout=5)
    assert bad.status_code == 400 and "meltdown" in bad.json()["error"]["message"]
    assert requests.post(ctl + "/reset", timeout=5).status_code == 200
    assert fake.requests == []
    assert call(fake, "models").headers["x-ratelimit-remaining-requests"] == "499"
    assert requests.get(ctl + "/nope", timeout=5).status_code == 404


# ----------------------------------------------------------------------- chaos

CHAOS_CLASSES = {
    "rate_limited": {"rate_limited", "rate_limited_tokens"},
    "quota_exceeded": {"quota", "quota_legacy", "billing"},
    "provider_error": {"server_error", "bad_gateway_json"},
    "provider_unavailable": {"overloaded", "bad_gateway_html", "gateway_timeout"},
    "invalid_response": {"malformed", "wrong_shape", "empty_body", "html_200"},
    "network": {"reset", "reset_mid_body", "slow_body"},
    "unauthorized": {"unauthorized"}, "forbidden": {"forbidden"},
    "not_found": {"not_found"}, "bad_request": {"bad_request"},
}
CHAOS_ENDPOINTS = ("chat", "responses", "embeddings", "moderations", "models", "files",
                   "fine_tunes", "batches")


def _chaos_run(seed: int, n: int) -> list[dict]:
    with FakeUpstream(profile="chaos", seed=seed, time_scale=0, rpm_limit=100000) as fake:
        with requests.Session() as session:
            for i in range(n):
                with contextlib.suppress(requests.RequestException):  # chaos resets/cuts
                    call(fake, CHAOS_ENDPOINTS[i % len(CHAOS_ENDPOINTS)], timeout=2,
                         session=session)
        return fake.requests


def test_chaos_mixes_every_error_class_reproducibly() -> None:
    records = _chaos_run(seed=1234, n=400)
    faults = [r["fault"] for r in records]
    assert "hang" not in faults
    assert all(r["chaos"] for r in records if r["fault"])
    ok = faults.count(None) / len(faults)
    assert 0.75 <= ok <= 0.92, ok
    seen = set(faults)
    missing = [cls for cls, names in CHAOS_CLASSES.items() if not names & seen]
    assert not missing
    assert [r["fault"] for r in _chaos_run(seed=1234, n=60)] == faults[:60]


def test_chaos_latency_stays_within_bounds() -> None:
    lo, _, hi = CHAOS_LATENCY_MS
    book = FaultBook(ENDPOINTS, chaos=True, seed=3)
    samples = [book.jitter_s() for _ in range(2000)]
    assert lo / 1000 <= min(samples) and max(samples) <= hi / 1000
    assert 0.15 < sorted(samples)[1000] < 0.4  # median near 250 ms


def test_explicit_fault_beats_chaos() -> None:
    with FakeUpstream(profile="chaos", seed=1, time_scale=0) as fake:
        fake.set_fault("models", "none")
        assert all(call(fake, "models").status_code == 200 for _ in range(50))


# ------------------------------------------------------------------- lifecycle


def test_stop_is_fast_while_a_request_hangs() -> None:
    fake = FakeUpstream(api_key=KEY).start()
    fake.set_fault("chat", "hang")
    outcome: list[BaseException] = []

    def client() -> None:
        try:
            call(fake, "chat", timeout=30)
        except requests.RequestException as err:
            outcome.append(err)

    thread = threading.Thread(target=client)
    thread.start()
    deadline = time.monotonic() + 2
    while not fake.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 1.0
    thread.join(timeout=2)
    assert not thread.is_alive()
    assert isinstance(outcome[0], requests.ConnectionError)  # the hung request was dropped
    with pytest.raises(requests.ConnectionError):  # nothing listens any more
        requests.get(fake.base_url + "/models", headers=AUTH, timeout=1)
    fake.stop()  # idempotent


def test_constructor_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        FakeUpstream(profile="wild")
    with pytest.raises(ValueError):
        FakeUpstream(api_key="")


# ------------------------------------------------------------------------- CLI


def test_cli_serves_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter.fake", "--port", "0", "--seed", "1",
         "--fault", "files=server_error", "--api-key", KEY],
        stderr=subprocess.PIPE, text=True)
    stderr = proc.stderr
    assert stderr is not None
    try:
        line = stderr.readline()
        match = re.fullmatch(r"fake upstream listening on (http://127\.0\.0\.1:\d+/v1)\n", line)
        assert match, line
        base = match.group(1)
        assert requests.get(base + "/models", headers=AUTH, timeout=5).status_code == 200
        assert requests.get(base + "/files", headers=AUTH, timeout=5).status_code == 500
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert "Traceback" not in stderr.read()
    finally:
        proc.kill()
        proc.wait()
        stderr.close()


@pytest.mark.parametrize("args", [["--fault", "chat=meltdown"], ["--profile", "wild"],
                                  ["--port", "x"]])
def test_cli_rejects_bad_flags(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "exporter.fake", *args],
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr


def test_compose_demo_service_runs_this_cli() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    entrypoint = compose["services"]["fake-upstream"]["entrypoint"]
    assert entrypoint == ["python", "-m", "exporter.fake"]
    proc = subprocess.run([sys.executable, *entrypoint[1:], "--help"], capture_output=True,
                          text=True, timeout=10)
    assert proc.returncode == 0 and "--profile" in proc.stdout, proc.stderr


# ----------------------------------------------------------------- independence

# The fake must not reuse the client's tables: a wrong path or body in the catalogue
# would then be served back to it and every test would pass.
CLIENT_MODULES = ("exporter.catalogue", "exporter.settings", "exporter.prober")


def test_the_fake_imports_nothing_of_the_exporter_but_itself() -> None:
    package = Path(exporter.fake.__file__).parent
    outside: list[str] = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                # "." is this package; ".." or "exporter.x" would reach the exporter.
                if name.startswith("..") or (name.split(".")[0] == "exporter"
                                             and not name.startswith("exporter.fake")):
                    outside.append(f"{path.name}: {name}")
    assert not outside


def test_importing_the_fake_loads_no_client_module() -> None:
    code = ("import sys, exporter.fake, exporter.fake.__main__; "
            "print(' '.join(m for m in sys.modules if m.startswith('exporter')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=10, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stdout.split()
    assert "exporter.fake.server" in loaded  # the import really happened
    assert not set(CLIENT_MODULES) & set(loaded)
    assert all(m == "exporter" or m.startswith("exporter.fake") for m in loaded), loaded


@pytest.mark.parametrize("endpoint", ["chat", "embeddings", "moderations", "models", "files",
                                      "fine_tunes", "batches"])
def test_injected_client_errors_fit_the_endpoint(fake: FakeUpstream, endpoint: str) -> None:
    """The demo shows these messages: no "max_tokens" on /embeddings, no model on /batches."""
    names_a_model = CATALOGUE[endpoint].model_kind is not None
    fake.set_fault(endpoint, "bad_request")
    err = error_of(call(fake, endpoint))
    assert ("max_tokens" in err["message"]) == (endpoint == "chat"), err
    fake.set_fault(endpoint, "not_found")
    resp = call(fake, endpoint)
    assert resp.status_code == 404
    err = error_of(resp)
    if names_a_model:
        assert err["code"] == "model_not_found" and "The model `" in err["message"]
    else:
        path = ENDPOINTS[endpoint][1]
        assert (err["code"], err["message"]) == (
            None, f"Invalid URL ({ENDPOINTS[endpoint][0]} {path})")

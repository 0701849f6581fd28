"""Every way a usage read can fail: the error_type it shows (the probes' vocabulary), that
the other reads go on, that nothing is lost or counted twice once it recovers, one log
line a minute, and the admin key nowhere."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest
import requests
import responses

from exporter.fake import FakeUpstream
from exporter.usage.client import MAX_PAGES, AdminClient, AdminError
from exporter.usage.kinds import KINDS
from exporter.usage.metrics import UsageMetrics
from exporter.usage.poller import PollerConfig, UsagePoller
from exporter.usage.store import MemoryMarks
from tests.usage_helpers import ADMIN_KEY, Clock, rig

PROBE_KEY = "sk-proj-CANARY0x7e3b9d1f2a4c6e8b0d2f4a6c8e0b2d4f6a8c"

# fault on /organization/usage/completions -> the error_type the poller records
FAULTS = {
    "server_error": "provider_error",
    "overloaded": "provider_unavailable",
    "bad_gateway_html": "provider_unavailable",
    "gateway_timeout": "provider_unavailable",
    "rate_limited": "rate_limited",
    "quota": "quota_exceeded",
    "unauthorized": "unauthorized",
    "forbidden": "forbidden",
    "not_found": "not_found",
    "bad_request": "bad_request",
    "malformed": "invalid_response",
    "wrong_shape": "invalid_response",
    "empty_body": "invalid_response",
    "html_200": "invalid_response",
    "reset": "network",
    "reset_mid_body": "network",
    "hang": "timeout",
}


@pytest.fixture
def fake():
    with FakeUpstream(admin_key=ADMIN_KEY) as upstream:
        yield upstream


@pytest.mark.parametrize("fault", FAULTS)
def test_a_failed_read_is_recorded_and_loses_nothing(fake, fault) -> None:
    clock = Clock()
    r = rig(fake, clock, kinds=("completions", "embeddings"))
    r.poller.client.timeout = 0.5
    r.poll()
    start = clock.t
    fake.set_fault("usage_completions", fault, count=1, delay_ms=2000 if fault == "hang" else None)
    clock.advance(300)
    r.poll()
    error_type = FAULTS[fault]
    assert r.value("openai_usage_poll_success", endpoint="completions") == 0
    assert r.value("openai_usage_poll_errors_total", endpoint="completions",
                   error_type=error_type) == 1
    assert r.value("openai_usage_poll_success", endpoint="embeddings") == 1  # went on
    assert r.shown("openai_usage_tokens_total", "completions", "input") == 0
    status = r.poller.status()["endpoints"]["completions"]
    assert (status["success"], status["error_type"]) == (False, error_type)
    clock.advance(300)
    r.poll()  # recovered: the missed poll's usage is still in the lookback
    assert r.value("openai_usage_poll_success", endpoint="completions") == 1
    assert r.shown("openai_usage_tokens_total", "completions", "input") == \
        fake.org.usage_between("completions", "input_tokens", start, clock.t)


def test_a_probe_key_as_admin_key_is_forbidden_everywhere_and_logged_once_a_minute(
        fake, caplog) -> None:
    clock = Clock()
    r = rig(fake, clock, key=PROBE_KEY)
    with caplog.at_level(logging.INFO, logger="exporter.usage"):
        for _ in range(3):
            r.poll()
            clock.advance(300)
    for endpoint in r.poller.endpoints:
        if endpoint == "rate_limits":  # never tried: the projects to ask about are unknown
            assert r.value("openai_usage_poll_success", endpoint=endpoint) is None
            assert r.poller.status()["endpoints"][endpoint]["success"] is None
            continue
        assert r.value("openai_usage_poll_success", endpoint=endpoint) == 0, endpoint
        assert r.value("openai_usage_poll_errors_total", endpoint=endpoint,
                       error_type="forbidden") == 3, endpoint
    lines = [rec for rec in caplog.records if rec.name == "exporter.usage"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "forbidden" in lines[0].getMessage()
    assert PROBE_KEY[-12:] not in caplog.text and PROBE_KEY[:12] not in caplog.text
    fake.admin_key = PROBE_KEY  # now it works: one line says so
    with caplog.at_level(logging.INFO, logger="exporter.usage"):
        r.poll()
    assert "every read succeeds again" in caplog.records[-1].getMessage()


def test_a_wrong_admin_key_is_unauthorized_and_its_echo_is_masked(fake) -> None:
    clock = Clock()
    wrong = "sk-admin-WRONGkey0123456789abcdefghijklmnop"
    r = rig(fake, clock, key=wrong)
    r.poll()
    status = r.poller.status()["endpoints"]["costs"]
    assert status["error_type"] == "unauthorized"
    assert "Incorrect API key provided: sk-***" in status["message"]
    assert wrong[:8] + "*****" not in status["message"] and wrong[-4:] not in status["message"]


def test_the_admin_key_goes_only_to_organization_paths() -> None:
    client = AdminClient("http://127.0.0.1:9/v1", ADMIN_KEY, 1.0)
    with pytest.raises(ValueError, match="only sent to /organization/"):
        client.get("/models", [])


@responses.activate
def test_a_redirect_is_never_followed() -> None:
    responses.get("http://upstream.test/v1/organization/costs", status=302,
                  headers={"Location": "http://elsewhere.test/steal"})
    with pytest.raises(AdminError) as info:
        AdminClient("http://upstream.test/v1", ADMIN_KEY, 1.0).get("/organization/costs", [])
    assert info.value.error_type == "invalid_response"
    assert [c.request.url.split("?")[0] for c in responses.calls] == [
        "http://upstream.test/v1/organization/costs"]
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {ADMIN_KEY}"


def _endless(request):
    cursor = dict(p.split("=") for p in request.url.split("?")[1].split("&")).get("page", "p0")
    n = int(cursor[1:]) + 1
    return 200, {}, json.dumps({"object": "page", "data": [], "has_more": True,
                                "next_page": f"p{n}"})


@responses.activate
def test_the_page_loop_is_bounded_and_keeps_what_it_read() -> None:
    responses.add_callback(responses.GET, "http://upstream.test/v1/organization/usage/images",
                           callback=_endless)
    client = AdminClient("http://upstream.test/v1", ADMIN_KEY, 1.0)
    with pytest.raises(AdminError) as info:
        client.pages("/organization/usage/images", [("start_time", "0")])
    assert info.value.error_type == "invalid_response" and "pages" in info.value.message
    assert len(info.value.pages) == MAX_PAGES == len(responses.calls)  # type: ignore[attr-defined]


@responses.activate
def test_a_repeated_cursor_is_refused() -> None:
    page = {"object": "page", "data": [], "has_more": True, "next_page": "same"}
    responses.get("http://upstream.test/v1/organization/costs", json=page)
    with pytest.raises(AdminError, match="new next_page"):
        AdminClient("http://upstream.test/v1", ADMIN_KEY, 1.0).pages("/organization/costs", [])
    assert len(responses.calls) == 2


@pytest.mark.parametrize("body,why", [
    ({"object": "page", "data": [{"object": "bucket", "start_time": "x", "end_time": 1,
                                   "results": []}], "has_more": False, "next_page": None},
     "integer start_time"),
    ({"object": "page", "data": [{"object": "bucket", "start_time": 60, "end_time": 120,
                                   "results": [{"object": "organization.usage.images.result",
                                                "images": -1, "num_model_requests": 1}]}],
      "has_more": False, "next_page": None}, "images is not a number"),
    ({"object": "page", "data": [{"object": "bucket", "start_time": 60, "end_time": 120,
                                   "results": [{"object": "organization.usage.images.result",
                                                "num_model_requests": 1}]}],
      "has_more": False, "next_page": None}, "without images"),
    ({"object": "page", "data": [{"object": "bucket", "start_time": 60, "end_time": 120,
                                   "results": [{"object": "organization.costs.result"}]}],
      "has_more": False, "next_page": None}, "another kind"),
    ({"object": "page", "data": {}, "has_more": False}, "not a list"),
    ({"data": []}, "without object, has_more"),
])
@responses.activate
def test_answers_of_the_wrong_shape_are_invalid_responses(body, why) -> None:
    responses.get("http://upstream.test/v1/organization/usage/images", json=body)
    cfg = PollerConfig("http://upstream.test/v1", ADMIN_KEY, kinds=("images",))
    poller = UsagePoller(cfg, UsageMetrics(cfg.kinds, cfg.group_by, ("images",)), MemoryMarks())
    with pytest.raises(AdminError, match=why) as info:
        poller._poll_kind(KINDS["images"], 3600.0)
    assert info.value.error_type == "invalid_response"


def test_a_round_longer_than_the_interval_skips_ticks_instead_of_piling_up(fake) -> None:
    fake.set_fault("costs", "delay", delay_ms=500)
    r = rig(fake, Clock(time.time()), interval_seconds=0.2, kinds=("images",))
    active, most = [0], [0]
    lock = threading.Lock()
    inner = r.poller.poll_once

    def counting() -> None:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            inner()
        finally:
            with lock:
                active[0] -= 1

    r.poller.poll_once = counting  # type: ignore[method-assign]
    r.poller.start()
    try:
        deadline = time.monotonic() + 10
        while r.poller.polls < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        r.poller.stop()
    assert r.poller.polls >= 3 and most[0] == 1
    assert r.poller.polls_skipped >= 2 * (r.poller.polls - 1)  # each 0.5 s round skips 2


def test_scrapes_never_wait_for_a_hanging_read(fake) -> None:
    fake.set_fault("usage_completions", "hang")
    r = rig(fake, Clock(time.time()), kinds=("completions",), interval_seconds=60)
    r.poller.client.timeout = 5.0
    r.poller.start()
    try:
        time.sleep(0.3)  # the first read hangs now
        t0 = time.monotonic()
        text = "".join(str(f) for f in r.registry.collect())
        assert time.monotonic() - t0 < 1.0 and "openai_usage_poll_errors" in text
        t0 = time.monotonic()
        r.poller.stop()
        assert time.monotonic() - t0 < 2.0  # stop does not wait for the read either
    finally:
        fake.stop()


def test_costs_in_another_currency_are_left_out_with_one_warning(caplog) -> None:
    body = {"object": "page", "has_more": False, "next_page": None, "data": [
        {"object": "bucket", "start_time": 0, "end_time": 86400, "results": [
            {"object": "organization.costs.result", "amount": {"value": 5, "currency": "eur"},
             "project_id": "p", "line_item": "x"},
            {"object": "organization.costs.result", "amount": {"value": 2, "currency": "usd"},
             "project_id": "p", "line_item": "y"}]}]}
    with responses.RequestsMock() as mock:
        mock.get("http://upstream.test/v1/organization/costs", json=body)
        cfg = PollerConfig("http://upstream.test/v1", ADMIN_KEY, kinds=())
        metrics = UsageMetrics((), cfg.group_by, ("costs",))
        poller = UsagePoller(cfg, metrics, MemoryMarks(), clock=lambda: 3600.0)
        with caplog.at_level(logging.WARNING, logger="exporter.usage"):
            poller._poll_costs(3600.0)
            poller._poll_costs(3600.0)
    assert metrics.costs == {("p", "y", "month"): 2.0, ("p", "y", "day"): 2.0}
    assert len([r for r in caplog.records if "eur" in r.getMessage()]) == 1


def test_requests_are_sent_as_the_sdk_sends_them(fake) -> None:
    r = rig(fake, Clock(), kinds=("completions",))
    r.poll()
    usage = next(q for q in fake.requests if q["path"].endswith("/usage/completions"))
    assert usage["query"]["bucket_width"] == "1m" and usage["query"]["limit"] == "61"
    assert int(usage["query"]["start_time"]) % 60 == 0 and "end_time" not in usage["query"]
    costs = next(q for q in fake.requests if q["path"].endswith("/costs"))
    assert costs["query"]["bucket_width"] == "1d"
    assert {q["path"] for q in fake.requests} == {
        "/v1/organization/usage/completions", "/v1/organization/costs",
        "/v1/organization/projects", "/v1/organization/projects/proj_alpha/rate_limits",
        "/v1/organization/projects/proj_beta/rate_limits"}
    assert all(requests.utils.quote(q["path"]) == q["path"] for q in fake.requests)

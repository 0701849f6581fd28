"""Rate-limit headers and Retry-After: garbage never becomes a gauge; the age of the last
reading and the wait a 429 asked for are exported.

Cases tried (issue 10, item 5), so the next audit can re-run them: each of the six
x-ratelimit-* headers with 12 unusable values (inf, Infinity, 1e400, nan, negative, -1,
garbage, 400 digits, past the bound...) and the reset durations with 10 more; Retry-After
as seconds, a fraction, an HTTP-date in the future and in the past, retry-after-ms (which
wins), and 10 unusable values; a real 429 of the fake upstream (OpenAI and Azure shape); the
gauges after a 429, a success and a timeout; promtool on the exposition.
"""

from __future__ import annotations

import math
import subprocess
import time
from email.utils import formatdate

import pytest
from prometheus_client import generate_latest

from exporter.durations import parse_duration
from exporter.metrics import ExporterMetrics
from exporter.prober import MAX_MESSAGE_CHARS, Prober, parse_rate_limits, parse_retry_after
from exporter.result import ProbeResult, RateLimits
from tests.conftest import make_target
from tests.test_metrics import T, _as_in_main, result, settings  # noqa: F401 - fixture
from tests.tools import require_tool

NUMBER_HEADERS = {
    "x-ratelimit-limit-requests": "requests_limit",
    "x-ratelimit-remaining-requests": "requests_remaining",
    "x-ratelimit-limit-tokens": "tokens_limit",
    "x-ratelimit-remaining-tokens": "tokens_remaining",
}
DURATION_HEADERS = {
    "x-ratelimit-reset-requests": "requests_reset_seconds",
    "x-ratelimit-reset-tokens": "tokens_reset_seconds",
}
BAD_NUMBERS = ["inf", "Infinity", "-inf", "1e400", "nan", "-5", "-1", "garbage", "",
               "9" * 400, "1e13", "0x10"]
BAD_DURATIONS = BAD_NUMBERS[:9] + ["1e400s", "9" * 400 + "s", "-1s", "25h", "8d", "1h1h1x",
                                   "inf" + "s", "86401", "1e3m"]


@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("header", sorted(NUMBER_HEADERS))
def test_unusable_numbers_never_become_values(header, value):
    lim = parse_rate_limits({header: value})
    assert getattr(lim, NUMBER_HEADERS[header]) is None, (header, value)


@pytest.mark.parametrize("value", BAD_DURATIONS)
@pytest.mark.parametrize("header", sorted(DURATION_HEADERS))
def test_unusable_durations_never_become_values(header, value):
    lim = parse_rate_limits({header: value})
    assert getattr(lim, DURATION_HEADERS[header]) is None, (header, value)


def test_usable_values_at_the_bounds():
    lim = parse_rate_limits({"x-ratelimit-limit-tokens": "1000000000000",
                             "x-ratelimit-remaining-tokens": "0",
                             "x-ratelimit-reset-tokens": "24h",
                             "x-ratelimit-reset-requests": "0s"})
    assert (lim.tokens_limit, lim.tokens_remaining) == (1e12, 0)
    assert (lim.tokens_reset_seconds, lim.requests_reset_seconds) == (86400, 0)


def test_parse_duration_never_returns_infinity():
    assert parse_duration("9" * 400 + "s") is None
    assert parse_duration("9" * 400) is None


# -- Retry-After ---------------------------------------------------------------------------

def test_retry_after_forms():
    now = time.time()
    assert parse_retry_after({"retry-after": "20"}) == 20
    assert parse_retry_after({"retry-after": " 1.5 "}) == 1.5
    # retry-after-ms first, as the official SDK reads it (Azure sends both)
    assert parse_retry_after({"retry-after-ms": "644", "retry-after": "1"}) == 0.644
    future = parse_retry_after({"retry-after": formatdate(now + 30, usegmt=True)})
    assert future is not None and 27 <= future <= 31
    assert parse_retry_after({"retry-after": formatdate(now - 3600, usegmt=True)}) == 0
    assert parse_retry_after({}) is None


@pytest.mark.parametrize("headers", [
    {"retry-after": "inf"}, {"retry-after": "1e400"}, {"retry-after": "nan"},
    {"retry-after": "-3"}, {"retry-after": "soon"}, {"retry-after": "86401"},
    {"retry-after": "Mon, 99 Foo 2026 99:99:99 GMT"}, {"retry-after-ms": "inf"},
    {"retry-after-ms": "-1"}, {"retry-after": "9" * 400},
])
def test_unusable_retry_after_is_none(headers):
    assert parse_retry_after(headers) is None


def test_retry_after_past_a_bad_ms_header_falls_back_to_seconds():
    assert parse_retry_after({"retry-after-ms": "garbage", "retry-after": "7"}) == 7


@pytest.mark.parametrize("value", [math.inf, -1.0, math.nan])
def test_probe_result_refuses_an_unusable_retry_after(value):
    with pytest.raises(ValueError):
        result(success=False, error_type="rate_limited", http_status=429,
               retry_after_seconds=value)


# -- through a real 429 --------------------------------------------------------------------

@pytest.mark.parametrize("provider", ["openai", "azure"])
def test_a_429_carries_its_retry_after_into_the_result_and_message(fake, provider):
    fake.set_fault("chat", "rate_limited", count=1)
    if provider == "openai":
        target = make_target(fake.base_url)
    else:
        target = make_target(fake.root_url, provider="azure", api_version="2024-10-21")
    prober = Prober(target, timeout_seconds=5)
    limited = prober.run("chat")
    assert (limited.error_type, limited.http_status) == ("rate_limited", 429)
    assert limited.retry_after_seconds == 20.0
    assert limited.error_message.endswith(" (retry-after 20 s)"), limited.error_message
    assert len(limited.error_message) <= MAX_MESSAGE_CHARS
    ok = prober.run("chat")
    assert ok.success and ok.retry_after_seconds is None


def test_the_retry_after_note_survives_a_long_message():
    prober = Prober(make_target("http://127.0.0.1:9/v1"), timeout_seconds=1)
    r = prober._result(
        __import__("exporter.catalogue", fromlist=["CATALOGUE"]).CATALOGUE["chat"],
        "gpt-4o-mini", 0.0, 0.1, error_type="rate_limited", http_status=429,
        message="HTTP 429: " + "x" * 1000, headers={"retry-after": "3"},
        reading=__import__("exporter.readers", fromlist=["Reading"]).Reading())
    assert r.error_message.endswith(" (retry-after 3 s)")
    assert len(r.error_message) == MAX_MESSAGE_CHARS


# -- the gauges --------------------------------------------------------------------------

def test_retry_after_gauge_follows_the_last_answer():
    m = ExporterMetrics()
    g = m.registry.get_sample_value
    lab = dict(T, endpoint="chat", model="gpt-4o-mini")
    m.observe(result(success=False, error_type="rate_limited", http_status=429,
                     retry_after_seconds=20.0))
    assert g("openai_rate_limit_retry_after_seconds", lab) == 20
    # no answer at all: nothing is known about the wait, the value stays
    m.observe(result(success=False, error_type="timeout"))
    assert g("openai_rate_limit_retry_after_seconds", lab) == 20
    # an answer that asks for no wait
    m.observe(result(http_status=200))
    assert g("openai_rate_limit_retry_after_seconds", lab) == 0


def test_last_update_timestamp_is_the_age_of_the_rate_limit_reading():
    m = ExporterMetrics()
    g = m.registry.get_sample_value
    rl = dict(T, model="gpt-4o-mini")
    assert g("openai_rate_limit_last_update_timestamp_seconds", rl) is None
    m.observe(result(started_at=1_700_000_000.0, http_status=200,
                     rate_limits=RateLimits(requests_remaining=9)))
    assert g("openai_rate_limit_last_update_timestamp_seconds", rl) == pytest.approx(
        1_700_000_000.42)
    # a later answer without the headers keeps the values and their time: the age grows
    m.observe(result(started_at=1_700_000_060.0, http_status=200))
    assert g("openai_rate_limit_requests_remaining", rl) == 9
    assert g("openai_rate_limit_last_update_timestamp_seconds", rl) == pytest.approx(
        1_700_000_000.42)


def test_promtool_is_clean_with_the_new_families():
    promtool = require_tool("promtool")
    m = ExporterMetrics()
    m.configure(settings())
    m.observe(result(http_status=429, success=False, error_type="rate_limited",
                     retry_after_seconds=0.644, rate_limits=RateLimits(requests_remaining=0)))
    text = generate_latest(m.registry)
    assert b"openai_rate_limit_retry_after_seconds{" in text
    assert b"openai_rate_limit_last_update_timestamp_seconds{" in text
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          timeout=30)
    assert proc.returncode == 0 and proc.stdout == b"" and proc.stderr == b"", proc


def test_result_field_default():
    assert ProbeResult(target="t", region="r", endpoint="chat", model="m", started_at=0.0,
                       duration_seconds=0.1, success=True).retry_after_seconds is None


def test_status_and_traces_show_the_wait(fake):
    from exporter.history import MemoryHistory
    from tests.test_status_api import call, make

    fake.set_fault("chat", "rate_limited", count=1)
    history = MemoryHistory()
    history.add(Prober(make_target(fake.base_url), timeout_seconds=5).run("chat"))
    app = make(history)
    (row,) = call(app, "/status").json()["endpoints"]
    assert row["last_failure"]["message"].endswith(" (retry-after 20 s)"), row
    (event,) = call(app, "/traces").json()["events"]
    assert event["error_message"].endswith(" (retry-after 20 s)"), event

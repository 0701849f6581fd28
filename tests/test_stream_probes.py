"""Streaming probes over real sockets: time to first token and per output token, every
stream failure class, and a canary key that no stream failure lets out.

Two upstreams: the fake (its stream faults) and a scripted server in this file that sends
exactly the bytes and delays a test gives it, for the cases the fake has no fault for.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest

from exporter import logs
from exporter.history import MemoryHistory, TraceFilter
from exporter.metrics import ExporterMetrics
from exporter.prober import Prober
from exporter.settings import Settings
from exporter.web.history_json import event_json
from tests.conftest import CANARY_KEY, make_target
from tests.test_probe_socket import FAULT_CLASSES

TIMEOUT = 1.0
STREAMS = ("chat_stream", "responses_stream")
Script = list[tuple[float, bytes]]  # (delay before, bytes) per write


# ----------------------------------------------------------------- scripted upstream

class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers any POST with the class's (status, content-type, script), chunked."""

    answer: tuple[int, str, Script] = (200, "text/event-stream", [])
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, content_type, script = self.answer
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", "req_scripted")
        self.end_headers()
        for delay, data in script:
            time.sleep(delay)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[type[_Scripted], Prober]]:
    handler = type("Handler", (_Scripted,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                              daemon=True)
    thread.start()
    target = make_target(f"http://127.0.0.1:{server.server_port}/v1", probes=STREAMS)
    try:
        yield handler, Prober(target, timeout_seconds=TIMEOUT,
                              prices={"gpt-4o-mini": {"input": 0.15, "output": 0.6}})
    finally:
        server.shutdown()
        server.server_close()


def chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None,
          choices: bool = True) -> bytes:
    obj: dict = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1,
                 "model": "gpt-4o-mini-2024-07-18",
                 "choices": [{"index": 0, "delta": delta or {}, "logprobs": None,
                              "finish_reason": finish}] if choices else []}
    if usage is not None:
        obj["usage"] = usage
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


ROLE = chunk({"role": "assistant", "content": "", "refusal": None})
DONE = b"data: [DONE]\n\n"


def usage(completion: int, prompt: int = 7) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def chat_script(words: list[str], gap: float, first_delay: float = 0.0) -> Script:
    """Role chunk at once, then one content chunk per word `gap` apart (the first after
    `first_delay`), the finish chunk, the usage chunk and [DONE]."""
    script: Script = [(0.0, ROLE)]
    for i, word in enumerate(words):
        script.append((first_delay if i == 0 else gap, chunk({"content": word})))
    return script + [(0.0, chunk(finish="stop")),
                     (0.0, chunk(choices=False, usage=usage(len(words)))), (0.0, DONE)]


# ------------------------------------------------------------------ timings


def test_the_role_only_chunk_does_not_count_as_the_first_token(scripted):
    handler, prober = scripted
    handler.answer = (200, "text/event-stream; charset=utf-8",
                      chat_script(["Po", "ng"], gap=0.0, first_delay=0.25))
    r = prober.run("chat_stream")
    assert r.success, r
    assert 0.25 <= r.ttft_seconds <= r.duration_seconds < 0.25 + 0.2
    assert (r.input_tokens, r.output_tokens, r.total_tokens) == (7, 2, 9)
    assert r.cost_usd > 0


@pytest.mark.parametrize("delta, counts", [
    ({"content": ""}, False), ({"refusal": None}, False), ({"tool_calls": []}, False),
    ({"refusal": "I can't help with that."}, True),
    ({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                      "function": {"name": "f", "arguments": ""}}]}, True),
])
def test_what_counts_as_content(scripted, delta, counts):
    handler, prober = scripted
    handler.answer = (200, "text/event-stream", [
        (0.0, ROLE), (0.15, chunk(delta)), (0.15, chunk({"content": "x"})),
        (0.0, chunk(finish="stop")), (0.0, chunk(choices=False, usage=usage(1))), (0.0, DONE)])
    r = prober.run("chat_stream")
    assert r.success, r
    if counts:
        assert 0.15 <= r.ttft_seconds < 0.28
    else:
        assert r.ttft_seconds >= 0.3


@pytest.mark.parametrize("tokens, recorded", [(4, False), (5, True), (9, True)])
def test_time_per_output_token_needs_five_tokens(scripted, tokens, recorded):
    handler, prober = scripted
    handler.answer = (200, "text/event-stream", chat_script(["w"] * tokens, gap=0.05))
    r = prober.run("chat_stream")
    assert r.success and r.output_tokens == tokens, r
    if not recorded:
        assert r.tpot_seconds is None and r.ttft_seconds is not None
        return
    # (last - first content) / (tokens - 1): the gaps the server put between them.
    assert r.tpot_seconds == pytest.approx(0.05, abs=0.015)


def test_fake_slow_first_token_and_slow_tokens(fake):
    prober = Prober(make_target(fake.base_url), timeout_seconds=5)
    fake.set_fault("*", "slow_first_token", delay_ms=300)
    for endpoint in STREAMS:
        r = prober.run(endpoint)
        assert r.success and 0.3 <= r.ttft_seconds < 0.5, r
        assert r.output_tokens == 9 and r.tpot_seconds < 0.01
    fake.set_fault("*", "slow_tokens", delay_ms=40)
    for endpoint in STREAMS:
        r = prober.run(endpoint)
        assert r.success and r.ttft_seconds < 0.2, r
        assert r.tpot_seconds == pytest.approx(0.04, abs=0.01)


def test_stream_probes_feed_the_ttft_and_tpot_histograms_and_the_log(fake):
    prober = Prober(make_target(fake.base_url, probes=("chat", *STREAMS)), timeout_seconds=5)
    metrics = ExporterMetrics()
    metrics.configure(Settings(targets=(prober.target,)))
    results = [prober.run(e) for e in ("chat", *STREAMS)]
    for r in results:
        metrics.observe(r)
    labels = dict(target="openai", region="us-west-1", model="gpt-4o-mini")
    get = metrics.registry.get_sample_value
    for r in results:
        ttft = get("openai_time_to_first_token_seconds_count", {**labels, "endpoint": r.endpoint})
        assert ttft == (None if r.endpoint == "chat" else 1.0)  # no TTFT series for JSON
    for endpoint in STREAMS:
        assert get("openai_time_per_output_token_seconds_count",
                   {**labels, "endpoint": endpoint}) == 1.0
    # ... and the probe's log line.
    lines = [logs.probe_fields(r) for r in results]
    assert (lines[0]["ttft_ms"], lines[0]["tpot_ms"]) == (None, None)
    for r, line in zip(results[1:], lines[1:], strict=True):
        assert line["ttft_ms"] == round(r.ttft_seconds * 1000, 1)
        assert line["tpot_ms"] == round(r.tpot_seconds * 1000, 2)


def test_stream_probes_show_their_timings_in_traces(fake):
    prober = Prober(make_target(fake.base_url), timeout_seconds=5)
    history = MemoryHistory()
    results = [prober.run(e) for e in ("chat", *STREAMS)]
    for r in results:
        history.add(r)
    events = {e.endpoint: event_json(e) for e in history.traces().events}
    assert events["chat"]["ttft_ms"] is None and events["chat"]["tpot_ms"] is None
    for r in results[1:]:
        assert events[r.endpoint]["ttft_ms"] == round(r.ttft_seconds * 1000, 3)
        assert events[r.endpoint]["tpot_ms"] == round(r.tpot_seconds * 1000, 3)


def test_azure_and_compatible_targets_stream(fake):
    azure = Prober(make_target(fake.root_url, provider="azure", api_version="2024-10-21",
                               models={"chat": "gpt-4o", "embeddings": "x"},
                               probes=("chat_stream",)), timeout_seconds=5)
    r = azure.run("chat_stream")
    assert r.success and r.ttft_seconds is not None and r.total_tokens > 0, r
    sent = fake.requests[-1]
    assert (sent["path"], sent["query"], sent["endpoint"]) == (
        "/openai/deployments/gpt-4o/chat/completions", {"api-version": "2024-10-21"},
        "chat_stream")
    assert sent["headers"]["api-key"] == "<redacted>" and "authorization" not in sent["headers"]
    compatible = Prober(make_target(fake.base_url, provider="openai_compatible",
                                    probes=STREAMS), timeout_seconds=5)
    for endpoint in STREAMS:
        r = compatible.run(endpoint)
        assert r.success and r.ttft_seconds is not None, r
        assert fake.requests[-1]["json"]["stream"] is True


def test_a_stream_still_arriving_at_the_deadline_is_cut(fake):
    # Every token arrives well within a socket read timeout; only the total deadline sees
    # that the whole stream (9 tokens, 0.25 s apart) takes longer than the probe may.
    fake.set_fault("chat_stream", "slow_tokens", delay_ms=250)
    r = Prober(make_target(fake.base_url), timeout_seconds=TIMEOUT).run("chat_stream")
    assert (r.error_type, r.http_status) == ("timeout", 200), r
    assert TIMEOUT <= r.duration_seconds < TIMEOUT + 0.5
    assert r.ttft_seconds is not None and r.ttft_seconds < 0.2


# ------------------------------------------------------------------ failures


@pytest.mark.parametrize("endpoint", STREAMS)
@pytest.mark.parametrize("fault, error_type", [
    ("cut_stream", "stream_interrupted"),
    ("reset_mid_body", "stream_interrupted"),
    ("empty_body", "stream_interrupted"),
    ("stream_error", "provider_unavailable"),
    ("stall_stream", "timeout"),
    ("slow_body", "timeout"),
    ("malformed", "invalid_response"),
    ("wrong_shape", "invalid_response"),
    ("html_200", "invalid_response"),
])
def test_stream_failure_classes(fake, endpoint, fault, error_type):
    fake.set_fault(endpoint, fault)
    timeout = 0.4 if error_type == "timeout" else TIMEOUT  # a stall waits for all of it
    r = Prober(make_target(fake.base_url), timeout_seconds=timeout).run(endpoint)
    assert (r.success, r.error_type, r.http_status) == (False, error_type, 200), r
    assert r.duration_seconds < timeout * 2.5
    if fault in ("cut_stream", "stream_error", "stall_stream"):
        assert r.ttft_seconds is not None  # content came before the failure
    if error_type == "stream_interrupted":
        assert "before its terminal event" in r.error_message


def test_a_failed_response_in_the_stream_is_classified_like_the_json_one(fake):
    prober = Prober(make_target(fake.base_url), timeout_seconds=TIMEOUT)
    fake.set_fault("*", "response_failed")
    streamed, plain = prober.run("responses_stream"), prober.run("responses")
    assert (streamed.error_type, streamed.error_message) == (
        plain.error_type, plain.error_message) == (
        "provider_error", "HTTP 200: response status 'failed', error code 'server_error'")


@pytest.mark.parametrize("fault, error_type, http_status", [
    f for f in FAULT_CLASSES if f[2] not in (None, 200)])
def test_http_errors_before_the_stream_classify_as_for_json_probes(fake, fault, error_type,
                                                                   http_status):
    prober = Prober(make_target(fake.base_url), timeout_seconds=TIMEOUT)
    fake.set_fault("*", fault)
    for plain, streamed in (("chat", "chat_stream"), ("responses", "responses_stream")):
        a, b = prober.run(plain), prober.run(streamed)
        assert (b.error_type, b.http_status) == (error_type, http_status), b
        assert b.error_message == a.error_message.replace(plain, streamed)
        assert b.ttft_seconds is None


@pytest.mark.parametrize("error, error_type", [
    ({"message": "m", "type": "tokens", "code": "rate_limit_exceeded"}, "rate_limited"),
    ({"message": "m", "type": "insufficient_quota", "code": "insufficient_quota"},
     "quota_exceeded"),
    ({"message": "m", "type": "insufficient_quota", "code": "credit_balance_exhausted"},
     "quota_exceeded"),
    ({"message": "m", "type": "service_unavailable_error", "code": "server_is_overloaded"},
     "provider_unavailable"),
    ({"message": "m", "type": "server_error", "code": None}, "provider_error"),
    ({"message": "m", "type": "invalid_request_error", "code": None}, "bad_request"),
    ({"message": "m", "type": "BadRequestError", "code": 400}, "bad_request"),  # vLLM
    ({"message": "m", "type": "mystery"}, "provider_error"),
])
def test_an_error_mid_stream_is_classified_by_its_code_and_type(scripted, error, error_type):
    handler, prober = scripted
    handler.answer = (200, "text/event-stream", [
        (0.0, ROLE), (0.0, chunk({"content": "Po"})),
        (0.0, b"data: " + json.dumps({"error": error}).encode() + b"\n\n")])
    r = prober.run("chat_stream")
    assert (r.success, r.error_type, r.http_status) == (False, error_type, 200), r
    assert r.error_message.startswith("HTTP 200: error event mid-stream")


def test_a_responses_error_event_is_classified_by_its_code(scripted):
    handler, prober = scripted
    error = {"type": "error", "code": "insufficient_quota", "message": "quota",
             "param": None, "sequence_number": 3}
    handler.answer = (200, "text/event-stream", [
        (0.0, b"event: response.created\ndata: {\"type\": \"response.created\"}\n\n"),
        (0.0, b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n")])
    r = prober.run("responses_stream")
    assert (r.error_type, r.error_message) == (
        "quota_exceeded", "HTTP 200: error event mid-stream (insufficient_quota): quota")


def test_a_stream_that_completes_without_content_is_invalid(scripted):
    handler, prober = scripted
    handler.answer = (200, "text/event-stream", [
        (0.0, ROLE), (0.0, chunk(finish="stop")),
        (0.0, chunk(choices=False, usage=usage(0))), (0.0, DONE)])
    r = prober.run("chat_stream")
    assert (r.error_type, r.error_message) == (
        "invalid_response", "HTTP 200: stream completed without content")
    # Cut short by the token cap before any text (a reasoning model): a success, no TTFT.
    handler.answer = (200, "text/event-stream", [
        (0.0, ROLE), (0.0, chunk(finish="length")),
        (0.0, chunk(choices=False, usage=usage(16))), (0.0, DONE)])
    r = prober.run("chat_stream")
    assert (r.success, r.ttft_seconds, r.tpot_seconds, r.output_tokens) == (True, None, None, 16)


def test_a_reasoning_model_on_the_fake_streams_no_text_and_succeeds(fake):
    prober = Prober(make_target(fake.base_url, models={"chat": "gpt-5-mini"}),
                    timeout_seconds=TIMEOUT)
    for endpoint in STREAMS:
        r = prober.run(endpoint)
        assert (r.success, r.ttft_seconds, r.output_tokens) == (True, None, 16), r


def test_responses_without_event_lines_are_read_by_their_type(scripted):
    handler, prober = scripted
    delta = {"type": "response.output_text.delta", "delta": "Po"}
    done = {"type": "response.completed", "response": {
        "id": "resp_1", "status": "completed",
        "usage": {"input_tokens": 5, "output_tokens": 1, "total_tokens": 6}}}
    handler.answer = (200, "text/event-stream", [
        (0.1, b"data: " + json.dumps(delta).encode() + b"\n\n"),
        (0.0, b"data: " + json.dumps(done).encode() + b"\n\n")])
    r = prober.run("responses_stream")
    assert r.success and r.ttft_seconds >= 0.1 and r.total_tokens == 6, r


def test_a_chat_stream_without_its_usage_chunk_succeeds_without_tokens(scripted):
    handler, prober = scripted
    handler.answer = (200, "text/event-stream", chat_script(["Po", "ng"], gap=0.0)[:-2]
                      + [(0.0, DONE)])
    r = prober.run("chat_stream")
    assert (r.success, r.total_tokens, r.cost_usd, r.tpot_seconds) == (True, 0, 0.0, None)
    assert r.ttft_seconds is not None


def test_a_null_error_field_in_chunks_is_not_an_error(scripted):
    handler, prober = scripted
    script = chat_script(["Po", "ng"], gap=0.0)
    handler.answer = (200, "text/event-stream", [
        (delay, data.replace(b'"choices"', b'"error": null, "choices"')) for delay, data in script])
    r = prober.run("chat_stream")
    assert r.success and r.output_tokens == 2, r


def test_a_json_answer_to_a_stream_request_is_invalid(scripted):
    handler, prober = scripted
    handler.answer = (200, "application/json", [(0.0, b'{"id": "chatcmpl-x"}')])
    r = prober.run("chat_stream")
    assert (r.error_type, r.error_message) == (
        "invalid_response",
        "HTTP 200 with content-type 'application/json', expected text/event-stream")


# ------------------------------------------------------------------ secrets

def test_the_canary_key_never_leaves_through_a_stream_failure(scripted, fake):
    """A mid-stream error echoing the key, and every stream fault of the fake: the key is
    in no ProbeResult, metric, trace or log line."""
    handler, prober = scripted
    echo = {"message": f"Incorrect API key provided: {CANARY_KEY}.", "type":
            "invalid_request_error", "code": "invalid_api_key"}
    handler.answer = (200, "text/event-stream", [
        (0.0, ROLE), (0.0, chunk({"content": "x"})),
        (0.0, b"data: " + json.dumps({"error": echo}).encode() + b"\n\n")])
    results = [prober.run("chat_stream")]
    assert results[0].error_type == "unauthorized"
    fake_prober = Prober(make_target(fake.base_url), timeout_seconds=0.5)
    for fault in ("cut_stream", "stream_error", "stall_stream", "reset_mid_body", "malformed",
                  "wrong_shape", "empty_body", "unauthorized"):
        fake.set_fault("*", fault)
        results += [fake_prober.run(e) for e in STREAMS]
    metrics = ExporterMetrics()
    history = MemoryHistory()
    for r in results:
        assert not r.success
        metrics.observe(r)
        history.add(r)
    dumps = [repr(results), generate_latest(metrics.registry).decode(),
             json.dumps([logs.probe_fields(r) for r in results]),  # the log line's fields
             json.dumps([event_json(e) for e in history.traces(TraceFilter(), 1000).events])]
    for text in dumps:
        assert CANARY_KEY not in text and CANARY_KEY[8:24] not in text
    assert "***" in results[0].error_message

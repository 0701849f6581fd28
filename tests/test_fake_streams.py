"""The fake upstream's streamed answers (facts §6) and stream faults, over real sockets."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
import requests

from exporter.catalogue import CATALOGUE
from exporter.fake import FakeUpstream
from exporter.fake.faults import STREAM_FAULTS, FaultBook
from exporter.fake.routes import ROUTED_ENDPOINTS
from tests.test_fake_upstream import AUTH, KEY, RL_HEADERS, call, sse_events

SSE = "text/event-stream; charset=utf-8"


@pytest.fixture
def fake():
    with FakeUpstream(api_key=KEY) as server:
        yield server


def chunks_of(resp: requests.Response) -> list[dict]:
    events = sse_events(resp)
    assert events[-1] == ("message", "[DONE]")
    assert all(name == "message" for name, _ in events)  # chat sends no event: lines
    return [json.loads(data) for _, data in events[:-1]]


def test_chat_stream_is_the_recorded_wire_format(fake: FakeUpstream) -> None:
    resp = call(fake, "chat_stream")
    assert resp.status_code == 200 and resp.headers["content-type"] == SSE
    assert resp.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in resp.headers
    assert all(name in resp.headers for name in RL_HEADERS)
    raw = resp.content
    assert raw.startswith(b"data: {") and raw.endswith(b"\n\ndata: [DONE]\n\n")
    assert b"\r" not in raw and b"\nevent:" not in raw  # LF only, data lines only
    chunks = chunks_of(resp)
    role, *content, finish, usage = chunks
    assert role["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": "",
                                                      "refusal": None},
                                "logprobs": None, "finish_reason": None}]
    assert all(set(c["choices"][0]["delta"]) == {"content"} for c in content)
    assert "".join(c["choices"][0]["delta"]["content"] for c in content) == (
        "Pong! How can I help you today?")
    assert finish["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                    "finish_reason": "stop"}
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == len(content)
    u = usage["usage"]
    assert u["prompt_tokens"] + u["completion_tokens"] == u["total_tokens"]
    assert all(c["usage"] is None for c in chunks[:-1])  # null but on the usage chunk
    assert {(c["id"], c["created"], c["object"]) for c in chunks} == {
        (role["id"], role["created"], "chat.completion.chunk")}
    assert not any("obfuscation" in c for c in chunks)  # the probe turns it off
    # The stream's tokens count against the key's window like a JSON answer's.
    spent = 200000 - int(resp.headers["x-ratelimit-remaining-tokens"])
    assert spent == u["total_tokens"]


def test_chat_stream_options_decide_usage_and_obfuscation(fake: FakeUpstream) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "ping"}],
            "stream": True}
    plain = chunks_of(call(fake, "chat_stream", body=body))
    assert all("usage" not in c and c["choices"] for c in plain)  # no usage chunk at all
    assert all(c["obfuscation"] for c in plain)  # on by default
    body["stream_options"] = {"include_usage": True}
    assert chunks_of(call(fake, "chat_stream", body=body))[-1]["usage"]["total_tokens"] > 0
    # stream_options without stream is refused, as the API does.
    body["stream"] = False
    resp = call(fake, "chat", body=body)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "stream_options"


def test_responses_stream_events_carry_their_type_and_sequence(fake: FakeUpstream) -> None:
    resp = call(fake, "responses_stream")
    assert resp.headers["content-type"] == SSE and b"[DONE]" not in resp.content
    events = [(name, json.loads(data)) for name, data in sse_events(resp)]
    assert all(name == obj["type"] for name, obj in events)
    assert [obj["sequence_number"] for _, obj in events] == list(range(len(events)))
    names = [name for name, _ in events]
    deltas = [obj["delta"] for name, obj in events if name == "response.output_text.delta"]
    assert names == (["response.created", "response.in_progress",
                      "response.output_item.added", "response.content_part.added"]
                     + ["response.output_text.delta"] * len(deltas)
                     + ["response.output_text.done", "response.content_part.done",
                        "response.output_item.done", "response.completed"])
    assert "".join(deltas) == "Pong! How can I help you today?"
    created, completed = events[0][1]["response"], events[-1][1]["response"]
    assert (created["status"], created["usage"], created["output"]) == ("in_progress", None, [])
    assert completed["status"] == "completed" and completed["store"] is False
    assert completed["usage"]["output_tokens"] == len(deltas)
    assert completed["id"] == created["id"]


def test_a_reasoning_model_spends_the_cap_before_any_text(fake: FakeUpstream) -> None:
    events = sse_events(call(fake, "responses_stream", model="gpt-5-mini"))
    names = [name for name, _ in events]
    assert "response.output_text.delta" not in names
    assert names[-1] == "response.incomplete"
    final = json.loads(events[-1][1])["response"]
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    chat = chunks_of(call(fake, "chat_stream", model="gpt-5-mini"))
    assert not any(c["choices"] and c["choices"][0]["delta"].get("content") for c in chat)
    assert chat[-2]["choices"][0]["finish_reason"] == "length"


def _arrivals(fake: FakeUpstream, endpoint: str) -> list[tuple[float, bytes]]:
    """(seconds since the request, bytes) of each read of a streamed answer."""
    started = time.monotonic()
    resp = call_stream(fake, endpoint)
    out = []
    for piece in resp.iter_content(chunk_size=None):
        out.append((time.monotonic() - started, piece))
    return out


def call_stream(fake: FakeUpstream, endpoint: str) -> requests.Response:
    """The probe's request, its answer read as it arrives."""
    probe = CATALOGUE[endpoint]
    return requests.post(fake.base_url + probe.path, json=probe.body("gpt-4o-mini"),
                         headers={**AUTH, **probe.headers}, stream=True, timeout=5)


def test_slow_first_token_sends_the_role_chunk_at_once(fake: FakeUpstream) -> None:
    fake.set_fault("chat_stream", "slow_first_token", delay_ms=300)
    arrivals = _arrivals(fake, "chat_stream")
    head = [t for t, data in arrivals if b'"role":"assistant"' in data]
    first = next(t for t, data in arrivals if b'"content":"Pong"' in data)
    assert head and head[0] < 0.2  # the role-only chunk: immediately
    assert 0.3 <= first < 1.0


def test_slow_tokens_space_the_content_events(fake: FakeUpstream) -> None:
    fake.set_fault("responses_stream", "slow_tokens", delay_ms=40)
    reads = [(t, data.count(b"event: response.output_text.delta"))
             for t, data in _arrivals(fake, "responses_stream")]
    times = [t for t, n in reads if n]
    assert sum(n for _, n in reads) == 9
    # The first token comes with the head, the other eight 40 ms apart: the last cannot
    # arrive before 8 gaps have passed (a loaded client may read two tokens in one go, so
    # that bound is what is certain, not each gap).
    assert times[0] < 0.2 and times[-1] >= 8 * 0.04 * 0.95


@pytest.mark.parametrize("endpoint", ["chat_stream", "responses_stream"])
def test_cut_stream_closes_after_the_content(fake: FakeUpstream, endpoint: str) -> None:
    fake.set_fault(endpoint, "cut_stream")
    resp = call_stream(fake, endpoint)
    received = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for piece in resp.iter_content(chunk_size=None):
            received += piece
    assert b"Pong" in received and b"[DONE]" not in received
    assert b"usage" not in received.replace(b'"usage":null', b"")  # no usage reached us
    assert b"response.completed" not in received


def test_stream_error_chat_and_responses(fake: FakeUpstream) -> None:
    fake.set_fault("*", "stream_error")
    chat = sse_events(call(fake, "chat_stream"))
    assert json.loads(chat[-1][1])["error"]["code"] == "server_is_overloaded"
    assert ("message", "[DONE]") not in chat and any("Pong" in d for _, d in chat)
    events = [(n, json.loads(d)) for n, d in sse_events(call(fake, "responses_stream"))]
    (err_name, err), (failed_name, failed) = events[-2:]
    assert (err_name, err["code"], err["param"]) == ("error", "server_is_overloaded", None)
    assert failed_name == "response.failed"
    assert failed["response"]["error"]["code"] == "server_error"
    assert [e["sequence_number"] for _, e in events] == list(range(len(events)))
    # "*" reaches streams only: a plain answer is untouched.
    assert call(fake, "chat").json()["object"] == "chat.completion"


def test_a_stall_holds_until_its_delay_or_stop() -> None:
    fake = FakeUpstream(api_key=KEY).start()
    try:
        fake.set_fault("chat_stream", "stall_stream", delay_ms=100, count=1)
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            call(fake, "chat_stream")
        assert 0.1 <= time.monotonic() - started < 2
        fake.set_fault("chat_stream", "stall_stream")  # until stop()
        outcome: list[BaseException] = []

        def client() -> None:
            try:
                call(fake, "chat_stream", timeout=30)
            except requests.RequestException as err:
                outcome.append(err)

        thread = threading.Thread(target=client)
        thread.start()
        time.sleep(0.2)
        started = time.monotonic()
    finally:
        fake.stop()
    assert time.monotonic() - started < 1.0
    thread.join(timeout=2)
    assert not thread.is_alive() and outcome


def test_stream_faults_are_refused_on_answers_that_do_not_stream(fake: FakeUpstream) -> None:
    for fault in STREAM_FAULTS:
        with pytest.raises(ValueError, match="streamed answers only"):
            fake.set_fault("chat", fault)
    resp = requests.post(fake.root_url + "/__fake__/faults", timeout=5,
                         json={"endpoint": "models", "fault": "cut_stream"})
    assert resp.status_code == 400
    resp = requests.post(fake.root_url + "/__fake__/faults", timeout=5,
                         json={"endpoint": "responses_stream", "fault": "cut_stream"})
    assert resp.json()["faults"]["responses_stream"]["fault"] == "cut_stream"
    proc = subprocess.run([sys.executable, "-m", "exporter.fake", "--fault", "chat=cut_stream"],
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode == 2 and "usage:" in proc.stderr and "Traceback" not in proc.stderr


def test_the_cli_takes_a_stream_fault() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter.fake", "--port", "0", "--api-key", KEY,
         "--fault", "chat_stream=stream_error"], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        base = proc.stderr.readline().rsplit(" ", 1)[1].strip()  # "... listening on URL"
        events = sse_events(call(SimpleNamespace(base_url=base), "chat_stream"))
        assert "error" in json.loads(events[-1][1])
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        proc.stderr.close()


def test_chaos_streams_show_every_stream_fault() -> None:
    book = FaultBook(ROUTED_ENDPOINTS, chaos=True, seed=5, time_scale=0)
    stream_faults = [book.take("chat_stream")[0] for _ in range(4000)]
    seen = {f.name for f in stream_faults if f is not None}
    assert set(STREAM_FAULTS) <= seen
    assert all(f.delay_ms == 0 for f in stream_faults
               if f is not None and f.name in ("slow_first_token", "stall_stream"))
    plain = {f.name for f in (book.take("models")[0] for _ in range(4000)) if f is not None}
    assert not plain & set(STREAM_FAULTS)

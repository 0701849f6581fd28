"""The reader seam: a new way of reading a body is a catalogue entry plus a reader.

The toy reader below is registered by the test only (never in the shipped catalogue):
newline-delimited JSON events, the last one carrying usage. The Prober, settings and
metrics are not touched, yet the probe runs end to end over a real socket: send, the
toy read under the probe's deadline and clock, classify, one ProbeResult.
"""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from exporter.catalogue import CATALOGUE, Probe, ShapeError
from exporter.prober import Prober
from exporter.readers import (
    READERS, ProbeClock, Reading, check_catalogue, chunks, reader_for,
)
from exporter.settings import TargetSettings

CANARY = "sk-canary-Zq8rT3vB9xW2mN5kL7pJ"


def check_usage(doc) -> tuple[int, int, int]:
    usage = doc.get("usage") if isinstance(doc, dict) else None
    if not isinstance(usage, dict):
        raise ShapeError("missing field(s): usage")
    return usage["input"], usage["output"], usage["total"]


def read_lines(resp, probe: Probe, clock: ProbeClock) -> Reading:
    """Newline-delimited JSON events; content marks taken as they arrive."""
    nbytes, pending = 0, b""
    marks: dict[str, float] = {}
    last = None
    for chunk in chunks(resp, clock):
        nbytes += len(chunk)
        *lines, pending = (pending + chunk).split(b"\n")
        for line in filter(None, lines):
            last = json.loads(line)
            if "delta" in last:
                marks.setdefault("first_content", clock.elapsed())
                marks["last_content"] = clock.elapsed()
    if last is None or "usage" not in last:
        return Reading(nbytes, error_type="invalid_response", marks=marks,
                       message=f"HTTP {resp.status_code}: stream ended before its usage")
    return Reading(nbytes, usage=probe.check(last), marks=marks)


class _Upstream(http.server.BaseHTTPRequestHandler):
    """Answers GET /v1/toy with the (status, content-type, [(delay_s, bytes)]) of the test."""

    answer: tuple[int, str, list[tuple[float, bytes]]] = (200, "", [])
    seen_auth: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        status, content_type, parts = self.answer
        type(self).seen_auth.append(self.headers.get("Authorization", ""))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("x-request-id", "req_toy")
        self.end_headers()
        for delay, data in parts:
            time.sleep(delay)
            self.wfile.write(data)
            self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def toy(monkeypatch):
    """The toy reader and probe, registered the way a new kind would be; a local server."""
    seen: list[Reading] = []

    def recording(resp, probe, clock):
        seen.append(read_lines(resp, probe, clock))
        return seen[-1]

    monkeypatch.setitem(READERS, "toy", recording)
    monkeypatch.setitem(CATALOGUE, "toy", Probe("toy", "GET", "/toy", check_usage,
                                                reader="toy"))
    handler = type("Handler", (_Upstream,), {"seen_auth": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    target = TargetSettings(name="local", provider="openai", api_key=CANARY,
                            base_url=f"http://127.0.0.1:{server.server_port}/v1",
                            probes=("toy",))
    try:
        yield handler, Prober(target, timeout_seconds=1.0), seen
    finally:
        server.shutdown()
        server.server_close()


EVENTS = [(0.15, b'{"delta": "po"}\n{"del'), (0.1, b'ta": "ng"}\n'),
          (0.0, b'{"usage": {"input": 3, "output": 2, "total": 5}}\n')]


def test_a_new_reader_kind_runs_end_to_end(toy):
    handler, prober, seen = toy
    check_catalogue(CATALOGUE)  # the registered name passes the catalogue check
    handler.answer = (200, "application/x-ndjson", EVENTS)
    r = prober.run("toy")
    assert (r.success, r.error_type, r.http_status, r.endpoint, r.model) == (
        True, "none", 200, "toy", "")
    assert (r.input_tokens, r.output_tokens, r.total_tokens) == (3, 2, 5)
    assert r.response_bytes == sum(len(data) for _, data in EVENTS)
    assert r.request_id == "req_toy" and handler.seen_auth == [f"Bearer {CANARY}"]
    # marks are seconds since the probe's start, taken as the events arrived
    marks = seen[0].marks
    assert 0.15 <= marks["first_content"] < marks["last_content"] <= r.duration_seconds
    assert marks["last_content"] - marks["first_content"] >= 0.1


def test_a_failure_the_reader_finds_is_its_error_type(toy):
    handler, prober, _ = toy
    handler.answer = (200, "application/x-ndjson", EVENTS[:2])  # closed before usage
    r = prober.run("toy")
    assert (r.success, r.error_type, r.http_status) == (False, "invalid_response", 200)
    assert r.error_message == "HTTP 200: stream ended before its usage"
    assert r.response_bytes == len(EVENTS[0][1]) + len(EVENTS[1][1])


def test_the_probe_deadline_bounds_a_new_reader_too(toy):
    handler, prober, seen = toy
    trickle = [(0.2, b'{"delta": "x"}\n')] * 10  # each event in time, the whole too slow
    handler.answer = (200, "application/x-ndjson", trickle)
    r = prober.run("toy")
    assert (r.error_type, r.http_status, seen) == ("timeout", 200, [])
    assert r.error_message == "timed out after 1s (_Deadline)"
    assert 1.0 <= r.duration_seconds < 1.5


def test_an_error_answer_never_reaches_the_reader(toy):
    handler, prober, seen = toy
    body = json.dumps({"error": {"message": f"Incorrect API key provided: {CANARY}",
                                 "type": "invalid_request_error", "code": "invalid_api_key"}})
    handler.answer = (401, "application/json", [(0.0, body.encode())])
    r = prober.run("toy")
    assert (r.error_type, r.http_status, seen) == ("unauthorized", 401, [])
    assert r.error_message == "HTTP 401: Incorrect API key provided: ***"  # redacted


def test_a_probe_naming_an_unknown_reader_is_refused_by_the_catalogue_check():
    bad = {"x": Probe("x", "GET", "/x", check_usage, reader="ndjson")}
    with pytest.raises(ValueError) as info:
        check_catalogue(bad)
    assert str(info.value) == "probe 'x': unknown reader 'ndjson' (known: json, sse)"


def test_every_shipped_probe_reads_json_but_the_streams():
    readers = {name: reader_for(p).__name__ for name, p in CATALOGUE.items()}
    assert {n for n, r in readers.items() if r == "read_sse"} == {"chat_stream",
                                                                  "responses_stream"}
    assert set(readers.values()) == {"read_json", "read_sse"}

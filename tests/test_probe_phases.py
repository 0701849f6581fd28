"""Phase timings, the connection policy, the start mark and the whole-probe deadline, over
real sockets: the fake upstream, and small local servers (plain and TLS) in this file
that count the connections they accept and trickle bytes."""

from __future__ import annotations

import dataclasses
import http.server
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from exporter.fake import FakeUpstream
from exporter.prober import Prober
from exporter.result import PHASES
from tests.conftest import clean_env, make_target
from tests.tools import require_tool

MODELS_BODY = json.dumps({"object": "list", "data": [
    {"id": "gpt-4o-mini", "object": "model", "created": 1, "owned_by": "system"}]}).encode()


def _chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
    obj = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
           "model": "gpt-4o-mini", "usage": usage,
           "choices": [] if usage else [{"index": 0, "delta": delta,
                                         "finish_reason": finish}]}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


CHAT_STREAM = b"".join([
    _chunk({"role": "assistant", "content": ""}), _chunk({"content": "pong"}),
    _chunk({}, finish="stop"),
    _chunk({}, usage={"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}),
    b"data: [DONE]\n\n"])


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: only the client decides to reconnect
    server: Upstream

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer("application/json", MODELS_BODY)

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._answer("text/event-stream", CHAT_STREAM)

    def _answer(self, content_type: str, body: bytes) -> None:
        gap = self.server.trickle
        if self.server.trickle_head:  # the status line itself, one byte at a time
            for byte in b"HTTP/1.1 200 OK\r\n":
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                if self.server.stopping.wait(gap):
                    return
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        if not gap:
            self.wfile.write(body)
            return
        for byte in body:  # the body one byte every `gap` seconds
            if self.server.stopping.wait(gap):
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


class Upstream(http.server.ThreadingHTTPServer):
    """Answers GET with a model list and POST with a chat stream; counts accepts."""

    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self.accepts = 0
        self.trickle = 0.0  # seconds between body bytes; 0: all at once
        self.trickle_head = False
        self.stopping = threading.Event()

    def get_request(self):  # type: ignore[no-untyped-def]
        conn = super().get_request()
        self.accepts += 1
        return conn

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_port}/v1"


@pytest.fixture
def serve() -> Iterator:
    started: list[Upstream] = []

    def start(tls: ssl.SSLContext | None = None) -> Upstream:
        server = Upstream(tls)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stopping.set()
        server.shutdown()
        server.server_close()


def prober(base_url: str, connection: str = "fresh", timeout: float = 5.0) -> Prober:
    target = dataclasses.replace(make_target(base_url), connection=connection)
    return Prober(target, timeout_seconds=timeout)


def assert_adds_up(r) -> None:
    assert set(r.phases) <= set(PHASES)
    assert sum(r.phases.values()) == pytest.approx(r.duration_seconds, abs=1e-9), r.phases


# -- phases ---------------------------------------------------------------------------------

def test_json_probe_phases_add_up_to_its_duration(fake):
    fake.set_fault("models", "delay", delay_ms=200)
    r = prober(fake.base_url).run("models")
    assert r.success, r
    assert list(r.phases) == ["connect", "server", "transfer"]  # no tls on http://
    assert_adds_up(r)
    assert r.phases["connect"] > 0
    assert 0.2 <= r.phases["server"] < 0.4  # the injected delay is the server's


def test_stream_probe_phases_add_up_and_end_their_first_token_at_ttft(fake):
    fake.set_fault("chat_stream", "slow_first_token", delay_ms=300)
    r = prober(fake.base_url).run("chat_stream")
    assert r.success, r
    assert list(r.phases) == ["connect", "server", "first_token", "transfer"]
    assert_adds_up(r)
    # the role-only chunk came with the headers; the first content 300 ms later
    assert 0.3 <= r.phases["first_token"] < 0.5
    head = r.phases["connect"] + r.phases["server"] + r.phases["first_token"]
    assert head == pytest.approx(r.ttft_seconds, abs=1e-9)


@pytest.mark.parametrize("connection", ["fresh", "reuse"])
def test_phases_add_up_for_both_policies_and_both_readers(serve, connection):
    server = serve()
    p = prober(server.base_url, connection)
    for endpoint in ("models", "chat_stream", "models", "chat_stream"):
        r = p.run(endpoint)
        assert r.success, r
        assert_adds_up(r)


# -- the connection policy --------------------------------------------------------------------

def test_fresh_opens_a_connection_for_every_probe(serve):
    server = serve()
    p = prober(server.base_url, "fresh")
    results = [p.run("models") for _ in range(3)]
    assert all(r.success for r in results)
    assert server.accepts == 3
    assert all(r.phases["connect"] > 0 for r in results)


def test_reuse_keeps_the_warm_connection(serve):
    server = serve()
    p = prober(server.base_url, "reuse")
    results = [p.run("models") for _ in range(3)]
    assert all(r.success for r in results)
    assert server.accepts == 1
    assert results[0].phases["connect"] > 0
    assert [r.phases["connect"] for r in results[1:]] == [0.0, 0.0]


def _self_signed(tmp_path) -> tuple[str, str]:
    openssl = require_tool("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


@pytest.fixture
def tls_server(tmp_path, serve, monkeypatch):
    cert, key = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    # The prober verifies like every requests client: against REQUESTS_CA_BUNDLE here.
    for name, value in clean_env(REQUESTS_CA_BUNDLE=cert).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    return serve(ctx)


def test_tls_is_its_own_phase_on_every_fresh_probe(tls_server):
    p = prober(tls_server.base_url, "fresh")
    for endpoint in ("models", "chat_stream", "models"):
        r = p.run(endpoint)
        assert r.success, r
        assert list(r.phases)[:3] == ["connect", "tls", "server"]
        assert r.phases["tls"] > 0
        assert_adds_up(r)
    assert tls_server.accepts == 3


def test_a_reused_tls_connection_has_no_handshake(tls_server):
    p = prober(tls_server.base_url, "reuse")
    first, second = p.run("models"), p.run("models")
    assert first.success and second.success
    assert first.phases["tls"] > 0
    assert (second.phases["connect"], second.phases["tls"]) == (0.0, 0.0)
    assert tls_server.accepts == 1


def test_an_untrusted_certificate_fails_in_the_tls_phase(tls_server, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")  # the default bundle does not know it
    r = prober(tls_server.base_url).run("models")
    assert (r.error_type, r.error_message) == ("network", "TLS certificate verification failed")
    assert list(r.phases) == ["connect", "tls"]
    assert_adds_up(r)


# -- failed probes keep the phases they reached ---------------------------------------------

def test_a_refused_connection_is_all_connect():
    with Upstream() as s:  # bound, then closed: nothing listens
        url = s.base_url
    r = prober(url, timeout=2).run("models")
    assert r.error_type == "network"
    assert list(r.phases) == ["connect"]
    assert_adds_up(r)


def test_a_hanging_upstream_ends_in_the_server_phase(fake):
    fake.set_fault("models", "hang")
    r = prober(fake.base_url, timeout=0.5).run("models")
    assert r.error_type == "timeout"
    assert list(r.phases) == ["connect", "server"]
    assert r.phases["server"] >= 0.45
    assert_adds_up(r)


def test_a_stream_stalled_after_its_first_token_ends_in_transfer(fake):
    fake.set_fault("chat_stream", "stall_stream", delay_ms=5000)
    r = prober(fake.base_url, timeout=0.5).run("chat_stream")
    assert r.error_type == "timeout"
    assert list(r.phases) == ["connect", "server", "first_token", "transfer"]
    assert r.phases["transfer"] >= 0.45
    assert_adds_up(r)


def test_a_request_requests_refuses_to_prepare_is_a_failed_probe_not_a_crash(fake):
    target = dataclasses.replace(make_target(fake.base_url), headers={"X-Team": "a\nb"})
    r = Prober(target, timeout_seconds=5).run("models")  # the settings refuse this header
    assert (r.success, r.error_type, r.http_status, r.phases) == (False, "network", None, {})
    assert fake.requests == []


# -- the start mark: after the request is prepared ------------------------------------------

def test_request_preparation_is_not_in_the_duration(fake, monkeypatch):
    merge = requests.Session.merge_environment_settings

    def slow_merge(self, *args, **kwargs):  # a slow proxy / CA bundle lookup
        time.sleep(0.25)
        return merge(self, *args, **kwargs)

    get_netrc = requests.sessions.get_netrc_auth

    def slow_netrc(*args, **kwargs):  # a slow ~/.netrc on a network home
        time.sleep(0.25)
        return get_netrc(*args, **kwargs)

    monkeypatch.setattr(requests.Session, "merge_environment_settings", slow_merge)
    monkeypatch.setattr(requests.sessions, "get_netrc_auth", slow_netrc)
    t0 = time.perf_counter()
    r = prober(fake.base_url).run("models")
    assert time.perf_counter() - t0 >= 0.5  # both lookups ran...
    assert r.success and r.duration_seconds < 0.2  # ...before the clock started


# -- the deadline bounds the whole probe ----------------------------------------------------

TIMEOUT = 1.0


@pytest.mark.parametrize("endpoint", ["models", "chat_stream"])  # json and sse readers
def test_a_body_trickling_a_byte_every_0_9_s_ends_at_the_timeout(serve, endpoint):
    server = serve()
    server.trickle = 0.9  # every read waits 0.9 s: within any per-read timeout of 1 s
    r = prober(server.base_url, timeout=TIMEOUT).run(endpoint)
    assert (r.error_type, r.http_status) == ("timeout", 200), r
    assert TIMEOUT <= r.duration_seconds < TIMEOUT + 0.3
    assert_adds_up(r)
    # a stream still waiting for its first content ends in first_token
    assert list(r.phases)[-1] == ("first_token" if endpoint == "chat_stream" else "transfer")


def test_a_status_line_trickling_ends_at_the_timeout(serve):
    server = serve()
    server.trickle, server.trickle_head = 0.4, True
    r = prober(server.base_url, timeout=TIMEOUT).run("models")
    assert (r.error_type, r.http_status) == ("timeout", None), r
    assert TIMEOUT <= r.duration_seconds < TIMEOUT + 0.3
    assert list(r.phases) == ["connect", "server"]


# -- everywhere a probe shows: /metrics and /traces -----------------------------------------

def test_the_daemon_shows_the_phases_on_metrics_and_traces():
    from tests.test_main import Daemon

    with FakeUpstream(seed=3) as upstream:
        upstream.set_fault("models", "delay", delay_ms=100)
        d = Daemon(clean_env(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=upstream.base_url,
                             PROBE_ENDPOINTS="models", PROBE_INTERVAL_SEC="1"))
        try:
            d.wait_ready()
            server = d.wait_metric("openai_probe_phase_seconds", lambda v: v >= 0.1,
                                   endpoint="models", phase="server")
            assert server < 1.0
            assert d.metric("openai_probe_phase_seconds", endpoint="models",
                            phase="connect") > 0
            assert d.metric("openai_probe_phase_seconds", endpoint="models", phase="tls") == 0
            events = requests.get(d.url + "/traces?endpoint=models", timeout=5).json()
        finally:
            d.stop()
    event = events["events"][0] if isinstance(events, dict) else events[0]
    assert event["phase_server_ms"] >= 100 and event["phase_connect_ms"] > 0
    assert event["phase_tls_ms"] is None and event["phase_first_token_ms"] is None
    total = sum(event[f"phase_{p}_ms"] or 0 for p in PHASES)
    assert total == pytest.approx(event["duration_ms"], abs=0.01 * len(PHASES))

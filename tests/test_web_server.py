"""The HTTP server of a running exporter: bounded under idle and slow clients, IPv6 and
hostname listen addresses, HEAD answered with GET's headers and no body."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from exporter.web.server import HEAD_TIMEOUT_SECONDS, BoundedWSGIServer, serve
from tests.conftest import clean_env, free_port
from tests.test_main import ROOT

IDLE_SOCKETS = 3000
# The exporter's own threads: main, the HTTP loop and its worker pool, the scheduler and
# its probe pool, the demo's fake upstream. Far below one per connection.
MAX_THREADS = 64


class Exporter:
    """`python -m exporter` (the key-less demo) listening on `listen`."""

    def __init__(self, listen: str, url: str) -> None:
        self.url = url
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", f"--web.listen-address={listen}"], cwd=ROOT,
            # A short probe timeout bounds the SIGTERM drain (timeout + 2 s) in stop().
            env=clean_env(PROBE_INTERVAL_SEC="1", PROBE_MODE="all", HTTP_TIMEOUT_MS="3000"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                if requests.get(url + "/healthz", timeout=1).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError("exporter did not come up")

    def status(self, field: str) -> int:
        """A counter from /proc/<pid>/status (Threads, VmRSS in kB)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise KeyError(field)

    def stop(self) -> None:
        # SIGTERM drains the probes in flight for up to the probe timeout + 2 s (5 s here);
        # the rest is headroom for a loaded machine.
        self.proc.terminate()
        self.proc.communicate(timeout=30)


@pytest.fixture
def exporter():
    port = free_port()
    exp = Exporter(f"127.0.0.1:{port}", f"http://127.0.0.1:{port}")
    yield exp
    exp.stop()


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def test_metrics_answers_with_3000_idle_sockets_open_and_threads_stay_bounded():
    # Room for our 3,000 sockets and, in the child (which inherits the limit), theirs.
    _raise_fd_limit(2 * IDLE_SOCKETS + 1024)
    port = free_port()
    exp = Exporter(f"127.0.0.1:{port}", f"http://127.0.0.1:{port}")
    idle: list[socket.socket] = []
    try:
        threads_before = exp.status("Threads")
        idle = [_connect(port) for _ in range(IDLE_SOCKETS)]
        for _ in range(5):
            resp = requests.get(exp.url + "/metrics", timeout=5)
            assert resp.status_code == 200 and b"openai_exporter_build_info" in resp.content
            threads = exp.status("Threads")
            assert threads <= MAX_THREADS, (threads_before, threads)
    finally:
        for s in idle:
            s.close()
        exp.stop()


def _closed_by_peer(sock: socket.socket, wait: float) -> bool:
    """True if the peer closes (or resets) the connection within `wait` seconds."""
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_connections_are_closed_after_the_head_timeout(exporter):
    port = int(exporter.url.rsplit(":", 1)[1])
    socks = [_connect(port) for _ in range(20)]
    t0 = time.monotonic()
    try:
        assert all(_closed_by_peer(s, HEAD_TIMEOUT_SECONDS + 10) for s in socks)
        assert time.monotonic() - t0 >= HEAD_TIMEOUT_SECONDS - 0.5
    finally:
        for s in socks:
            s.close()


def test_slowloris_is_disconnected_after_the_head_timeout(exporter):
    port = int(exporter.url.rsplit(":", 1)[1])
    # 20 clients trickling a request head one byte a second ...
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    socks = [_connect(port) for _ in range(20)]
    t0 = time.monotonic()
    closed_at: dict[int, float] = {}
    try:
        for i in range(len(head)):
            for n, s in enumerate(socks):
                if n in closed_at:
                    continue
                try:
                    s.sendall(head[i:i + 1])
                except OSError:  # reset by the server: it dropped us
                    closed_at[n] = time.monotonic() - t0
                    continue
                s.settimeout(0)
                try:
                    if s.recv(1) == b"":
                        closed_at[n] = time.monotonic() - t0
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    closed_at[n] = time.monotonic() - t0
            # ... never hold up a scrape ...
            assert requests.get(exporter.url + "/metrics", timeout=5).status_code == 200
            if len(closed_at) == len(socks) or time.monotonic() - t0 > HEAD_TIMEOUT_SECONDS + 15:
                break
            time.sleep(1.0)
        # ... and are dropped once the head timeout has passed, not served one by one.
        assert len(closed_at) == len(socks), closed_at
        assert max(closed_at.values()) <= HEAD_TIMEOUT_SECONDS + 10
    finally:
        for s in socks:
            s.close()


def _raw(host: str, port: int, request: bytes) -> tuple[bytes, bytes]:
    """(status line and headers, body) of one request over a plain socket."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect((host, port))
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def test_head_answers_like_get_without_a_body_over_the_wire(exporter):
    port = int(exporter.url.rsplit(":", 1)[1])
    for path in ("/metrics", "/healthz", "/status", "/"):
        get_head, get_body = _raw("127.0.0.1", port, f"GET {path} HTTP/1.0\r\n\r\n".encode())
        head, body = _raw("127.0.0.1", port, f"HEAD {path} HTTP/1.0\r\n\r\n".encode())
        assert head.split(b"\r\n")[0].endswith(b"200 OK"), (path, head)
        assert body == b"", path
        length = [h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")]
        assert length, (path, head)
        if path in ("/healthz", "/"):  # the same bytes every time
            assert int(length[0].split(b":")[1]) == len(get_body) > 0, path


def _can_bind_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("listen,url_host", [
    pytest.param("[::1]", "[::1]", marks=pytest.mark.skipif(
        not _can_bind_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")),
    ("localhost", "localhost"),
])
def test_ipv6_and_hostname_listen_addresses_serve(listen, url_host):
    port = free_port()
    exp = Exporter(f"{listen}:{port}", f"http://{url_host}:{port}")
    try:
        assert requests.get(exp.url + "/metrics", timeout=5).status_code == 200
        assert requests.get(exp.url + "/status", timeout=5).json()["window_minutes"] == 60
        head, body = _raw(listen.strip("[]"), port, b"HEAD /metrics HTTP/1.0\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200") and body == b""
    finally:
        exp.stop()


@pytest.fixture
def small_server():
    """An in-process server that lets 8 connections wait for their head."""
    def app(environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = (f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}".encode()
                + environ["wsgi.input"].read(length))
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    httpd = BoundedWSGIServer(("127.0.0.1", 0), socket.AF_INET, workers=2, max_waiting=8)
    httpd.set_app(app)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_waiting_connections_beyond_the_cap_close_the_oldest(small_server):
    port = small_server.server_port
    socks = [_connect(port) for _ in range(20)]
    try:
        # The 12 oldest go at once, long before the head timeout; the 8 newest wait.
        assert all(_closed_by_peer(s, HEAD_TIMEOUT_SECONDS / 2) for s in socks[:12])
        assert not any(_closed_by_peer(s, 0.2) for s in socks[12:])
        assert _raw("127.0.0.1", port, b"GET /x HTTP/1.0\r\n\r\n")[1] == b"GET /x"
    finally:
        for s in socks:
            s.close()


def test_a_head_in_pieces_and_bare_line_feeds_are_served(small_server):
    port = small_server.server_port
    with _connect(port) as s:
        for piece in (b"GET /pieces HT", b"TP/1.0\r\nHost: x\r\n", b"\r\n"):
            s.sendall(piece)
            time.sleep(0.2)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.0 200") and data.endswith(b"GET /pieces")
    assert _raw("127.0.0.1", port, b"GET /lf HTTP/1.0\nHost: x\n\n")[1] == b"GET /lf"
    # A request body sent along with the head reaches the app's input.
    head, body = _raw("127.0.0.1", port, b"POST /b HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc")
    assert body == b"POST /babc"


def test_a_head_longer_than_64_kib_is_dropped_without_a_worker(small_server):
    with _connect(small_server.server_port) as s:
        try:
            s.sendall(b"GET / HTTP/1.0\r\nX-Big: " + b"a" * (65 * 1024))
        except OSError:  # reset while sending: dropped already
            return
        assert _closed_by_peer(s, HEAD_TIMEOUT_SECONDS / 2)


def test_serve_binds_ipv4_ipv6_and_hostnames():
    for host, family in (("127.0.0.1", socket.AF_INET), ("localhost", socket.AF_INET)):
        httpd, _ = serve(lambda e, sr: [], host, 0)
        assert httpd.socket.family == family
        httpd.shutdown()
        httpd.server_close()
    if _can_bind_ipv6_loopback():
        httpd, _ = serve(lambda e, sr: [], "[::1]", 0)
        assert httpd.socket.family == socket.AF_INET6
        httpd.shutdown()
        httpd.server_close()

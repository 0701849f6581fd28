"""HTTP plumbing: the threaded server, the control API on /__fake__/, and executing a Plan
on the socket (delays, hangs, resets, stalls, trickles)."""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .errors import error
from .exchange import Plan, dumps, plan_json
from .tables import JSON, Json

if TYPE_CHECKING:
    from .server import FakeUpstream

log = logging.getLogger(__name__)


class Server(http.server.ThreadingHTTPServer):
    """A threaded server that knows its open connections, so stop() can drop them all."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], fake: FakeUpstream) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.fake = fake
        self.stopping = threading.Event()  # set by stop(): cuts every wait short
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, Handler)

    def track(self, conn: socket.socket) -> None:
        """Remember an open connection."""
        with self._conns_lock:
            self._conns.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        """Forget a closed connection."""
        with self._conns_lock:
            self._conns.discard(conn)

    def close_connections(self) -> None:
        """Shut every open connection down, waking handlers blocked on reads."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):  # already gone
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a handler's exception, quietly when the client just went away."""
        # Clients hanging up mid-answer is routine here (timeouts are the point), and
        # stop() closing sockets under a handler ends in "I/O operation on closed file".
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)) or (
                isinstance(exc, ValueError) and "closed file" in str(exc)):
            log.debug("client %s went away: %r", client_address, exc)
            return
        super().handle_error(request, client_address)


class Handler(http.server.BaseHTTPRequestHandler):
    """One connection: read a request, ask the fake for a plan, execute it."""

    protocol_version = "HTTP/1.1"  # keep-alive, like a real client sees
    server: Server
    timeout = 300  # idle keep-alive connections end eventually in a long demo

    def version_string(self) -> str:
        """The Server header: what the real API answers behind."""
        return "cloudflare"

    def log_message(self, format: str, *args: Any) -> None:
        """Access log at debug level, not on stderr."""
        log.debug("%s " + format, self.address_string(), *args)

    def setup(self) -> None:
        """Set up the connection: no Nagle delay, and tracked for stop()."""
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle plus the
        # client's delayed ACK adds ~40 ms to every answer on a kept-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)

    def finish(self) -> None:
        """Flush and untrack the connection, even if the client is gone."""
        try:
            with contextlib.suppress(OSError):  # the client may have gone already
                super().finish()
        finally:
            self.server.untrack(self.connection)

    # -- request side --------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        fake = self.server.fake
        split = urlsplit(self.path)
        multi = parse_qs(split.query, keep_blank_values=True)
        query = {k: v[-1] for k, v in multi.items()}
        raw = self._read_body()
        if split.path.startswith("/__fake__/"):
            self._control(split.path, raw)
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        record: dict[str, Any] | None
        try:
            plan, record = fake.plan(self.command, split.path, query, headers, raw, multi)
        except Exception:  # a bug in the fake must not look like a network fault
            log.exception("fake upstream failed on %s %s", self.command, split.path)
            plan, record = plan_json(500, error("fake upstream bug", "server_error")), None
        self._execute(plan, record)

    # One dispatcher for every method: routing decides what a method may do.
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def _control(self, path: str, raw: bytes) -> None:
        """The test/demo control API on /__fake__/ (no auth: loopback tool)."""
        fake, method = self.server.fake, self.command
        try:
            if path == "/__fake__/faults" and method == "POST":
                spec = json.loads(raw or b"{}")
                if not isinstance(spec, dict):
                    raise ValueError("body must be a JSON object")
                fake.set_fault(spec.get("endpoint", "*"), spec.get("fault", ""),
                               count=spec.get("count"), delay_ms=spec.get("delay_ms"))
                self._reply(200, {"faults": fake.faults()})
            elif path == "/__fake__/faults" and method == "DELETE":
                fake.clear_faults()
                self._reply(200, {"faults": {}})
            elif path == "/__fake__/faults" and method == "GET":
                self._reply(200, {"faults": fake.faults()})
            elif path == "/__fake__/requests" and method == "GET":
                self._reply(200, fake.requests)
            elif path == "/__fake__/reset" and method == "POST":
                fake.reset()
                self._reply(200, {"reset": True})
            elif path == "/__fake__/health" and method == "GET":
                self._reply(200, {"status": "ok", "profile": fake.profile})
            else:
                self._reply(404, error(f"no control route {method} {path}", "not_found"))
        except ValueError as err:  # also json.JSONDecodeError
            self._reply(400, error(str(err), "invalid_request_error"))

    def _reply(self, status: int, body: Json) -> None:
        data = dumps(body)
        self.send_response(status)
        self.send_header("Content-Type", JSON)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    # -- answer side ---------------------------------------------------------------

    def wait(self, seconds: float | None) -> bool:
        """Sleep, cut short by stop(); True if the server is stopping."""
        return self.server.stopping.wait(seconds)

    def _execute(self, plan: Plan, record: dict[str, Any] | None) -> None:
        if plan.sleep_s > 0 and self.wait(plan.sleep_s):
            self.close_connection = True
            return
        silent = SILENT_TRANSPORTS.get(plan.transport)
        if silent is not None:  # nothing of an answer goes out
            silent(self, plan)
            return
        if record is not None:
            record["status"] = plan.status
        self.send_response(plan.status)
        headers = {"content-type": plan.content_type, "content-length": str(len(plan.body)),
                   "x-request-id": "req_" + uuid.uuid4().hex}
        if plan.stream is not None:  # sent as it is made, like the API: chunked
            del headers["content-length"]
            headers["transfer-encoding"] = "chunked"
        if not plan.edge:
            headers.update({"openai-version": "2020-10-01", "openai-organization": "user-fake",
                            "access-control-expose-headers": "X-Request-ID"})
        headers.update(plan.headers)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if plan.stream is not None:
            _stream(self, plan)
        else:
            TRANSPORTS[plan.transport](self, plan)

    def rst(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), like a dying proxy."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            # rfile holds a reference to the socket: drop it so close() is real.
            self.rfile.close()
            self.connection.close()
        except OSError:
            pass


# -- transports: how a plan's bytes go out -------------------------------------------

def _hang(h: Handler, plan: Plan) -> None:
    # Accept, read, say nothing; with a stall, hang up without an answer after it.
    h.wait(plan.stall_s)
    h.close_connection = True


def _reset(h: Handler, plan: Plan) -> None:
    h.rst()


def _normal(h: Handler, plan: Plan) -> None:
    h.wfile.write(plan.body)


def _trickle_body(h: Handler, plan: Plan) -> None:
    # Every read finishes quickly; only a total deadline notices.
    for start in range(0, len(plan.body), 16):
        h.wfile.write(plan.body[start:start + 16])
        if start + 16 < len(plan.body) and h.wait(plan.trickle_s):
            h.close_connection = True
            return


def _slow_body(h: Handler, plan: Plan) -> None:
    # Headers promptly, a few body bytes, then nothing until the stall ends
    # (connection closed with the body incomplete) or stop().
    h.wfile.write(plan.body[:8])
    h.wait(plan.stall_s)
    h.close_connection = True


def _reset_mid_body(h: Handler, plan: Plan) -> None:
    h.wfile.write(plan.body[: len(plan.body) // 2])
    time.sleep(0.02)  # let the client read the headers before the RST lands
    h.rst()


def _stream(h: Handler, plan: Plan) -> None:
    # One HTTP chunk per part, each after its delay; then the end the plan says: the
    # last chunk (done), a close without it (cut), a stall then a close, or an RST.
    stream = plan.stream
    assert stream is not None
    for part in stream.parts:
        if part.delay_s > 0 and h.wait(part.delay_s):
            h.close_connection = True
            return
        h.wfile.write(b"%x\r\n%s\r\n" % (len(part.data), part.data))
    if stream.end == "done":
        h.wfile.write(b"0\r\n\r\n")
        return
    if stream.end == "stall":
        h.wait(plan.stall_s)
    elif stream.end == "reset":
        time.sleep(0.02)  # let the client read what was sent before the RST lands
        h.rst()
        return
    h.close_connection = True  # cut: the chunked body never ends


Transport = Callable[[Handler, Plan], None]

SILENT_TRANSPORTS: dict[str, Transport] = {"hang": _hang, "reset": _reset}
"""Transports that send no status line: the plan's answer never goes out."""

TRANSPORTS: dict[str, Transport] = {
    "normal": _normal, "trickle_body": _trickle_body, "slow_body": _slow_body,
    "reset_mid_body": _reset_mid_body,
}
"""Plan.transport -> how the body follows the headers."""

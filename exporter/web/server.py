"""The HTTP server: prometheus_client's ThreadingWSGIServer, bounded.

The library's server starts one thread per connection and waits forever for its request,
so every idle or slow client costs a thread (3,000 idle sockets: 3,020 threads, +77 MB).
Here a connection costs a file descriptor until its request head has arrived:

* the serving thread accepts connections and reads their request heads itself, without
  blocking, from one selector (an idle client costs an fd and a few hundred bytes);
* a complete head goes to a fixed pool of WORKERS threads, which run the WSGI app and send
  the answer (one request per connection: wsgiref speaks HTTP/1.0);
* a head not complete HEAD_TIMEOUT_SECONDS after the accept is dropped, whether the client
  sent nothing (idle) or a byte now and then (slowloris), so it never holds a worker;
* at most `max_waiting` connections wait for their head; beyond that the oldest is
  closed, so descriptors stay bounded;
* a worker's socket operations time out after IO_TIMEOUT_SECONDS, so a client that stops
  reading its answer frees the worker.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import queue
import resource
import selectors
import socket
import threading
import time
from collections import OrderedDict
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler

from prometheus_client.exposition import ThreadingWSGIServer

from .app import WSGIApp

log = logging.getLogger("exporter.web")

# From accept to a complete request head. Prometheus, curl and browsers send the head at
# once; 5 s leaves room for a slow link and closes idle and slowloris sockets early.
HEAD_TIMEOUT_SECONDS = 5.0
# Once a worker has the request: each read of a body and the whole sending of the answer.
# 10 s sends the largest answer (/metrics uncompressed, ~1 MB) over a ~1 Mbit/s link.
IO_TIMEOUT_SECONDS = 10.0
# Requests served at once. The work is CPU-bound under the GIL (rendering /metrics,
# merging sketches) or short SQLite reads, so more threads add no throughput; 16 lets a
# few slow readers or a burst of page loads not delay a scrape.
WORKERS = 16
# Connections waiting for their head, at most: ~1 KB and one fd each. Never more than the
# descriptors left after FD_RESERVE (probe connections, SQLite, logs, workers' sockets).
MAX_WAITING = 4096
FD_RESERVE = 512
MIN_WAITING = 64
# A longer head is refused (the connection closed): browsers send a few KB at most.
MAX_HEAD_BYTES = 64 * 1024
_ACCEPT_PAUSE_SECONDS = 0.05  # out of descriptors and nothing to drop: do not spin


def waiting_cap(max_waiting: int = MAX_WAITING) -> int:
    """How many connections may wait for their head under this process's fd limit."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_waiting
    return max(MIN_WAITING, min(max_waiting, soft - FD_RESERVE))


class _Waiting:
    """An accepted connection and the bytes of its request head so far."""

    __slots__ = ("sock", "addr", "head", "deadline")

    def __init__(self, sock: socket.socket, addr: Any, deadline: float) -> None:
        self.sock = sock
        self.addr = addr
        self.head = bytearray()
        self.deadline = deadline

    def complete(self, searched_from: int) -> bool:
        """True once the head's blank line has arrived (CRLF or bare LF)."""
        start = max(0, searched_from - 2)
        return (self.head.find(b"\n\r\n", start) >= 0 or self.head.find(b"\n\n", start) >= 0)


class _Prefixed(io.RawIOBase):
    """A socket's raw reader that first gives back the bytes already read from it."""

    def __init__(self, head: bytes, raw: io.RawIOBase) -> None:
        self._head = memoryview(head)
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int | None:
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._raw.readinto(buf)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _LogStream:
    """Where wsgiref prints the traceback of an answer it could not send (a client that
    stopped reading): to the log at DEBUG, not as raw lines on stderr."""

    def __init__(self) -> None:
        self._parts: list[str] = []

    def write(self, text: str) -> None:
        self._parts.append(text)

    def flush(self) -> None:
        if self._parts:
            log.debug("http: %s", "".join(self._parts).rstrip())
            self._parts.clear()


class _Handler(WSGIRequestHandler):
    """wsgiref's handler, fed the head the server already read, quiet."""

    timeout = IO_TIMEOUT_SECONDS  # StreamRequestHandler.setup puts it on the socket

    def setup(self) -> None:
        conn: _Waiting = self.request
        self.request = conn.sock
        super().setup()
        self.rfile.close()
        self.rfile = io.BufferedReader(_Prefixed(bytes(conn.head), conn.sock.makefile("rb", 0)))

    def get_stderr(self) -> Any:
        return _LogStream()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass  # one line per scrape would drown the probe lines


class BoundedWSGIServer(ThreadingWSGIServer):
    """ThreadingWSGIServer with a selector for request heads and a fixed worker pool
    instead of a thread per connection (see the module docstring)."""

    request_queue_size = socket.SOMAXCONN  # a burst of connects waits in the kernel

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily,
                 workers: int = WORKERS, max_waiting: int | None = None) -> None:
        self.address_family = family
        self.max_waiting = waiting_cap() if max_waiting is None else max_waiting
        self._waiting: OrderedDict[socket.socket, _Waiting] = OrderedDict()  # oldest first
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._stopped = threading.Event()
        self._stopped.set()  # nothing to wait for until serve_forever runs
        self._jobs: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        # Binds; on failure it calls server_close(), which needs the fields above, and
        # raises the OSError (a port in use) that main() reports as a bad setting.
        super().__init__(address, _Handler)
        self._workers = [threading.Thread(target=self._work, name=f"http-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._workers:
            t.start()

    # -- the serving thread ---------------------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept, read request heads, expire the slow ones; until shutdown()."""
        self._stopped.clear()
        sel = self._selector
        self.socket.setblocking(False)
        sel.register(self.socket, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while not self._stopping:
                timeout = poll_interval
                if self._waiting:
                    oldest = next(iter(self._waiting.values()))
                    timeout = min(timeout, max(0.0, oldest.deadline - time.monotonic()))
                for key, _events in sel.select(timeout):
                    if key.fileobj is self.socket:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._wake_r.recv(64)
                    else:
                        self._read_head(key.data)
                self._expire()
        finally:
            for conn in list(self._waiting.values()):
                self._drop(conn)
            sel.unregister(self.socket)
            sel.unregister(self._wake_r)
            self._stopping = False  # as BaseServer: serve_forever may run again
            self._stopped.set()

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                # Out of descriptors: free one by dropping the oldest waiting connection,
                # or pause, rather than spin on a listener that stays readable.
                if self._waiting:
                    self._drop(next(iter(self._waiting.values())))
                else:
                    time.sleep(_ACCEPT_PAUSE_SECONDS)
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("http: connection from %s failed", client_address, exc_info=True)

    def _accept(self) -> None:
        """Accept one connection and park it until its request head has arrived."""
        try:
            request, client_address = self.get_request()
        except OSError:  # the client gave up already, or out of descriptors (see above)
            return
        request.setblocking(False)
        conn = _Waiting(request, client_address, time.monotonic() + HEAD_TIMEOUT_SECONDS)
        self._waiting[request] = conn
        self._selector.register(request, selectors.EVENT_READ, conn)
        while len(self._waiting) > self.max_waiting:
            self._drop(next(iter(self._waiting.values())))

    def _read_head(self, conn: _Waiting) -> None:
        if self._waiting.get(conn.sock) is not conn:
            return  # dropped earlier in this round (over the cap, out of descriptors)
        try:
            chunk = conn.sock.recv(MAX_HEAD_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:  # closed or reset by the client
            self._drop(conn)
            return
        searched = len(conn.head)
        conn.head += chunk
        if conn.complete(searched):
            self._unpark(conn)
            conn.sock.setblocking(True)
            self._jobs.put(conn)
        elif len(conn.head) > MAX_HEAD_BYTES:
            self._drop(conn)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._waiting:
            oldest = next(iter(self._waiting.values()))
            if oldest.deadline > now:
                break
            self._drop(oldest)

    def _unpark(self, conn: _Waiting) -> None:
        del self._waiting[conn.sock]
        self._selector.unregister(conn.sock)

    def _drop(self, conn: _Waiting) -> None:
        self._unpark(conn)
        self.close_request(conn.sock)

    def shutdown(self) -> None:
        """Stop serve_forever and wait for it (waiting connections are closed)."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        for _ in self._workers:
            self._jobs.put(None)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- the workers ------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            conn = self._jobs.get()
            if conn is None:
                return
            try:
                self.finish_request(conn, conn.addr)  # type: ignore[arg-type]
            except Exception:  # a client gone or too slow: nothing to answer, nothing to fix
                log.debug("http: connection from %s failed", conn.addr, exc_info=True)
            finally:
                self.shutdown_request(conn.sock)


def listen_family(host: str, port: int) -> tuple[socket.AddressFamily, str]:
    """The address family and address to bind for a listen host: an IP address as given,
    a hostname by its IPv4 address when it has one (as before), else its first address."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = next((i for i in infos if i[0] == socket.AF_INET), infos[0])
    return family, str(sockaddr[0])


def serve(app: WSGIApp, host: str, port: int) -> tuple[BoundedWSGIServer, threading.Thread]:
    """Start serving in a daemon thread; returns the server (for .server_port, .shutdown()
    and .server_close()). Raises OSError when the address cannot be bound."""
    family, addr = listen_family(host.strip("[]"), port)
    httpd = BoundedWSGIServer((addr, port), family)
    httpd.set_app(app)
    thread = threading.Thread(target=httpd.serve_forever, name="http", daemon=True)
    thread.start()
    return httpd, thread

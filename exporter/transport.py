"""The probe's transport: requests over urllib3 connections that time each phase, keep the
probe's deadline on every socket operation, and reuse connections or not (the policy).

``Prober`` sends with a ``requests.Session`` whose adapter is ``TimedAdapter``: its pools
make ``TimedHTTPConnection`` / ``TimedHTTPSConnection``, which take perf_counter marks
(TCP connect start and end, TLS handshake end, response headers in) into the ``ProbeTimer``
of the probe running on this thread (``begin``/``end``; requests sends in the caller's
thread, so a thread-local is the probe's own). Outside a probe (no timer) they behave as
urllib3's.

The deadline: requests' timeouts bound one socket operation each, so a body trickling a
byte just inside the read timeout could run far past it. With a timer, the connect gets
the time left, the TLS handshake the time left after the connect, and every read of the
response (status line, headers, body) the time left at that read, so the whole probe ends
within its timeout (plus one scheduling slice).

The policy: ``fresh`` closes every connection when its response is done, so each probe
opens its own TCP (+ TLS) connection and measures the same path, like blackbox_exporter;
``reuse`` keeps the pooled warm connection per target x endpoint, as an SDK would.

``phases`` turns the marks into the probe's phases (exporter/result.py PHASES):
consecutive segments from the probe's start mark to its end, so they sum to its duration.
"""

from __future__ import annotations

import http.client
import io
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

CONNECTION_POLICIES = ("fresh", "reuse")

_current = threading.local()


@dataclass
class ProbeTimer:
    """The marks of one probe on the perf_counter clock (None: not reached), and its
    deadline. Written by the connection classes, read by ``phases``."""

    started: float
    deadline: float
    connect_started: float | None = None
    connected: float | None = None  # TCP connected (DNS included)
    tls: bool = False  # a TLS handshake began
    secured: float | None = None  # TLS handshake done
    headers: float | None = None  # status line and headers read

    def remaining(self) -> float:
        """Seconds left before the deadline; never below a millisecond, so that a socket
        timeout of 0 (non-blocking) is never set: the next operation times out instead."""
        return max(self.deadline - time.perf_counter(), 0.001)


def begin(started: float, timeout: float) -> ProbeTimer:
    """Make a timer for the probe starting at `started` the current one of this thread."""
    timer = ProbeTimer(started, started + timeout)
    _current.timer = timer
    return timer


def end() -> None:
    """No probe runs on this thread any more."""
    _current.timer = None


def _timer() -> ProbeTimer | None:
    return getattr(_current, "timer", None)


# -- reading under the deadline -------------------------------------------------------------

class _DeadlineReader(io.RawIOBase):
    """The socket's raw file (socket.makefile, which keeps the socket open while the
    response reads it) with the socket timeout set to the time left before each read."""

    def __init__(self, sock: socket.socket, timer: ProbeTimer) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self._timer = timer

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        left = self._timer.deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError("probe deadline passed")  # socket.timeout: a read timeout
        self._sock.settimeout(left)
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineSocket:
    """What http.client.HTTPResponse needs of a socket (makefile), reading under the
    deadline."""

    def __init__(self, sock: socket.socket, timer: ProbeTimer) -> None:
        self._sock, self._timer = sock, timer

    def makefile(self, mode: str = "rb", buffering: int = -1) -> io.BufferedReader:
        size = buffering if buffering > 0 else io.DEFAULT_BUFFER_SIZE
        return io.BufferedReader(_DeadlineReader(self._sock, self._timer), size)


class _TimedResponse(http.client.HTTPResponse):
    """http.client's response, reading under the current probe's deadline and marking when
    its headers are in."""

    def __init__(self, sock: Any, *args: Any, **kwargs: Any) -> None:
        self._probe_timer = _timer()
        if self._probe_timer is not None:
            sock = _DeadlineSocket(sock, self._probe_timer)
        super().__init__(sock, *args, **kwargs)

    def begin(self) -> None:
        super().begin()
        if self._probe_timer is not None:
            self._probe_timer.headers = time.perf_counter()


# -- connections ----------------------------------------------------------------------------

class TimedHTTPConnection(HTTPConnection):
    """An urllib3 connection marking its TCP connect and bounding it by the deadline."""

    response_class = _TimedResponse

    def _new_conn(self) -> socket.socket:
        timer = _timer()
        if timer is None:
            return super()._new_conn()
        if timer.connect_started is None:
            timer.connect_started = time.perf_counter()
        self.timeout = timer.remaining()
        sock = super()._new_conn()
        timer.connected = time.perf_counter()
        sock.settimeout(timer.remaining())  # the TLS handshake gets what is left
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        timer = _timer()
        if timer is not None:
            self.timeout = timer.remaining()  # sending (and connecting, on http://)
        super().request(*args, **kwargs)


class TimedHTTPSConnection(TimedHTTPConnection, HTTPSConnection):
    """The same over TLS, marking the end of the handshake."""

    def connect(self) -> None:
        timer = _timer()
        if timer is not None:
            timer.tls = True
        super().connect()
        if timer is not None:
            timer.secured = time.perf_counter()


class _FreshHTTPPool(HTTPConnectionPool):
    """A pool that closes each connection when it comes back: the next request connects."""

    ConnectionCls = TimedHTTPConnection

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            conn.close()
        super()._put_conn(conn)


class _FreshHTTPSPool(_FreshHTTPPool, HTTPSConnectionPool):
    """The same over TLS (HTTPSConnectionPool subclasses HTTPConnectionPool)."""

    ConnectionCls = TimedHTTPSConnection


class _ReuseHTTPPool(HTTPConnectionPool):
    ConnectionCls = TimedHTTPConnection


class _ReuseHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = TimedHTTPSConnection


_POOLS = {
    "fresh": {"http": _FreshHTTPPool, "https": _FreshHTTPSPool},
    "reuse": {"http": _ReuseHTTPPool, "https": _ReuseHTTPSPool},
}


class TimedAdapter(HTTPAdapter):
    """requests' adapter with pools of timed connections, fresh or reused (the policy)."""

    def __init__(self, policy: str) -> None:
        if policy not in _POOLS:
            raise ValueError(f"connection policy {policy!r}: known {CONNECTION_POLICIES}")
        self.policy = policy
        super().__init__(pool_connections=1)  # one host per session

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS[self.policy]

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools have their own classes
            manager.pool_classes_by_scheme = _POOLS[self.policy]
        return manager


def session(policy: str) -> requests.Session:
    """A Session sending through TimedAdapter; honours HTTPS_PROXY / NO_PROXY and
    REQUESTS_CA_BUNDLE like other clients."""
    s = requests.Session()
    s.trust_env = True
    adapter = TimedAdapter(policy)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


# -- phases ---------------------------------------------------------------------------------

def phases(timer: ProbeTimer, duration: float, *, https: bool, stream: bool,
           first_content: float | None) -> dict[str, float]:
    """The probe's phases, in seconds, from its marks; they add up to `duration`.

    connect: start -> TCP connected (pool checkout and DNS included); tls: -> handshake
    done (https only); server: -> response headers (sending the request included);
    first_token (2xx streams): -> first content event; transfer: -> the end. A reused
    connection has connect (and tls) 0. A failed probe has the phases it reached, the last
    one running to the end; a stream that never carried content ends in first_token.
    `first_content` is in seconds since the start (Reading.marks).
    """
    out: dict[str, float] = {}
    at = 0.0  # the end of the phases so far, seconds since the start

    def until(name: str, mark: float | None) -> bool:
        """Close phase `name` at `mark` (seconds since start); False when not reached:
        the phase then runs to the end."""
        nonlocal at
        if mark is None:
            out[name] = max(duration - at, 0.0)
            at = duration
            return False
        mark = min(max(mark, at), duration)
        out[name] = mark - at
        at = mark
        return True

    def rel(mark: float | None) -> float | None:
        return None if mark is None else mark - timer.started

    if timer.connect_started is None:  # a reused connection
        out["connect"] = 0.0
        if https:
            out["tls"] = 0.0
    else:
        if not until("connect", rel(timer.connected)):
            return out
        if (timer.tls or https) and not until("tls", rel(timer.secured)):
            return out
    if not until("server", rel(timer.headers)):
        return out
    if stream and not until("first_token", first_content):
        return out
    out["transfer"] = max(duration - at, 0.0)
    return out

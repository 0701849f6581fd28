"""Readers: how a probe's response body is read, one function per kind, found by name.

A ``Probe`` names its reader (``reader="json"`` or ``"sse"``); ``READERS`` maps the name
to the function, as blackbox_exporter maps a module's prober name to its probe function.
A new kind of probe is a catalogue entry plus a reader here.

A reader is called once the response headers of a 2xx answer are in, with the response,
the probe, and the probe's clock (its start mark and deadline on the monotonic clock).
It reads the body through ``chunks``, which enforces the probe's total deadline, and
returns a ``Reading``: bytes read, token usage, marks (seconds since the probe started,
such as the first and last content of a stream), and either error_type "none" or the
error_type and message of a failure it found in the body. ``read_json`` raises only what
the transfer raises (requests exceptions, the deadline among them); the prober classifies
those like a failed send. ``read_sse`` gives those verdicts itself once a stream has
begun (a closed connection there is ``stream_interrupted``, not ``network``). Non-2xx
answers never reach a reader: their body is an error object whatever the probe, read by
``read_error``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from collections.abc import Callable, Iterator, Mapping

import requests
import urllib3

from .catalogue import CATALOGUE, Probe, ResponseFailed, ShapeError, Usage
from .errors import failed_response, network_message, transport_error
from .sse import DIALECTS, TERMINAL_EVENTS, SSEParser, StreamState

MAX_BODY_BYTES = 4 * 1024 * 1024  # a probe answer is tiny; anything bigger is broken
CHUNK_BYTES = 16 * 1024
# Time per output token needs a few intervals between content events to mean anything:
# with 2 tokens it would be one gap, often two tokens sent in one network write.
MIN_TPOT_TOKENS = 5


class _Deadline(requests.Timeout):
    """The whole call took longer than the probe timeout."""


@dataclass(frozen=True)
class ProbeClock:
    """A probe's start mark and deadline on the monotonic clock (time.perf_counter)."""

    started: float  # perf_counter() just before the request was sent
    timeout: float  # seconds; the deadline is started + timeout

    @classmethod
    def start(cls, timeout: float) -> ProbeClock:
        """A clock whose start mark is now."""
        return cls(time.perf_counter(), timeout)

    def elapsed(self) -> float:
        """Seconds since the start mark: the value of a mark taken now."""
        return time.perf_counter() - self.started

    def past_deadline(self) -> bool:
        """True once the probe has used up its timeout."""
        return self.elapsed() > self.timeout


@dataclass(frozen=True)
class Reading:
    """What a reader made of a response body."""

    nbytes: int = 0  # body bytes received, after content decoding
    body: bytes = b""  # what the reader kept of the body (an error answer's, for its message)
    usage: Usage = (0, 0, 0)  # input, output, total tokens
    error_type: str = "none"  # or the failure found in the body (invalid_response, ...)
    message: str = ""  # for that failure; redacted later, where the ProbeResult is built
    # Seconds since the probe's start mark, taken as the body arrives ("first_content",
    # "last_content": the first and last stream events carrying content).
    marks: Mapping[str, float] = field(default_factory=dict)

    @property
    def ttft(self) -> float | None:
        """Time to first token: start mark -> first event carrying content (streams)."""
        return self.marks.get("first_content")

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first: (last - first content) / (output tokens
        - 1), from the usage the stream reported; None under MIN_TPOT_TOKENS tokens."""
        first, last = self.marks.get("first_content"), self.marks.get("last_content")
        output = self.usage[1]
        if first is None or last is None or output < MIN_TPOT_TOKENS:
            return None
        return (last - first) / (output - 1)


Reader = Callable[[requests.Response, Probe, ProbeClock], Reading]


def chunks(resp: requests.Response, clock: ProbeClock) -> Iterator[bytes]:
    """The body as it arrives (content-decoded), up to EOF, under the probe's deadline.

    The prober's transport (exporter/transport.py) gives each socket read the time left
    before the deadline, so a read never outlasts it; the deadline is checked here too,
    for bodies read without that transport. A read that times out or a body still
    arriving at the deadline raises _Deadline (a requests.Timeout), a stalled read that
    times out before it requests.ReadTimeout, a broken connection
    requests.ConnectionError.
    """
    while True:
        try:
            chunk = resp.raw.read1(CHUNK_BYTES, decode_content=True)
        except urllib3.exceptions.ReadTimeoutError as exc:  # a stalled body: timeout
            if clock.past_deadline():
                raise _Deadline() from exc
            raise requests.ReadTimeout(exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise requests.ConnectionError(exc) from exc
        if not chunk:
            return
        if clock.past_deadline():
            raise _Deadline()
        yield chunk


def read_body(resp: requests.Response, clock: ProbeClock) -> bytes:
    """The whole body under the deadline, cut once it passes MAX_BODY_BYTES."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks(resp, clock):
        parts.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            break
    return b"".join(parts)


def read_error(resp: requests.Response, clock: ProbeClock) -> Reading:
    """A non-2xx answer: its body kept whole for the error message."""
    body = read_body(resp, clock)
    return Reading(len(body), body)


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def read_json(resp: requests.Response, probe: Probe, clock: ProbeClock) -> Reading:
    """One JSON document: the whole body, its content-type, then the probe's shape check."""
    body = read_body(resp, clock)
    status = resp.status_code
    content_type = resp.headers.get("content-type", "")
    if "json" not in content_type.lower():
        return Reading(len(body), body, error_type="invalid_response", message=(
            f"HTTP {status} with content-type {content_type[:60]!r}, expected JSON"))
    try:
        usage = probe.check(json.loads(body))
    except ResponseFailed as exc:
        return Reading(len(body), body, error_type=failed_response(exc.code),
                       message=f"HTTP {status}: {exc}")
    except (ValueError, ShapeError) as exc:
        # json.JSONDecodeError and UnicodeDecodeError are ValueErrors.
        return Reading(len(body), body, error_type="invalid_response",
                       message=f"HTTP {status}: {_short(exc)}")
    return Reading(len(body), body, usage=usage)


def read_sse(resp: requests.Response, probe: Probe, clock: ProbeClock) -> Reading:
    """A text/event-stream answer, event by event (exporter/sse.py), under the deadline.

    Once the answer is a 2xx stream, every failure is the reader's verdict, and the
    partial reading (bytes, content marks) is kept: a stall or the deadline is
    ``timeout``, a connection closed (or an end) before the terminal event
    ``stream_interrupted``. Reading stops at the terminal event or an error event.
    """
    status = resp.status_code
    content_type = resp.headers.get("content-type", "")
    if "text/event-stream" not in content_type.lower():
        body = read_body(resp, clock)
        return Reading(len(body), body, error_type="invalid_response", message=(
            f"HTTP {status} with content-type {content_type[:60]!r}, "
            "expected text/event-stream"))
    dialect = probe.stream or ""
    on_event = DIALECTS[dialect]
    state = StreamState(probe, status)
    parser = SSEParser()
    nbytes = 0
    try:
        for chunk in chunks(resp, clock):
            at = clock.elapsed()  # every event of this read arrived now
            nbytes += len(chunk)
            if nbytes > MAX_BODY_BYTES:
                state.fail("invalid_response", f"stream longer than {MAX_BODY_BYTES} bytes")
                break
            for event in parser.feed(chunk):
                on_event(state, event, at)
                if state.done:  # nothing after the terminal event or an error counts
                    break
            if state.done:
                break
        else:
            state.fail("stream_interrupted", "stream ended before its terminal event "
                       f"({TERMINAL_EVENTS[dialect]})")
    except requests.Timeout as exc:  # stalled, or still streaming at the deadline
        state.error_type, state.message = transport_error(exc, clock.timeout)
    except requests.ConnectionError as exc:
        state.fail("stream_interrupted", "stream cut before its terminal event "
                   f"({TERMINAL_EVENTS[dialect]}): {network_message(exc)}")
    return Reading(nbytes, usage=state.usage, error_type=state.error_type,
                   message=state.message, marks=dict(state.marks))


READERS: dict[str, Reader] = {"json": read_json, "sse": read_sse}


def reader_for(probe: Probe) -> Reader:
    """The reader `probe` names; ValueError when no reader has that name."""
    try:
        return READERS[probe.reader]
    except KeyError:
        raise ValueError(f"probe {probe.name!r}: unknown reader {probe.reader!r} "
                         f"(known: {', '.join(READERS)})") from None


def check_catalogue(catalogue: Mapping[str, Probe]) -> None:
    """Refuse a catalogue in which a probe names a reader that does not exist."""
    for probe in catalogue.values():
        reader_for(probe)


# A typo in the catalogue fails at start-up, not on the first probe of that endpoint.
check_catalogue(CATALOGUE)

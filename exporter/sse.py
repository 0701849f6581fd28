"""Streams: an incremental text/event-stream parser and the dialects of the ``sse`` reader.

``SSEParser`` follows the WHATWG "server-sent events" parsing rules: lines end in CRLF,
LF or CR (a CRLF split across two reads is one line end); ``event:`` names the event,
``data:`` lines add to its data (joined with LF), a line starting with ``:`` is a
comment, one space after the colon is dropped, and an event is dispatched at the blank
line that ends it. An event without data is not dispatched, nor is one still open at
the end of the stream (the spec drops it: it may be cut in half).

``readers.read_sse`` reads a streaming probe's answer through ``readers.chunks`` (the
probe's deadline bounds it), parses it here and hands each event, stamped with the
arrival time of the read that carried it, to the dialect the probe names
(``Probe.stream``), which keeps a ``StreamState``:

* ``chat``: ``data:`` chunks of ``chat.completion.chunk`` objects ending in
  ``data: [DONE]``; usage in the chunk with ``choices: []`` (``include_usage``); an
  object with an ``error`` key is an error mid-stream.
* ``responses``: ``event:``/``data:`` pairs ending in ``response.completed``,
  ``response.incomplete`` or ``response.failed`` (the terminal object goes through the
  probe's check, as the JSON probe's body does); ``event: error`` is an error mid-stream.

Content marks (``first_content``, ``last_content``, seconds since the probe's start)
are taken at the first and last event carrying content: a chat chunk with a non-empty
``delta.content``, ``delta.refusal`` or ``delta.tool_calls`` (not the role-only first
chunk), a non-empty ``response.output_text.delta`` or ``response.refusal.delta``.

Once the answer is a 2xx stream, the reader gives the verdict of every failure itself:
a closed connection or an end before the terminal event is ``stream_interrupted``, a
stall past the deadline ``timeout``, an error event is classified like the HTTP error it
stands for (exporter/errors.py), a stream that completes without content (and was not
cut short by the token cap) ``invalid_response``. The partial reading (bytes, marks) is
kept either way. docs/decisions.md has the choices.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from .catalogue import STREAM_DIALECTS, Probe, ResponseFailed, ShapeError, Usage
from .errors import classify_error, failed_response

_LINE_END = re.compile(rb"\r\n|\r|\n")


class SSEEvent(NamedTuple):
    """One dispatched event: its name ("message" when the stream named none) and data."""

    event: str
    data: str


class SSEParser:
    """Incremental text/event-stream parser: feed it bytes as they arrive."""

    def __init__(self) -> None:
        self._pending = b""  # an unfinished line
        self._skip_lf = False  # the last read ended in CR: an LF opening the next is its pair
        self._started = False  # a byte order mark is dropped at the very start only
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """The events completed by `chunk`, in order."""
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        buf = self._pending + chunk if self._pending else chunk
        if not self._started and buf:
            if len(buf) < 3 and b"\xef\xbb\xbf".startswith(buf):
                self._pending = buf  # maybe a BOM split across reads
                return []
            self._started = True
            buf = buf.removeprefix(b"\xef\xbb\xbf")
        events: list[SSEEvent] = []
        pos = 0
        for m in _LINE_END.finditer(buf):
            event = self._line(buf[pos:m.start()])
            pos = m.end()
            if event is not None:
                events.append(event)
        if pos and buf[pos - 1:pos] == b"\r":
            self._skip_lf = pos == len(buf)
        self._pending = buf[pos:]
        return events

    def _line(self, raw: bytes) -> SSEEvent | None:
        if not raw:  # blank line: dispatch
            event, data = self._event or "message", self._data
            self._event, self._data = "", []
            return SSEEvent(event, "\n".join(data)) if data else None
        line = raw.decode("utf-8", "replace")  # CR and LF never occur inside a UTF-8 sequence
        if line[0] == ":":
            return None  # a comment (keep-alive)
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        # id and retry only matter to a reconnecting browser; other names are ignored.
        return None


class StreamState:
    """What a stream has shown so far: content marks, usage and, once known, its verdict."""

    def __init__(self, probe: Probe, status: int) -> None:
        self.probe = probe
        self.status = status
        self.marks: dict[str, float] = {}
        self.usage: Usage = (0, 0, 0)
        self.done = False  # a terminal event or an error ended the stream
        self.capped = False  # the token cap cut the answer short (finish_reason length)
        self.error_type = "none"
        self.message = ""

    def content(self, at: float) -> None:
        """An event carrying content arrived at `at`."""
        self.marks.setdefault("first_content", at)
        self.marks["last_content"] = at

    def fail(self, error_type: str, message: str) -> None:
        """End the stream with a failure; the reader reads no further."""
        self.done = True
        self.error_type, self.message = error_type, f"HTTP {self.status}: {message}"

    def error_event(self, error: Any) -> None:
        """An error object sent mid-stream: classified like the HTTP error it stands for."""
        error = error if isinstance(error, dict) else {"message": str(error)}
        if error.get("type") == "error":  # the Responses error event carries type "error"
            error = {k: v for k, v in error.items() if k != "type"}
        label = error.get("code") or error.get("type")
        text = error.get("message") if isinstance(error.get("message"), str) else ""
        self.fail(classify_error(error), "error event mid-stream"
                  + (f" ({label})" if label else "") + (f": {text}" if text else ""))

    def complete(self) -> None:
        """The terminal event arrived; a stream without content failed unless the token
        cap cut it short (a reasoning model can spend a 16-token cap before any text)."""
        self.done = True
        if "first_content" not in self.marks and not self.capped:
            self.fail("invalid_response", "stream completed without content")

    def json(self, data: str) -> dict[str, Any] | None:
        """The event's data as a JSON object, or None after failing the stream."""
        try:
            obj = json.loads(data)
        except ValueError as exc:
            self.fail("invalid_response", f"stream event is not JSON ({exc})")
            return None
        if not isinstance(obj, dict):
            self.fail("invalid_response", "stream event is not a JSON object")
            return None
        return obj

    def check(self, obj: Any) -> Usage | None:
        """Usage from the probe's check of `obj`; None after failing the stream."""
        try:
            return self.probe.check(obj)
        except ResponseFailed as exc:
            self.fail(failed_response(exc.code), str(exc))
        except ShapeError as exc:
            self.fail("invalid_response", str(exc))
        return None


def _chat(stream: StreamState, ev: SSEEvent, at: float) -> None:
    """One event of a Chat Completions stream."""
    if ev.data == "[DONE]":
        stream.complete()
        return
    obj = stream.json(ev.data)
    if obj is None:
        return
    if ev.event == "error" or obj.get("error"):  # what the openai SDK raises on, too
        stream.error_event(obj.get("error") or obj)
        return
    choices = obj.get("choices")
    if not isinstance(choices, list):
        stream.fail("invalid_response", "stream chunk without choices")
        return
    for choice in choices:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and (delta.get("content") or delta.get("refusal")
                                        or delta.get("tool_calls")):
            stream.content(at)
        if isinstance(choice, dict) and choice.get("finish_reason") == "length":
            stream.capped = True
    if isinstance(obj.get("usage"), dict):  # null on every chunk but the last
        usage = stream.check(obj)
        if usage is not None:
            stream.usage = usage


_RESPONSES_CONTENT = frozenset({"response.output_text.delta", "response.refusal.delta"})
_RESPONSES_TERMINAL = frozenset({"response.completed", "response.incomplete",
                                 "response.failed"})


def _responses(stream: StreamState, ev: SSEEvent, at: float) -> None:
    """One event of a Responses stream."""
    obj = stream.json(ev.data)
    if obj is None:
        return
    # The event name is on the event: line; servers that send none repeat it in "type".
    kind = ev.event if ev.event != "message" else str(obj.get("type", ""))
    if kind == "error":
        stream.error_event(obj.get("error") or obj)
    elif kind in _RESPONSES_CONTENT:
        if obj.get("delta"):
            stream.content(at)
    elif kind in _RESPONSES_TERMINAL:
        # The terminal object is a whole Response: the JSON probe's check decides, so
        # "incomplete" for max_output_tokens is a success here too.
        usage = stream.check(obj.get("response"))
        if usage is not None:
            stream.usage = usage
            stream.capped = kind == "response.incomplete"
            stream.complete()


Dialect = Callable[[StreamState, SSEEvent, float], None]
"""(state, event, arrival in seconds since the probe's start) -> None; updates state."""

DIALECTS: dict[str, Dialect] = {"chat": _chat, "responses": _responses}
TERMINAL_EVENTS = {"chat": "data: [DONE]",
                   "responses": "response.completed, response.incomplete or response.failed"}
"""How each dialect's stream ends, for the stream_interrupted message."""
if set(DIALECTS) != set(STREAM_DIALECTS):  # a catalogue dialect nobody reads: fail at import
    raise ValueError(f"stream dialects {sorted(STREAM_DIALECTS)}, readers for {sorted(DIALECTS)}")

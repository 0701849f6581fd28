"""Streaming answers (facts §6): Chat Completions chunks and Responses events as SSE, and
the stream faults shaping them (a slow first token, slow tokens, a cut, an error, a stall).

A stream is built from the body the route's builder made (the same chat completion or
Response object the JSON answer would carry), as a list of ``Part``s, each one HTTP chunk:
the head (the role-only chunk; response.created ...), the content events, the tail (the
finish chunk, the usage chunk; the done events) and the terminal event (``data: [DONE]``;
``response.completed`` / ``incomplete`` / ``failed``). ``shape`` then applies a fault to
the parts: delays, where the stream stops and how (wire.py sends them).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

from .errors import error
from .exchange import Part, Plan, Request, Stream, dumps
from .faults import DEFAULT_DELAY_MS, DEFAULT_TOKEN_MS
from .tables import Json

SSE = "text/event-stream; charset=utf-8"
_PIECE = re.compile(r" ?\w+| ?[^\w\s]+")  # about one token each: "Pong", "!", " How", ...
OVERLOADED = error("Our servers are currently overloaded. Please try again later.",
                   "service_unavailable_error", None, "server_is_overloaded")
"""The error a stream_error fault sends mid-stream (facts §6.2: seen in 2026)."""


def pieces(text: str) -> list[str]:
    """The text in token-sized pieces, as the API streams it."""
    return _PIECE.findall(text)


def _data(obj: Json) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


def _event(name: str, obj: Json) -> bytes:
    return b"event: " + name.encode() + b"\n" + _data(obj)


def _obfuscation() -> str:
    # The API pads chunks with a random string so sizes do not reveal the tokens.
    return secrets.token_urlsafe(secrets.choice((3, 6, 9, 12)))


# -- Chat Completions -----------------------------------------------------------------

def render_chat(req: Request, body: Json, variant: str | None) -> Plan:
    """A chat completion as ``chat.completion.chunk`` events ending in ``data: [DONE]``."""
    options = req.json.get("stream_options") if isinstance(req.json, dict) else None
    options = options if isinstance(options, dict) else {}
    include_usage = options.get("include_usage") is True
    obfuscate = options.get("include_obfuscation") is not False  # on unless turned off
    choice = body["choices"][0]
    base = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"],
            "model": body["model"], "service_tier": body["service_tier"],
            "system_fingerprint": body["system_fingerprint"]}

    def chunk(choices: list[Json], usage: Json = None) -> bytes:
        obj = {**base, "choices": choices}
        if include_usage:  # null on every chunk but the usage chunk
            obj["usage"] = usage
        if obfuscate:
            obj["obfuscation"] = _obfuscation()
        return _data(obj)

    def delta(d: Json, finish: str | None = None) -> list[Json]:
        return [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]

    parts = [Part("head", chunk(delta({"role": "assistant", "content": "",
                                       "refusal": None})))]
    parts += [Part("content", chunk(delta({"content": p})))
              for p in pieces(choice["message"]["content"] or "")]
    parts.append(Part("tail", chunk(delta({}, choice["finish_reason"]))))
    if include_usage:
        usage = body["usage"]
        if variant == "wrong_shape":  # a usage object missing its counts
            usage = {"prompt_tokens": usage["prompt_tokens"]}
        parts.append(Part("tail", chunk([], usage)))
    parts.append(Part("terminal", b"data: [DONE]\n\n"))
    return _plan(Stream(parts, _chat_error), variant)


def _chat_error(sent: int) -> list[Part]:
    """What a chat stream sends for an error mid-stream: a data object with ``error``."""
    return [Part("error", _data(OVERLOADED))]


# -- Responses ------------------------------------------------------------------------

class _Sequence:
    """Responses events carry a sequence_number counting from 0."""

    def __init__(self) -> None:
        self.n = 0

    def event(self, kind: str, **fields: Json) -> bytes:
        obj = {"type": kind, "sequence_number": self.n, **fields}
        self.n += 1
        return _event(kind, obj)


def _item_events(seq: _Sequence, index: int, item: Json) -> Iterator[Part]:
    """The events of one output item: added, its text as deltas, done."""
    content = item.get("content") or []
    added = {**item, "status": "in_progress", **({"content": []} if "content" in item else {})}
    yield Part("head", seq.event("response.output_item.added", output_index=index, item=added))
    for c_index, part in enumerate(content):
        ids = {"item_id": item["id"], "output_index": index, "content_index": c_index}
        yield Part("head", seq.event("response.content_part.added", **ids,
                                     part={**part, "text": ""}))
        for p in pieces(part["text"]):
            yield Part("content", seq.event("response.output_text.delta", **ids, delta=p,
                                            logprobs=[], obfuscation=_obfuscation()))
        yield Part("tail", seq.event("response.output_text.done", **ids, text=part["text"],
                                     logprobs=[]))
        yield Part("tail", seq.event("response.content_part.done", **ids, part=part))
    yield Part("tail", seq.event("response.output_item.done", output_index=index, item=item))


def render_responses(req: Request, body: Json, variant: str | None) -> Plan:
    """A Response as its event sequence, ending in response.completed, incomplete or
    failed (by the Response's status); every event carries its sequence_number."""
    seq = _Sequence()
    started = {**body, "status": "in_progress", "completed_at": None, "output": [],
               "usage": None, "error": None, "incomplete_details": None}
    parts = [Part("head", seq.event("response.created", response=started)),
             Part("head", seq.event("response.in_progress", response=started))]
    for index, item in enumerate(body["output"]):
        parts += _item_events(seq, index, item)
    final = body
    if variant == "wrong_shape":  # the final Response without its usage
        final = {k: v for k, v in body.items() if k != "usage"}
    parts.append(Part("terminal", seq.event(f"response.{body['status']}", response=final)))

    def failure(sent: int) -> list[Part]:
        # What a Responses stream sends for an error mid-stream: ``event: error``, then
        # ``response.failed`` (facts §6.2); numbered on from the `sent` events before.
        after = _Sequence()
        after.n = sent
        err = OVERLOADED["error"]
        failed = {**body, "status": "failed", "completed_at": None, "usage": None,
                  "error": {"code": "server_error", "message": err["message"]}}
        return [Part("error", after.event("error", code=err["code"], message=err["message"],
                                          param=None)),
                Part("error", after.event("response.failed", response=failed))]

    return _plan(Stream(parts, failure), variant)


# -- plans and faults -------------------------------------------------------------------

def _plan(stream: Stream, variant: str | None) -> Plan:
    parts = stream.parts
    if variant == "malformed":  # the first content event cut in the middle of its JSON
        i = next((i for i, p in enumerate(parts) if p.kind == "content"), 0)
        parts[i] = Part(parts[i].kind, parts[i].data[: len(parts[i].data) // 2] + b"\n\n")
    elif variant == "empty_body":  # headers, then the stream ends with no event at all
        parts.clear()
    return Plan(200, content_type=SSE, stream=stream)


def shape(plan: Plan, fault: str | None, delay_s: float | None) -> None:
    """Apply a transport or stream fault to a stream plan (in place): delays before
    parts, where the stream stops, and how it ends."""
    stream = plan.stream
    if stream is None or not stream.parts or fault is None:
        return
    parts = stream.parts
    content = [i for i, p in enumerate(parts) if p.kind == "content"]
    if not content:  # no text (a reasoning model, a failed Response): the first non-head
        content = [next((i for i, p in enumerate(parts) if p.kind != "head"), 0)]
    # Faults that stop the stream do so after the second content event (or the only one).
    stop = content[min(1, len(content) - 1)] + 1
    if fault == "slow_first_token":  # the head goes out at once, the first token late
        parts[content[0]].delay_s = DEFAULT_DELAY_MS / 1000 if delay_s is None else delay_s
    elif fault in ("slow_tokens", "trickle_body"):
        gap = DEFAULT_TOKEN_MS / 1000 if delay_s is None else delay_s
        for i in content[1:] if fault == "slow_tokens" else range(1, len(parts)):
            parts[i].delay_s = gap
    elif fault == "cut_stream":  # closed after the content: no usage, no terminal event
        stream.parts = [p for p in parts if p.kind in ("head", "content")]
        stream.end = "cut"
    elif fault == "stream_error":
        stream.parts = parts[:stop] + stream.error(stop)
    elif fault in ("stall_stream", "slow_body"):  # stop sending; close after the stall
        stream.parts = parts[:stop]
        stream.end, plan.stall_s = "stall", delay_s
    elif fault == "reset_mid_body":
        stream.parts = parts[:stop]
        stream.end = "reset"

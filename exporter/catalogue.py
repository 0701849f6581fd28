"""The probe catalogue: one declarative table, one entry per endpoint, and its vocabulary.

Adding a probe means adding one ``Probe`` to ``CATALOGUE`` (and, for a body read in a
new way, a reader in exporter/readers.py). Every request is tiny and deterministic, so a
probe costs a handful of tokens at most. The words the rest of the exporter uses about
probes live here too: the providers, the model kinds a probe can name, the default model
of each kind and the environment variable that overrides it, and which probes a target
runs by default. Settings import them; nothing redefines them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

Json = Any
Usage = tuple[int, int, int]  # input, output, total

PROVIDERS = ("openai", "azure", "openai_compatible")
# The model a probe's body names, by kind; a target configures one model per kind.
MODEL_KINDS = ("chat", "embeddings", "moderation", "image")
DEFAULT_MODELS = {
    "chat": "gpt-4o-mini",
    "embeddings": "text-embedding-3-small",
    "moderation": "omni-moderation-latest",
    "image": "gpt-image-1-mini",
}
# The wire formats a streaming probe can speak (exporter/sse.py reads each).
STREAM_DIALECTS = ("chat", "responses")
MODEL_ENV = {
    "chat": "OPENAI_MODEL",
    "embeddings": "OPENAI_EMBEDDINGS_MODEL",
    "moderation": "OPENAI_MODERATION_MODEL",
    "image": "OPENAI_IMAGE_MODEL",
}


class ShapeError(ValueError):
    """The upstream answered 200 with a body that is not the documented shape."""


def _require(obj: Json, *keys: str) -> None:
    if not isinstance(obj, dict):
        raise ShapeError(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise ShapeError(f"missing field(s): {', '.join(missing)}")


def _int(value: Json, name: str) -> int:
    # bool is an int subclass; a token count of true is a broken body, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ShapeError(f"{name} is not a non-negative integer")
    return value


def _usage(usage: Json, input_key: str, output_key: str) -> Usage:
    _require(usage, input_key, output_key, "total_tokens")
    return (
        _int(usage[input_key], f"usage.{input_key}"),
        _int(usage[output_key], f"usage.{output_key}"),
        _int(usage["total_tokens"], "usage.total_tokens"),
    )


def _check_list(body: Json) -> Usage:
    _require(body, "object", "data")
    if not isinstance(body["data"], list):
        raise ShapeError("data is not a list")
    return (0, 0, 0)


def _check_chat(body: Json) -> Usage:
    _require(body, "id", "choices", "usage")
    if not isinstance(body["choices"], list) or not body["choices"]:
        raise ShapeError("choices is empty")
    return _usage(body["usage"], "prompt_tokens", "completion_tokens")


def _check_responses(body: Json) -> Usage:
    _require(body, "id", "status")
    status = body["status"]
    # "incomplete" because of max_output_tokens means the API answered: a tiny
    # probe on a reasoning model can end there while the service is healthy.
    incomplete_ok = status == "incomplete" and (body.get("incomplete_details") or {}).get(
        "reason"
    ) == "max_output_tokens"
    if status != "completed" and not incomplete_ok:
        raise ResponseFailed(body)
    _require(body, "usage")
    return _usage(body["usage"], "input_tokens", "output_tokens")


def _check_chat_usage(chunk: Json) -> Usage:
    # A chat stream's usage comes alone in its last chunk (include_usage).
    _require(chunk, "usage")
    return _usage(chunk["usage"], "prompt_tokens", "completion_tokens")


class ResponseFailed(Exception):
    """A Responses object that reports failure in its body on HTTP 200."""

    def __init__(self, body: Json) -> None:
        err = body.get("error") if isinstance(body, dict) else None
        self.code = err.get("code") if isinstance(err, dict) else None
        self.status = body.get("status") if isinstance(body, dict) else None
        super().__init__(f"response status {self.status!r}, error code {self.code!r}")


def _check_embeddings(body: Json) -> Usage:
    _require(body, "object", "data", "usage")
    if not isinstance(body["data"], list) or not body["data"]:
        raise ShapeError("data is empty")
    usage = body["usage"]
    _require(usage, "prompt_tokens", "total_tokens")
    prompt = _int(usage["prompt_tokens"], "usage.prompt_tokens")
    return (prompt, 0, _int(usage["total_tokens"], "usage.total_tokens"))


def _check_moderations(body: Json) -> Usage:
    _require(body, "id", "results")
    if not isinstance(body["results"], list) or not body["results"]:
        raise ShapeError("results is empty")
    return (0, 0, 0)  # moderations report no usage and are free


def _check_images(body: Json) -> Usage:
    _require(body, "created", "data")
    usage = body.get("usage")
    if not usage:
        return (0, 0, 0)  # dall-e models return no usage
    return _usage(usage, "input_tokens", "output_tokens")


@dataclass(frozen=True)
class Probe:
    """One endpoint: the request to send, how to read the answer, and who offers it."""

    name: str
    method: str
    path: str  # relative to the target's base URL
    check: Callable[[Json], Usage]  # raises ShapeError / ResponseFailed
    model_kind: str | None = None  # which configured model the body uses
    body: Callable[[str], dict[str, Any]] | None = None
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    default: bool = True  # probed when PROBE_ENDPOINTS is not set
    heavy: bool = False  # only with PROBE_HEAVY (costs real money)
    # Costs nothing upstream (a list, moderations): keeps running while PROBE_BUDGET_USD_PER_DAY
    # pauses the paid probes. Unset means paid, so a new entry is never free by accident.
    free: bool = False
    # The providers that offer the endpoint, so a target of that provider probes it by
    # default. An OpenAI-compatible server (vLLM, Ollama) is expected to have only a few.
    providers: tuple[str, ...] = ("openai",)
    # Azure puts these under /openai/deployments/{deployment}/...; the others under /openai/.
    azure_deployment: bool = False
    # How a 2xx body is read: a name in exporter.readers.READERS, checked when that module
    # is imported ("json": one document, passed to check; "sse": a stream of events, whose
    # usage-carrying object - the chat usage chunk, the terminal Response - goes to check).
    reader: str = "json"
    stream: str | None = None  # the stream's dialect (STREAM_DIALECTS), with reader "sse"

    def __post_init__(self) -> None:
        # A typo in the table fails at import, not on the first probe an hour later.
        unknown = [p for p in self.providers if p not in PROVIDERS]
        if unknown:
            raise ValueError(f"probe {self.name!r}: unknown provider {unknown[0]!r}")
        if self.model_kind is not None and self.model_kind not in MODEL_KINDS:
            raise ValueError(f"probe {self.name!r}: unknown model kind {self.model_kind!r}")
        if self.azure_deployment and "azure" not in self.providers:
            raise ValueError(f"probe {self.name!r}: azure_deployment without provider azure")
        if (self.reader == "sse") != (self.stream is not None):
            raise ValueError(f"probe {self.name!r}: reader 'sse' goes with a stream dialect")
        if self.stream is not None and self.stream not in STREAM_DIALECTS:
            raise ValueError(f"probe {self.name!r}: unknown stream dialect {self.stream!r}")


def _chat_body(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "ping"}],
            "max_completion_tokens": 16}


def _responses_body(model: str) -> dict[str, Any]:
    # max_output_tokens has a minimum of 16; store defaults to true upstream, and a probe
    # must not leave stored responses behind.
    return {"model": model, "input": "ping", "max_output_tokens": 16, "store": False}


_SSE_ACCEPT = {"Accept": "text/event-stream"}

CATALOGUE: dict[str, Probe] = {
    p.name: p
    for p in (
        Probe(
            "chat", "POST", "/chat/completions", _check_chat, model_kind="chat",
            body=_chat_body, providers=PROVIDERS, azure_deployment=True,
        ),
        Probe(
            # The same question streamed: time to first token and per output token.
            # include_usage adds the usage chunk (tokens and cost); include_obfuscation
            # false drops the padding field the API adds to every chunk by default.
            "chat_stream", "POST", "/chat/completions", _check_chat_usage, model_kind="chat",
            body=lambda m: {**_chat_body(m), "stream": True, "stream_options": {
                "include_usage": True, "include_obfuscation": False}},
            headers=_SSE_ACCEPT, reader="sse", stream="chat",
            providers=PROVIDERS, azure_deployment=True,
        ),
        Probe(
            "responses", "POST", "/responses", _check_responses, model_kind="chat",
            body=_responses_body, providers=("openai", "openai_compatible"),
        ),
        Probe(
            "responses_stream", "POST", "/responses", _check_responses, model_kind="chat",
            body=lambda m: {**_responses_body(m), "stream": True},
            headers=_SSE_ACCEPT, reader="sse", stream="responses",
            providers=("openai", "openai_compatible"),
        ),
        Probe(
            "embeddings", "POST", "/embeddings", _check_embeddings, model_kind="embeddings",
            body=lambda m: {"model": m, "input": "ping"},
            providers=PROVIDERS, azure_deployment=True,
        ),
        Probe(
            "moderations", "POST", "/moderations", _check_moderations, model_kind="moderation",
            body=lambda m: {"model": m, "input": "ping"}, free=True,
        ),
        Probe("models", "GET", "/models", _check_list, providers=PROVIDERS, free=True),
        Probe("files", "GET", "/files", _check_list, params={"limit": "1"}, free=True),
        Probe("fine_tunes", "GET", "/fine_tuning/jobs", _check_list, params={"limit": "1"},
              free=True),
        Probe("batches", "GET", "/batches", _check_list, params={"limit": "1"}, free=True),
        Probe(
            # The Assistants API was shut down in 2026: kept for endpoints that still
            # serve it, off by default.
            "assistants", "GET", "/assistants", _check_list, params={"limit": "1"},
            headers={"OpenAI-Beta": "assistants=v2"}, default=False, free=True,
        ),
        Probe(
            "images", "POST", "/images/generations", _check_images, model_kind="image",
            body=lambda m: {"model": m, "prompt": "a dot", "n": 1, "size": "1024x1024",
                            "quality": "low"},
            default=False, heavy=True, providers=("openai", "azure"), azure_deployment=True,
        ),
    )
}


def default_probes(provider: str, heavy: bool) -> tuple[str, ...]:
    """What a target probes when it names no probes.

    openai: every default probe. azure: the deployment probes (chat, chat_stream,
    embeddings) plus models. openai_compatible: chat, chat_stream, responses,
    responses_stream, embeddings, models. With heavy, the heavy probes the provider offers
    (images) are added.
    """
    return tuple(name for name, p in CATALOGUE.items()
                 if provider in p.providers and (p.default or (heavy and p.heavy)))

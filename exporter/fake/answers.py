"""Building the answers: request validation, the bodies of every probe endpoint, list
pages, the wrong-shape variants, and rendering a body as the JSON on the wire."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import secrets
import string
import struct
import time
from collections.abc import Callable

from .errors import ApiError, error, invalid, not_found_message
from .exchange import Plan, Request, dumps
from .tables import (
    ANSWER_WORDS,
    BAD_JSON_MESSAGE,
    IMAGE_OUTPUT_TOKENS,
    LISTS,
    MODELS,
    MODERATION_CATEGORIES,
    PNG_1PX,
    REASONING_TOKENS,
    Json,
    Model,
)

Builder = Callable[[Request, str | None], tuple[Json, int]]
"""(request, body fault or None) -> (answer body, tokens spent); raises ApiError."""


def _rand_id(prefix: str, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n))


def _tokens(text: str) -> int:
    """Rough tokenizer: about four characters per token, at least one."""
    return max(1, (len(text) + 3) // 4)


def _text_of(content: Json) -> str:
    """Text of a chat message content: a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _missing(name: str) -> ApiError:
    """The 400 for a required parameter the request left out."""
    return invalid(f"Missing required parameter: '{name}'.", name, "missing_required_parameter")


def _required(body: Json, name: str) -> Json:
    """The value of a required parameter; the API's 400 when it is missing or null."""
    value = body.get(name)
    if value is None:
        raise _missing(name)
    return value


def _body(req: Request) -> Json:
    """The JSON object a POST carries (an empty body counts as {}); 400 otherwise."""
    body = req.json if req.raw.strip() else {}
    if not isinstance(body, dict):
        raise invalid(BAD_JSON_MESSAGE)
    return body


def _resolve_model(req: Request, body: Json, kind: str, default: str | None) -> tuple[str, Model]:
    """Check the model field like the API: missing -> 400, unknown -> 404."""
    if req.deployment:  # Azure: the deployment decides, the body model is ignored
        name = req.deployment if req.deployment in MODELS else {
            "chat": "gpt-4o-mini", "embeddings": "text-embedding-3-small",
            "image": "gpt-image-1-mini"}[kind]
        return name, MODELS[name]
    name = body.get("model", default)
    if name is None:
        raise invalid("you must provide a model parameter")
    if not isinstance(name, str):
        raise invalid(f"Invalid type for 'model': expected a string, but got "
                      f"{type(name).__name__} instead.", "model", "invalid_type")
    model = MODELS.get(name)
    if model is None:
        raise ApiError(404, error(not_found_message(name), "invalid_request_error", None,
                                  "model_not_found"))
    if model.kind != kind:
        if kind == "chat":
            raise ApiError(404, error(
                "This is not a chat model and thus not supported in the v1/chat/completions "
                "endpoint. Did you mean to use v1/completions?", "invalid_request_error",
                "model", None))
        raise invalid(f"The model `{name}` does not support this endpoint.", "model")
    return name, model


def _cap(body: Json, name: str, minimum: int = 1) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"Invalid type for '{name}': expected an integer, but got "
                      f"{type(value).__name__} instead.", name, "invalid_type")
    if value < minimum:
        raise invalid(f"Invalid '{name}': integer below minimum value. Expected a value >= "
                      f"{minimum}, but got {value} instead.", name, "integer_below_min_value")
    return value


def _generate(model: Model, cap: int | None) -> tuple[str, int, int, bool]:
    """(visible text, output tokens, reasoning tokens, cut short by the cap)."""
    reasoning = REASONING_TOKENS if model.reasoning else 0
    visible = len(ANSWER_WORDS) + 2  # words plus punctuation, roughly
    if cap is None or reasoning + visible <= cap:
        return " ".join(ANSWER_WORDS), reasoning + visible, reasoning, False
    # A small cap: reasoning eats it first, so a reasoning model may show nothing at all.
    reasoning = min(reasoning, cap)
    shown = cap - reasoning
    words = ANSWER_WORDS[: max(0, shown - 1)] if shown else []
    return " ".join(words), cap, reasoning, True


def chat(req: Request, variant: str | None) -> tuple[Json, int]:
    """A chat completion (POST /chat/completions)."""
    body = _body(req)
    _, model = _resolve_model(req, body, "chat", None)
    messages = _required(body, "messages")
    if not isinstance(messages, list):
        raise invalid("Invalid type for 'messages': expected an array, but got "
                      f"{type(messages).__name__} instead.", "messages", "invalid_type")
    if not messages:
        raise invalid("Invalid 'messages': empty array. Expected an array with minimum "
                      "length 1, but got an empty array instead.", "messages", "empty_array")
    if model.reasoning and "max_tokens" in body:
        raise invalid("Unsupported parameter: 'max_tokens' is not supported with this model. "
                      "Use 'max_completion_tokens' instead.", "max_tokens",
                      "unsupported_parameter")
    if body.get("stream_options") is not None and body.get("stream") is not True:
        raise invalid("The 'stream_options' parameter is only allowed when 'stream' is "
                      "enabled.", "stream_options", "invalid_value")
    cap = _cap(body, "max_completion_tokens")
    if cap is None:
        cap = _cap(body, "max_tokens")
    prompt = 3 + sum(3 + _tokens(_text_of(m.get("content"))) for m in messages
                     if isinstance(m, dict))
    text, completion, reasoning, cut = _generate(model, cap)
    if variant == "response_incomplete":  # chat's way of saying it: finish_reason length
        text, cut = "", True
    answer = {
        "id": _rand_id("chatcmpl-", 29), "object": "chat.completion",
        "created": int(time.time()), "model": model.snapshot,
        "choices": [{"index": 0,
                     "message": {"role": "assistant", "content": text, "refusal": None,
                                 "annotations": []},
                     "logprobs": None, "finish_reason": "length" if cut else "stop"}],
        "usage": {
            "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": None if model.reasoning else "fp_" + secrets.token_hex(5),
    }
    return answer, prompt + completion


def responses(req: Request, variant: str | None) -> tuple[Json, int]:
    """A Response object (POST /responses); the variant can make it failed or incomplete."""
    body = _body(req)
    _, model = _resolve_model(req, body, "chat", None)
    cap = _cap(body, "max_output_tokens", minimum=16)
    source = body.get("input", "")
    if isinstance(source, list):
        source = " ".join(_text_of(i.get("content")) for i in source if isinstance(i, dict))
    prompt = 4 + _tokens(source if isinstance(source, str) else "")
    text, output, reasoning, cut = _generate(model, cap)
    now = int(time.time())
    rid = "resp_" + secrets.token_hex(24)
    status, failure, incomplete, usage_ok = "completed", None, None, True
    if variant == "response_failed":
        status, usage_ok = "failed", False
        failure = {"code": "server_error", "message": (
            "An error occurred while processing your request. You can retry your request, or "
            "contact us through our help center at help.openai.com if the error persists.")}
    elif cut or variant == "response_incomplete":
        status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        if not cut:  # forced: pretend the cap was hit mid-sentence
            output, text = cap or 16, " ".join(ANSWER_WORDS[:3])
    items: list[Json] = []
    if model.reasoning:
        items.append({"id": "rs_" + secrets.token_hex(24), "type": "reasoning", "summary": []})
    if text and status != "failed":
        items.append({"type": "message", "id": "msg_" + secrets.token_hex(24),
                      "status": "incomplete" if incomplete else "completed",
                      "role": "assistant",
                      "content": [{"type": "output_text", "text": text, "annotations": [],
                                   "logprobs": []}]})
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output, "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + output,
    } if usage_ok else None
    answer = {
        "id": rid, "object": "response", "created_at": now, "status": status,
        "completed_at": now if status == "completed" else None, "background": False,
        "error": failure, "incomplete_details": incomplete, "instructions": None,
        "max_output_tokens": cap, "max_tool_calls": None, "model": model.snapshot,
        "output": items, "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": "medium" if model.reasoning else None, "summary": None},
        "service_tier": "default", "store": body.get("store", True), "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto",
        "tools": [], "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": None,
        "metadata": {},
    }
    return answer, (prompt + output) if usage_ok else 0


_EMBED_CACHE: dict[tuple[str, int], list[float]] = {}


def _vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector per (text, dims): same input, same embedding."""
    key = (text, dims)
    cached = _EMBED_CACHE.get(key)
    if cached is None:
        rng = random.Random(hashlib.sha256(f"{dims}:{text}".encode()).digest())
        raw = [rng.gauss(0.0, 1.0) for _ in range(dims)]
        norm = math.sqrt(sum(v * v for v in raw)) or 1.0
        cached = [round(v / norm, 10) for v in raw]
        if len(_EMBED_CACHE) < 64:
            _EMBED_CACHE[key] = cached
    return cached


def embeddings(req: Request, variant: str | None) -> tuple[Json, int]:
    """Embedding vectors, as floats or base64 float32 (POST /embeddings)."""
    body = _body(req)
    _, model = _resolve_model(req, body, "embeddings", None)
    source = _required(body, "input")
    inputs = source if isinstance(source, list) else [source]
    if not inputs or not all(isinstance(i, str) for i in inputs):
        raise invalid("'$.input' is invalid. Please check the API reference: "
                      "https://platform.openai.com/docs/api-reference.", "input")
    dims = body.get("dimensions", model.dimensions)
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= model.dimensions:
        raise invalid(f"Invalid 'dimensions': expected an integer between 1 and "
                      f"{model.dimensions}.", "dimensions", "invalid_value")
    b64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(inputs):
        vec = _vector(text, dims)
        emb: Json = (base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if b64 else vec)
        data.append({"object": "embedding", "index": index, "embedding": emb})
    prompt = sum(_tokens(t) for t in inputs)
    return {"object": "list", "data": data, "model": model.snapshot,
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}, prompt


def moderations(req: Request, variant: str | None) -> tuple[Json, int]:
    """Moderation results, never flagged (POST /moderations); no usage, no tokens."""
    body = _body(req)
    source = _required(body, "input")
    name = body.get("model", "omni-moderation-latest")
    model = MODELS.get(name) if isinstance(name, str) else None
    if model is None:
        raise ApiError(404, error(not_found_message(str(name)), "invalid_request_error",
                                  None, "model_not_found"))
    if model.kind != "moderation":
        raise invalid(f"The model `{name}` does not support this endpoint.", "model")
    inputs = source if isinstance(source, list) else [source]
    results = []
    for item in inputs:
        seed = hashlib.sha256(json.dumps(item, sort_keys=True).encode()).digest()
        rng = random.Random(seed)
        scores = {c: round(rng.uniform(1e-7, 2e-3), 10) for c in MODERATION_CATEGORIES}
        results.append({
            "flagged": False,
            "categories": {c: False for c in MODERATION_CATEGORIES},
            "category_scores": scores,
            "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES},
        })
    return {"id": "modr-" + secrets.token_hex(16), "model": model.snapshot,
            "results": results}, 0


def images(req: Request, variant: str | None) -> tuple[Json, int]:
    """Generated images: URLs for dall-e-2, base64 plus usage for GPT image models."""
    body = _body(req)
    prompt = body.get("prompt")
    if not prompt:
        raise _missing("prompt")
    name, _ = _resolve_model(req, body, "image", "dall-e-2")
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10:
        raise invalid("Invalid 'n': expected an integer between 1 and 10.", "n",
                      "invalid_value")
    size = body.get("size", "1024x1024")
    created = int(time.time())
    if name == "dall-e-2":  # URLs and no usage object
        return {"created": created, "data": [
            {"url": f"https://images.fake.invalid/{secrets.token_hex(8)}.png",
             "revised_prompt": None} for _ in range(n)]}, 0
    quality = body.get("quality", "medium")
    quality = "medium" if quality == "auto" else quality
    per_image = IMAGE_OUTPUT_TOKENS.get((quality, size), 1056)
    text_in = _tokens(str(prompt or ""))
    output = per_image * n
    return {
        "created": created, "background": "opaque",
        "data": [{"b64_json": PNG_1PX} for _ in range(n)],
        "output_format": "png", "quality": quality, "size": size,
        "usage": {"input_tokens": text_in,
                  "input_tokens_details": {"text_tokens": text_in, "image_tokens": 0},
                  "output_tokens": output,
                  "output_tokens_details": {"image_tokens": output, "text_tokens": 0},
                  "total_tokens": text_in + output},
    }, text_in + output


def models(req: Request, variant: str | None) -> tuple[Json, int]:
    """Every model the fake knows, with shutdown dates (GET /models; not paginated)."""
    return {"object": "list", "data": [
        {"id": mid, "object": "model", "created": m.created, "owned_by": "system",
         "shutdown_date": m.shutdown_date} for mid, m in MODELS.items()]}, 0


def list_page(req: Request, variant: str | None) -> tuple[Json, int]:
    """One page of a list endpoint: limit/after cursors, has_more, first/last ids."""
    items, max_limit, default, ids = LISTS[req.endpoint]
    raw_limit = req.query.get("limit")
    limit = default
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise invalid(f"Invalid 'limit': expected an integer, but got '{raw_limit}' "
                          "instead.", "limit", "invalid_type") from None
        if limit < 1:
            raise invalid(f"Invalid 'limit': integer below minimum value. Expected a value "
                          f">= 1, but got {limit} instead.", "limit", "integer_below_min_value")
        if limit > max_limit:
            raise invalid(f"Invalid 'limit': integer above maximum value. Expected a value "
                          f"<= {max_limit}, but got {limit} instead.", "limit",
                          "integer_above_max_value")
    rows = items
    if req.endpoint == "files" and req.query.get("purpose"):
        rows = [f for f in rows if f["purpose"] == req.query["purpose"]]
    if req.query.get("order") == "asc":
        rows = list(reversed(rows))
    after = req.query.get("after")
    if after:
        position = next((i for i, r in enumerate(rows) if r["id"] == after), None)
        rows = [] if position is None else rows[position + 1:]
    page = rows[:limit]
    answer: Json = {"object": "list", "data": page}
    if ids:
        answer["first_id"] = page[0]["id"] if page else None
        answer["last_id"] = page[-1]["id"] if page else None
    answer["has_more"] = len(rows) > limit
    return answer, 0


def assistants(req: Request, variant: str | None) -> tuple[Json, int]:
    """The assistants list, only with the beta header (GET /assistants)."""
    if req.headers.get("openai-beta") != "assistants=v2":
        raise invalid("You must provide the 'OpenAI-Beta' header to access the Assistants "
                      "API. Please try again by setting the header "
                      "'OpenAI-Beta: assistants=v2'.", None, "invalid_beta")
    return list_page(req, variant)


def wrong_shape(endpoint: str, body: Json) -> Json:
    """Valid JSON that misses what the spec requires."""
    if endpoint == "chat":
        return {"id": body["id"], "object": "chat.completion", "created": body["created"],
                "model": body["model"], "choices": []}  # no usage either
    if endpoint == "responses":
        return {k: v for k, v in body.items() if k != "usage"}
    if endpoint == "embeddings":
        return {"object": "list", "data": {"embedding": []}, "model": body["model"]}
    if endpoint == "moderations":
        return {"id": body["id"], "model": body["model"], "results": []}
    if endpoint == "images":
        return {"data": "none"}
    return {"object": "list", "data": {"unexpected": True}}  # data is not a list


def render_json(req: Request, body: Json, variant: str | None) -> Plan:
    """A 200 with the body as JSON, spoiled as a body fault says."""
    if variant == "wrong_shape":
        body = wrong_shape(req.endpoint, body)
    data = dumps(body)
    if variant == "malformed":
        data = data[: max(1, len(data) // 2)]  # a truncated object never parses
    elif variant == "empty_body":
        data = b""
    return Plan(200, data)

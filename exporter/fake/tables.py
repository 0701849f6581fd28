"""What the fake serves from (data only): models, endpoints, list fixtures, canned pages
and messages (shared/openai-api-facts.md §2, §5, §8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Json = Any


@dataclass(frozen=True)
class Model:
    """One model the fake knows: the endpoint kind it serves and what the API echoes."""

    kind: str  # chat | embeddings | moderation | image
    created: int
    snapshot: str  # what the API echoes in "model": the dated snapshot, not the alias
    shutdown_date: str | None = None
    reasoning: bool = False  # spends hidden reasoning tokens before visible output
    dimensions: int = 0  # embeddings only


MODELS: dict[str, Model] = {
    "gpt-4o-mini": Model("chat", 1721172741, "gpt-4o-mini-2024-07-18"),
    "gpt-4o": Model("chat", 1715367049, "gpt-4o-2024-08-06"),
    "gpt-4.1-mini": Model("chat", 1744318173, "gpt-4.1-mini-2025-04-14"),
    "gpt-5-mini": Model("chat", 1754425928, "gpt-5-mini-2025-08-07", reasoning=True),
    "text-embedding-3-small": Model("embeddings", 1705948997, "text-embedding-3-small",
                                    dimensions=1536),
    "text-embedding-3-large": Model("embeddings", 1705953180, "text-embedding-3-large",
                                    dimensions=3072),
    "omni-moderation-latest": Model("moderation", 1731689265, "omni-moderation-2024-09-26"),
    # The deprecations page lists gpt-image-1-mini for shutdown on 2026-12-01 (facts §2).
    "gpt-image-1-mini": Model("image", 1759435241, "gpt-image-1-mini",
                              shutdown_date="2026-12-01"),
    "dall-e-2": Model("image", 1698798177, "dall-e-2"),
}
"""Model id -> Model, in /v1/models order; any other id is a 404 ``model_not_found``."""

ENDPOINTS: dict[str, tuple[str, str]] = {
    "chat": ("POST", "/v1/chat/completions"),
    "responses": ("POST", "/v1/responses"),
    "embeddings": ("POST", "/v1/embeddings"),
    "moderations": ("POST", "/v1/moderations"),
    "models": ("GET", "/v1/models"),
    "files": ("GET", "/v1/files"),
    "fine_tunes": ("GET", "/v1/fine_tuning/jobs"),
    "batches": ("GET", "/v1/batches"),
    "assistants": ("GET", "/v1/assistants"),
    "images": ("POST", "/v1/images/generations"),
}
"""Probe key -> (method, OpenAI path)."""

# The streamed twins of two endpoints: the same path and builder, `"stream": true` in the
# body, an SSE answer (streams.py); their own keys, so faults can target them.
STREAMED = {"chat_stream": "chat", "responses_stream": "responses"}

# Endpoints whose answers spend tokens: they count against the tokens-per-window limit.
TOKEN_ENDPOINTS = frozenset({"chat", "responses", "embeddings", "images", *STREAMED})
# Endpoints whose request names a model: an injected 404 is model_not_found there and an
# unknown-route 404 ("Invalid URL", code null) elsewhere, as the real API answers.
MODEL_ENDPOINTS = frozenset({"chat", "responses", "embeddings", "moderations", "images",
                             *STREAMED})

# Azure's operation names, as its 429 messages spell them.
AZURE_OPERATIONS = {
    "chat": "ChatCompletions_Create",
    "embeddings": "Embeddings_Create",
    "images": "ImageGenerations_Create",
    "responses": "Responses_Create",
    "chat_stream": "ChatCompletions_Create",
    "responses_stream": "Responses_Create",
}

JSON = "application/json"
HTML = "text/html"
ORG = "org-fake0000000000000000000"
KEYS_URL = "https://platform.openai.com/account/api-keys"
PNG_1PX = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJ"
           "RU5ErkJggg==")

CF_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
          b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
          b"</body>\r\n</html>\r\n")
CF_504 = (b"<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
          b"<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>cloudflare</center>"
          b"\r\n</body>\r\n</html>\r\n")
CAPTIVE_PORTAL = (b"<!DOCTYPE html>\n<html><head><title>Sign in to Guest Wi-Fi</title></head>\n"
                  b"<body><h1>Welcome</h1><p>Please accept the terms of use to continue.</p>\n"
                  b"<form method=\"post\" action=\"/login\"><button>Accept</button></form>"
                  b"</body></html>\n")

MISSING_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field "
    "(with blank username) if you're accessing the API from your browser and are prompted for "
    f"a username and password. You can obtain an API key from {KEYS_URL}."
)
BAD_JSON_MESSAGE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please contact "
    "us through our help center at help.openai.com.)"
)
QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)
AZURE_401 = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
    "a valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)

ANSWER_WORDS = ["Pong!", "How", "can", "I", "help", "you", "today?"]
REASONING_TOKENS = 64  # hidden tokens a reasoning model spends before answering

MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
    "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
    "sexual/minors", "violence", "violence/graphic",
)
IMAGE_OUTPUT_TOKENS = {  # gpt-image-1 family, per quality and size
    ("low", "1024x1024"): 272, ("medium", "1024x1024"): 1056, ("high", "1024x1024"): 4160,
    ("low", "1024x1536"): 408, ("medium", "1024x1536"): 1584, ("high", "1024x1536"): 6240,
    ("low", "1536x1024"): 400, ("medium", "1536x1024"): 1568, ("high", "1536x1024"): 6208,
}


_FILES = [
    {"id": "file-abc789", "object": "file", "bytes": 140, "created_at": 1713779121,
     "expires_at": None, "filename": "puppy.jsonl", "purpose": "fine-tune",
     "status": "processed", "status_details": None},
    {"id": "file-abc456", "object": "file", "bytes": 2210, "created_at": 1711471533,
     "expires_at": 1712076333, "filename": "batch_input.jsonl", "purpose": "batch",
     "status": "processed", "status_details": None},
    {"id": "file-abc123", "object": "file", "bytes": 175, "created_at": 1613677385,
     "expires_at": None, "filename": "salesOverview.pdf", "purpose": "assistants",
     "status": "processed", "status_details": None},
]
_FINE_TUNES = [
    {"object": "fine_tuning.job", "id": "ftjob-abc456", "model": "gpt-4o-mini-2024-07-18",
     "created_at": 1721764800, "finished_at": 1721766000,
     "fine_tuned_model": "ft:gpt-4o-mini-2024-07-18:org:probe:9xAbCdEf",
     "organization_id": ORG, "result_files": ["file-ftres1"], "status": "succeeded",
     "validation_file": None, "training_file": "file-abc789",
     "hyperparameters": {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.8},
     "trained_tokens": 5768, "error": None, "seed": 42, "estimated_finish": None,
     "integrations": [], "metadata": {"key": "value"},
     "method": {"type": "supervised"}},
    {"object": "fine_tuning.job", "id": "ftjob-abc123", "model": "gpt-4o-mini-2024-07-18",
     "created_at": 1721700000, "finished_at": None, "fine_tuned_model": None,
     "organization_id": ORG, "result_files": [], "status": "cancelled",
     "validation_file": None, "training_file": "file-abc789",
     "hyperparameters": {"n_epochs": "auto", "batch_size": "auto",
                         "learning_rate_multiplier": "auto"},
     "trained_tokens": None, "error": None, "seed": 7, "estimated_finish": None,
     "integrations": [], "metadata": None, "method": {"type": "supervised"}},
]


def _batch(bid: str, created: int, status: str, total: int, done: int, failed: int) -> Json:
    finished = status == "completed"
    return {
        "id": bid, "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
        "input_file_id": "file-abc456", "completion_window": "24h", "status": status,
        "output_file_id": "file-cvaTdG" if finished else None,
        "error_file_id": "file-HOWS94" if finished else None,
        "created_at": created, "in_progress_at": created + 5, "expires_at": created + 86400,
        "finalizing_at": created + 21600 if finished else None,
        "completed_at": created + 21630 if finished else None, "failed_at": None,
        "expired_at": None, "cancelling_at": None, "cancelled_at": None,
        "request_counts": {"total": total, "completed": done, "failed": failed},
        "metadata": {"batch_description": "Nightly job"},
    }


_BATCHES = [
    _batch("batch_abc789", 1711557933, "in_progress", 50, 12, 0),
    _batch("batch_abc456", 1711500000, "completed", 10, 10, 0),
    _batch("batch_abc123", 1711471533, "completed", 100, 95, 5),
]


def _assistant(aid: str, created: int, name: str | None) -> Json:
    return {"id": aid, "object": "assistant", "created_at": created, "name": name,
            "description": None, "model": "gpt-4o", "instructions": None, "tools": [],
            "tool_resources": {}, "metadata": {}, "top_p": 1.0, "temperature": 1.0,
            "response_format": "auto"}


_ASSISTANTS = [
    _assistant("asst_abc123", 1698982736, "Coding Tutor"),
    _assistant("asst_abc456", 1698982718, "My Assistant"),
    _assistant("asst_abc789", 1698982643, None),
]

# endpoint -> (items, max limit, default limit, whether first_id/last_id are in the spec)
LISTS: dict[str, tuple[list[Json], int, int, bool]] = {
    "files": (_FILES, 10000, 10000, True),
    "fine_tunes": (_FINE_TUNES, 100, 20, False),
    "batches": (_BATCHES, 100, 20, True),
    "assistants": (_ASSISTANTS, 100, 20, True),
}

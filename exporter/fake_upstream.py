"""A fake OpenAI-compatible upstream: real sockets, spec-shaped answers, injectable faults.

Used by the exporter's tests (over a real socket, so timeouts, resets and stalls are
real), by the key-less demo (``make run`` without a key) and, in ``chaos`` profile, by
the Prometheus "truth" test. It binds to loopback only and never contacts anything.

What it reproduces (see shared/openai-api-facts.md §2, §4, §5, §8, §10):

* the probe endpoints under ``/v1`` (OpenAI style, ``Authorization: Bearer``) and under
  ``/openai`` (Azure style, ``api-key`` header, required ``api-version`` query);
* request validation, masked-key 401s, ``model_not_found`` 404s, ``invalid_beta``;
* per-key request/token counters that count down inside a fixed window and come back
  in the six ``x-ratelimit-*`` headers (reset values as Go durations), 429 when spent;
* the faults in ``FAULTS``, settable per endpoint from Python, from the CLI or over HTTP
  on ``/__fake__/faults``;
* a seedable ``chaos`` profile mixing latency and failures for lively demos.

Run it alone with ``python -m exporter.fake_upstream --port 8099``.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import hashlib
import http.server
import json
import logging
import math
import random
import secrets
import signal
import socket
import string
import struct
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

Json = Any

# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class _Model:
    kind: str  # chat | embeddings | moderation | image
    created: int
    snapshot: str  # what the API echoes in "model": the dated snapshot, not the alias
    shutdown_date: str | None = None
    reasoning: bool = False  # spends hidden reasoning tokens before visible output
    dimensions: int = 0  # embeddings only


_MODELS: dict[str, _Model] = {
    "gpt-4o-mini": _Model("chat", 1721172741, "gpt-4o-mini-2024-07-18"),
    "gpt-4o": _Model("chat", 1715367049, "gpt-4o-2024-08-06"),
    "gpt-4.1-mini": _Model("chat", 1744318173, "gpt-4.1-mini-2025-04-14"),
    "gpt-5-mini": _Model("chat", 1754425928, "gpt-5-mini-2025-08-07", reasoning=True),
    "text-embedding-3-small": _Model("embeddings", 1705948997, "text-embedding-3-small",
                                     dimensions=1536),
    "text-embedding-3-large": _Model("embeddings", 1705953180, "text-embedding-3-large",
                                     dimensions=3072),
    "omni-moderation-latest": _Model("moderation", 1731689265, "omni-moderation-2024-09-26"),
    # The deprecations page lists gpt-image-1-mini for shutdown on 2026-12-01 (facts §2).
    "gpt-image-1-mini": _Model("image", 1759435241, "gpt-image-1-mini",
                               shutdown_date="2026-12-01"),
    "dall-e-2": _Model("image", 1698798177, "dall-e-2"),
}

KNOWN_MODELS: tuple[str, ...] = tuple(_MODELS)
"""Model ids the fake accepts; any other id is a 404 ``model_not_found``."""

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

# Azure: deployment-scoped operations sit under /openai/deployments/{d}/..., the rest
# directly under /openai/... (openai-python lib/azure.py _deployments_endpoints).
_AZURE_DEPLOYMENT_ROUTES = {
    "chat/completions": "chat",
    "embeddings": "embeddings",
    "images/generations": "images",
}
_AZURE_OPERATIONS = {
    "chat": "ChatCompletions_Create",
    "embeddings": "Embeddings_Create",
    "images": "ImageGenerations_Create",
    "responses": "Responses_Create",
}

# Faults that replace the answer with a canned status and body.
_REPLACE_FAULTS = (
    "html_200", "bad_request", "unauthorized", "forbidden", "not_found", "rate_limited",
    "rate_limited_tokens", "quota", "quota_legacy", "billing", "server_error",
    "bad_gateway_html", "bad_gateway_json", "overloaded", "gateway_timeout",
)
# Faults that change the body of an otherwise successful (200) answer.
_BODY_FAULTS = ("malformed", "empty_body", "wrong_shape", "response_failed",
                "response_incomplete")
# Faults about how (or whether) bytes go over the wire.
_TRANSPORT_FAULTS = ("delay", "hang", "slow_body", "trickle_body", "reset", "reset_mid_body")

FAULTS: tuple[str, ...] = _TRANSPORT_FAULTS + _BODY_FAULTS + _REPLACE_FAULTS
"""Every fault name ``set_fault`` accepts (besides ``"none"``, which forces a normal answer)."""

# Chaos profile: percent of requests per outcome when no explicit fault is set; the
# remainder (about 84 %) is a normal answer. Weights are per error *class* the exporter
# knows, so each class shows up within a few hundred probes. ``hang`` is left out: it
# would pin a probe for the whole timeout.
CHAOS_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("rate_limited", 2.0), ("rate_limited_tokens", 0.5),             # rate_limited
    ("quota", 0.8), ("quota_legacy", 0.2), ("billing", 0.3),         # quota_exceeded
    ("server_error", 1.3), ("bad_gateway_json", 0.3),                # provider_error
    ("overloaded", 1.2), ("bad_gateway_html", 0.8), ("gateway_timeout", 0.4),  # unavailable
    ("malformed", 0.6), ("wrong_shape", 0.4), ("empty_body", 0.2), ("html_200", 0.2),
    ("reset", 0.6), ("reset_mid_body", 0.4), ("slow_body", 0.3),     # network / timeout
    ("unauthorized", 1.2), ("forbidden", 1.2), ("not_found", 1.2), ("bad_request", 1.2),
    ("response_failed", 0.3), ("response_incomplete", 0.3),          # responses (and chat)
)
CHAOS_STALL_SECONDS = 1.5  # chaos slow_body stalls this long, then cuts the body
CHAOS_LATENCY_MS = (80.0, 250.0, 1500.0)  # min, median, max of the lognormal jitter
DEFAULT_DELAY_MS = 2000.0  # the "delay" fault without delay_ms
DEFAULT_TRICKLE_MS = 200.0  # the "trickle_body" interval between chunks without delay_ms
MAX_RECORDED = 10_000  # the request log is a ring: a long demo must not grow without bound

_TOKEN_ENDPOINTS = frozenset({"chat", "responses", "embeddings", "images"})
_JSON = "application/json"
_HTML = "text/html"
_ORG = "org-fake0000000000000000000"
_KEYS_URL = "https://platform.openai.com/account/api-keys"
_PNG_1PX = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJ"
            "RU5ErkJggg==")

_CF_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
           b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
           b"</body>\r\n</html>\r\n")
_CF_504 = (b"<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
           b"<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>cloudflare</center>"
           b"\r\n</body>\r\n</html>\r\n")
_CAPTIVE_PORTAL = (b"<!DOCTYPE html>\n<html><head><title>Sign in to Guest Wi-Fi</title></head>\n"
                   b"<body><h1>Welcome</h1><p>Please accept the terms of use to continue.</p>\n"
                   b"<form method=\"post\" action=\"/login\"><button>Accept</button></form>"
                   b"</body></html>\n")

_MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
    "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
    "sexual/minors", "violence", "violence/graphic",
)
_IMAGE_OUTPUT_TOKENS = {  # gpt-image-1 family, per quality and size
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
     "organization_id": _ORG, "result_files": ["file-ftres1"], "status": "succeeded",
     "validation_file": None, "training_file": "file-abc789",
     "hyperparameters": {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.8},
     "trained_tokens": 5768, "error": None, "seed": 42, "estimated_finish": None,
     "integrations": [], "metadata": {"key": "value"},
     "method": {"type": "supervised"}},
    {"object": "fine_tuning.job", "id": "ftjob-abc123", "model": "gpt-4o-mini-2024-07-18",
     "created_at": 1721700000, "finished_at": None, "fine_tuned_model": None,
     "organization_id": _ORG, "result_files": [], "status": "cancelled",
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
_LISTS: dict[str, tuple[list[Json], int, int, bool]] = {
    "files": (_FILES, 10000, 10000, True),
    "fine_tunes": (_FINE_TUNES, 100, 20, False),
    "batches": (_BATCHES, 100, 20, True),
    "assistants": (_ASSISTANTS, 100, 20, True),
}

# ------------------------------------------------------------------------ helpers


def go_duration(seconds: float) -> str:
    """Format like Go's time.Duration.String after rounding to milliseconds.

    0 -> "0s", 0.02 -> "20ms", 8.64 -> "8.64s", 72 -> "1m12s", 360 -> "6m0s". OpenAI
    sends exactly these forms in x-ratelimit-reset-*; note "m" (minutes) versus "ms".
    """
    ms = max(0, round(seconds * 1000))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, frac = divmod(rest, 1000)
    text = f"{secs}" + (f".{frac:03d}".rstrip("0") if frac else "") + "s"
    if hours or minutes:
        text = f"{minutes}m" + text
    if hours:
        text = f"{hours}h" + text
    return text


def mask_key(key: str) -> str:
    """Mask a key the way OpenAI echoes it in 401s: first 8 chars, *****, last 4.

    Keys under 16 characters keep only their first 3 so most of a short key stays hidden.
    """
    if len(key) >= 16:
        return f"{key[:8]}*****{key[-4:]}"
    return f"{key[:3]}*****" if len(key) >= 6 else "*****"


def _request_id() -> str:
    return "req_" + uuid.uuid4().hex


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


def _error(message: str, type_: str | None, param: str | None = None,
           code: str | int | None = None) -> Json:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _dumps(obj: Json) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _not_found_message(model: str) -> str:
    return f"The model `{model}` does not exist or you do not have access to it."


def _invalid_key_message(key: str) -> str:
    return (f"Incorrect API key provided: {mask_key(key)}. "
            f"You can find your API key at {_KEYS_URL}.")


_MISSING_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field "
    "(with blank username) if you're accessing the API from your browser and are prompted for "
    f"a username and password. You can obtain an API key from {_KEYS_URL}."
)
_BAD_JSON_MESSAGE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please contact "
    "us through our help center at help.openai.com.)"
)
_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)
_AZURE_401 = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
    "a valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)


class _ApiError(Exception):
    """Raised by a request handler: answer with this status and JSON body."""

    def __init__(self, status: int, body: Json) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _invalid(message: str, param: str | None = None, code: str | None = None,
             status: int = 400) -> _ApiError:
    return _ApiError(status, _error(message, "invalid_request_error", param, code))


# --------------------------------------------------------------------- rate limits


@dataclass
class _Bucket:
    started: float
    requests: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class _Snapshot:
    requests_limit: int
    requests_remaining: int
    requests_reset: float  # seconds until the requests counter is full again
    tokens_limit: int
    tokens_remaining: int
    tokens_reset: float


class _Limiter:
    """Per-key fixed-window counters.

    A window opens with the first request after the previous one expired and lasts
    ``window`` seconds, so the request that opens it reports the whole window
    (``1m0s`` for 60 s) and requests near its end report milliseconds (``20ms``). A
    counter still at its limit reports ``0s``, like the real API.
    """

    def __init__(self, rpm: int, tpm: int, window: float, clock: Callable[[], float]) -> None:
        self.rpm, self.tpm, self.window, self._clock = rpm, tpm, window, clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None or now - bucket.started >= self.window:
            bucket = self._buckets[key] = _Bucket(now)
        return bucket

    def take(self, key: str, *, uses_tokens: bool) -> str | None:
        """Count one request; return "requests"/"tokens" instead when that limit is spent."""
        with self._lock:
            bucket = self._bucket(key, self._clock())
            if bucket.requests >= self.rpm:
                return "requests"
            if uses_tokens and bucket.tokens >= self.tpm:
                return "tokens"
            bucket.requests += 1
            return None

    def add_tokens(self, key: str, tokens: int) -> None:
        with self._lock:
            bucket = self._bucket(key, self._clock())
            bucket.tokens = min(self.tpm, bucket.tokens + max(0, tokens))

    def snapshot(self, key: str) -> _Snapshot:
        with self._lock:
            now = self._clock()
            bucket = self._bucket(key, now)
            left = max(0.0, self.window - (now - bucket.started))
            return _Snapshot(
                self.rpm, self.rpm - bucket.requests, left if bucket.requests else 0.0,
                self.tpm, self.tpm - bucket.tokens, left if bucket.tokens else 0.0,
            )

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()


# ------------------------------------------------------------------ request / plan


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    raw: bytes
    endpoint: str
    azure: bool
    deployment: str | None = None


@dataclass
class _Plan:
    """What the handler sends, and how: built by FakeUpstream, executed by the handler."""

    status: int = 200
    body: bytes = b""
    content_type: str = _JSON
    headers: dict[str, str] = field(default_factory=dict)
    sleep_s: float = 0.0  # before anything goes on the wire
    transport: str = "normal"  # normal | hang | reset | reset_mid_body | slow_body | trickle_body
    stall_s: float | None = None  # hang / slow_body: None = until stop()
    trickle_s: float = DEFAULT_TRICKLE_MS / 1000
    edge: bool = False  # from a proxy/CDN, not the API: no openai-* headers


@dataclass
class _Fault:
    name: str
    count: int | None = None
    delay_ms: float | None = None


# ------------------------------------------------------------------------- server


class FakeUpstream:
    """An OpenAI-compatible HTTP server on loopback with injectable faults.

    ``api_key=None`` accepts any non-empty key. ``latency_ms`` is added to every API
    answer. In the ``chaos`` profile each request without an explicit fault also gets a
    lognormal jitter (80-1500 ms, median 250 ms) on top of ``latency_ms`` and, with the
    odds in ``CHAOS_WEIGHTS``, a random fault; ``time_scale`` multiplies the chaos
    jitter and stalls (0 makes chaos instant, for tests). ``clock`` drives the rate-limit
    windows.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None,
                 profile: str = "healthy", latency_ms: float = 0.0, seed: int | None = None,
                 rpm_limit: int = 500, tpm_limit: int = 200000, window_seconds: float = 60.0,
                 time_scale: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if profile not in ("healthy", "chaos"):
            raise ValueError(f"profile must be 'healthy' or 'chaos', not {profile!r}")
        if api_key is not None and not api_key:
            raise ValueError("api_key must be None (accept any key) or non-empty")
        if rpm_limit < 1 or tpm_limit < 1 or window_seconds <= 0:
            raise ValueError("rpm_limit, tpm_limit and window_seconds must be positive")
        if latency_ms < 0 or time_scale < 0:
            raise ValueError("latency_ms and time_scale must be >= 0")
        self.api_key = api_key
        self.profile = profile
        self.latency_ms = latency_ms
        self.time_scale = time_scale
        self._rng = random.Random(seed)
        self._limiter = _Limiter(rpm_limit, tpm_limit, window_seconds, clock)
        self._lock = threading.Lock()
        self._faults: dict[str, _Fault] = {}
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_RECORDED)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        # Bind now so port/base_url are known before start().
        self._server = _Server((host, port), self)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> FakeUpstream:
        """Serve in a background daemon thread; returns self."""
        if self._thread is not None or self._stopped:
            raise RuntimeError("FakeUpstream can be started once")
        self._thread = threading.Thread(
            # A short poll lets stop() return at once; an idle select() is nearly free.
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
            name=f"fake-upstream-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop every open connection, hanging ones included (< 1 s)."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()  # wakes hang / slow_body / delay waits
        if self._thread is not None:
            self._server.shutdown()  # only legal once serve_forever runs
        self._server.close_connections()  # unblocks handlers idling on keep-alive reads
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def root_url(self) -> str:
        host = str(self._server.server_address[0])
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    # -- faults and records ----------------------------------------------------------

    def set_fault(self, endpoint: str, fault: str, *, count: int | None = None,
                  delay_ms: float | None = None) -> None:
        """Make `endpoint` ("*" for all) misbehave; `count` = only the next N requests.

        An endpoint's own fault wins over "*". ``delay_ms`` is the sleep for ``delay``,
        the stall for ``hang``/``slow_body`` (then the connection closes), the chunk
        interval for ``trickle_body`` and a pre-answer delay for every other fault.
        ``"none"`` forces normal answers (also suppressing chaos) for that endpoint.
        """
        if endpoint != "*" and endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {', '.join(ENDPOINTS)} or *")
        if fault != "none" and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or count < 1):
            raise ValueError("count must be a positive integer or None")
        if delay_ms is not None and (isinstance(delay_ms, bool)
                                     or not isinstance(delay_ms, (int, float)) or delay_ms < 0):
            raise ValueError("delay_ms must be a number >= 0 or None")
        with self._lock:
            self._faults[endpoint] = _Fault(fault, count, delay_ms)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def faults(self) -> dict[str, dict[str, Any]]:
        """The faults in force: endpoint -> {fault, count, delay_ms}."""
        with self._lock:
            return {ep: {"fault": f.name, "count": f.count, "delay_ms": f.delay_ms}
                    for ep, f in self._faults.items()}

    def reset(self) -> None:
        """Clear faults, recorded requests and rate-limit counters."""
        with self._lock:
            self._faults.clear()
            self._records.clear()
        self._limiter.clear()

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Recorded API requests, oldest first (control requests are not recorded).

        Keys: method, path, query (name -> last value), headers (lower-case names,
        credentials replaced by "<redacted>"), json and body (both the parsed JSON body,
        or None), endpoint
        (probe key or None for unknown routes), model, ts (Unix seconds), and, once
        answered, fault (name or None), chaos (bool) and status (HTTP status, None when
        no status line was sent).
        """
        with self._lock:
            return [dict(r) for r in self._records]

    def _take_fault(self, endpoint: str) -> tuple[_Fault | None, bool]:
        """The fault for this request, and whether chaos picked it."""
        with self._lock:
            for key in (endpoint, "*"):
                fault = self._faults.get(key)
                if fault is None:
                    continue
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        del self._faults[key]
                if fault.name == "none":
                    return None, False
                return _Fault(fault.name, None, fault.delay_ms), False
            if self.profile != "chaos":
                return None, False
            roll = self._rng.uniform(0, 100)
            for name, weight in CHAOS_WEIGHTS:
                roll -= weight
                if roll < 0:
                    # In-body failures exist only where the body has a status.
                    if (name == "response_failed" and endpoint != "responses") or (
                            name == "response_incomplete"
                            and endpoint not in ("responses", "chat")):
                        return None, False
                    delay = CHAOS_STALL_SECONDS * 1000 if name == "slow_body" else None
                    return _Fault(name, None, delay), True
            return None, False

    def _jitter_s(self) -> float:
        """Chaos latency: lognormal around the median, clipped to [min, max]."""
        lo, median, hi = CHAOS_LATENCY_MS
        with self._lock:
            ms = self._rng.lognormvariate(math.log(median), 0.7)
        return min(hi, max(lo, ms)) / 1000 * self.time_scale

    # -- the API -----------------------------------------------------------------

    def _plan(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
              raw: bytes) -> tuple[_Plan, dict[str, Any] | None]:
        """Decide the whole answer to one API request (the handler only executes it)."""
        req = _route(method, path, query, headers, raw)
        parsed = _parse_json(raw)
        record: dict[str, Any] = {
            "method": method, "path": path, "query": dict(query),
            "headers": {k: ("<redacted>" if k in ("authorization", "api-key") else v)
                        for k, v in headers.items()},
            "json": parsed, "body": parsed,  # two names for one thing: both are in use
            "endpoint": req.endpoint if req else None,
            "model": parsed.get("model") if isinstance(parsed, dict) else None,
            "ts": time.time(), "fault": None, "chaos": False, "status": None,
        }
        with self._lock:
            self._records.append(record)
        if req is None:
            if path.startswith("/openai/"):
                return _plan_json(404, {"error": {"code": "404",
                                                  "message": "Resource not found"}}), record
            return _plan_json(404, _error(f"Invalid URL ({method} {path})",
                                          "invalid_request_error")), record
        if req.azure and not query.get("api-version"):
            # Azure answers a request without api-version as an unknown resource.
            return _plan_json(404, {"error": {"code": "404",
                                              "message": "Resource not found"}}), record

        fault, chaos = self._take_fault(req.endpoint)
        record["fault"], record["chaos"] = (fault.name if fault else None), chaos
        sleep = self.latency_ms / 1000
        if self.profile == "chaos":
            sleep += self._jitter_s()
        name = fault.name if fault else None
        delay_s = (fault.delay_ms / 1000) if fault and fault.delay_ms is not None else None
        if chaos and delay_s is not None:
            delay_s *= self.time_scale

        if name == "hang":
            return _Plan(transport="hang", sleep_s=sleep, stall_s=delay_s), record
        if name == "reset":
            return _Plan(transport="reset", sleep_s=sleep + (delay_s or 0.0)), record
        if name in _REPLACE_FAULTS:
            plan = self._replace(name, req)
            plan.sleep_s = sleep + (delay_s or 0.0)
        else:
            if name == "delay":
                sleep += delay_s if delay_s is not None else DEFAULT_DELAY_MS / 1000
            elif name in _BODY_FAULTS or name == "reset_mid_body":
                sleep += delay_s or 0.0
            plan = self._answer(req, variant=name if name in _BODY_FAULTS else None)
            plan.sleep_s = sleep
            if name in ("slow_body", "reset_mid_body", "trickle_body"):
                plan.transport = name
            if name == "slow_body":
                plan.stall_s = delay_s
            elif name == "trickle_body" and delay_s is not None:
                plan.trickle_s = delay_s
        if not plan.edge:
            plan.headers.setdefault("openai-processing-ms", str(int(plan.sleep_s * 1000) + 1))
        return plan, record

    def _key(self, req: _Request) -> str:
        if req.azure and req.headers.get("api-key"):
            return req.headers["api-key"]
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    def _rl_headers(self, key: str, azure: bool) -> dict[str, str]:
        snap = self._limiter.snapshot(key)
        if azure:  # Azure sends only the remaining-* pair
            return {"x-ratelimit-remaining-requests": str(snap.requests_remaining),
                    "x-ratelimit-remaining-tokens": str(snap.tokens_remaining)}
        return {
            "x-ratelimit-limit-requests": str(snap.requests_limit),
            "x-ratelimit-limit-tokens": str(snap.tokens_limit),
            "x-ratelimit-remaining-requests": str(snap.requests_remaining),
            "x-ratelimit-remaining-tokens": str(snap.tokens_remaining),
            "x-ratelimit-reset-requests": go_duration(snap.requests_reset),
            "x-ratelimit-reset-tokens": go_duration(snap.tokens_reset),
        }

    def _answer(self, req: _Request, variant: str | None) -> _Plan:
        """The normal pipeline: auth, rate limit, validation, body."""
        key = self._key(req)
        if not key or (self.api_key is not None and key != self.api_key):
            return self._unauthorized(req, key)
        limited = self._limiter.take(key, uses_tokens=req.endpoint in _TOKEN_ENDPOINTS)
        if limited:
            left = self._limiter.snapshot(key)
            wait = left.requests_reset if limited == "requests" else left.tokens_reset
            return self._rate_limited(req, key, limited, wait)
        try:
            body, tokens = self._build(req, variant)
        except _ApiError as err:
            plan = _plan_json(err.status, err.body)
            plan.headers.update(self._rl_headers(key, req.azure))
            return plan
        self._limiter.add_tokens(key, tokens)
        if variant == "wrong_shape":
            body = _wrong_shape(req.endpoint, body)
        data = _dumps(body)
        if variant == "malformed":
            data = data[: max(1, len(data) // 2)]  # a truncated object never parses
        elif variant == "empty_body":
            data = b""
        plan = _Plan(200, data)
        plan.headers.update(self._rl_headers(key, req.azure))
        return plan

    def _unauthorized(self, req: _Request, key: str) -> _Plan:
        # No rate-limit headers: an unknown key belongs to no organisation.
        if req.azure:
            return _plan_json(401, {"error": {"code": "401", "message": _AZURE_401}})
        if not key:
            return _plan_json(401, _error(_MISSING_KEY_MESSAGE, "invalid_request_error"))
        return _plan_json(401, _error(_invalid_key_message(key), "invalid_request_error",
                                      None, "invalid_api_key"))

    def _rate_limited(self, req: _Request, key: str, kind: str, wait_s: float,
                      used: int | None = None, requested: int = 1) -> _Plan:
        snap = self._limiter.snapshot(key)
        model = _model_of(req)
        if kind == "requests":
            limit, unit = snap.requests_limit, "requests per min (RPM)"
        else:
            limit, unit = snap.tokens_limit, "tokens per min (TPM)"
        used = limit if used is None else used
        retry_after = max(1, math.ceil(wait_s))
        if req.azure:
            op = _AZURE_OPERATIONS.get(req.endpoint, "Operation")
            what = "call rate limit" if kind == "requests" else "token rate limit"
            plan = _plan_json(429, {"error": {"code": "429", "message": (
                f"Requests to the {op} Operation under Azure OpenAI API version "
                f"{req.query.get('api-version')} have exceeded {what} of your current OpenAI "
                f"S0 pricing tier. Please retry after {retry_after} seconds. Please go here: "
                "https://aka.ms/oai/quotaincrease if you would like to further increase the "
                "default rate limit.")}})
            plan.headers["retry-after-ms"] = str(int(wait_s * 1000))
        else:
            plan = _plan_json(429, _error(
                f"Rate limit reached for {model} in organization {_ORG} on {unit}: "
                f"Limit {limit}, Used {used}, Requested {requested}. Please try again in "
                f"{go_duration(wait_s)}. Visit https://platform.openai.com/account/rate-limits "
                "to learn more.", kind, None, "rate_limit_exceeded"))
        plan.headers.update(self._rl_headers(key, req.azure))
        plan.headers["retry-after"] = str(retry_after)
        return plan

    def _replace(self, name: str, req: _Request) -> _Plan:
        """The canned answer of a replace fault (facts §5.2)."""
        key = self._key(req) or "anonymous"
        edge = {"server": "cloudflare", "cf-ray": secrets.token_hex(8) + "-ORD"}
        if name == "html_200":  # a captive portal or proxy page, not the API at all
            return _Plan(200, _CAPTIVE_PORTAL, "text/html; charset=utf-8", edge=True)
        if name == "bad_gateway_html":
            return _Plan(502, _CF_502, _HTML, headers=edge, edge=True)
        if name == "gateway_timeout":
            return _Plan(504, _CF_504, _HTML, headers=edge, edge=True)
        if name == "bad_gateway_json":  # Cloudflare JSON variant: integer code
            return _Plan(502, _dumps({"error": {"code": 502, "message": "Bad gateway.",
                                                "param": None, "type": "cf_bad_gateway"}}),
                         headers=edge, edge=True)
        if name == "unauthorized":
            return self._unauthorized(req, self._key(req))
        if name == "rate_limited":
            plan = self._rate_limited(req, key, "requests", 20.0)
            if not req.azure:
                plan.headers["x-ratelimit-remaining-requests"] = "0"
                plan.headers["x-ratelimit-reset-requests"] = "20s"
            return plan
        if name == "rate_limited_tokens":
            tpm = self._limiter.tpm
            plan = self._rate_limited(req, key, "tokens", 0.644, used=max(0, tpm - 63),
                                      requested=385)
            if not req.azure:
                plan.headers["x-ratelimit-remaining-tokens"] = str(min(63, tpm))
                plan.headers["x-ratelimit-reset-tokens"] = "644ms"
            return plan
        self._limiter.take(key, uses_tokens=False)  # the API saw it: it counts
        model = _model_of(req)
        status, body = {
            "bad_request": (400, _bad_request_body(req.endpoint)),
            "forbidden": (403, _error("Country, region, or territory not supported",
                                      "request_forbidden", None,
                                      "unsupported_country_region_territory")),
            "not_found": (404, _error(_not_found_message(model), "invalid_request_error",
                                      None, "model_not_found") if req.endpoint in _MODEL_ENDPOINTS
                          else _error(f"Invalid URL ({req.method} {req.path})",
                                      "invalid_request_error")),
            "quota": (429, _error(_QUOTA_MESSAGE, "insufficient_quota", None,
                                  "insufficient_quota")),
            "quota_legacy": (429, _error(_QUOTA_MESSAGE, "insufficient_quota", None, None)),
            # The exact wording is not documented; code and type are (facts §5.2).
            "billing": (429, _error(
                "Your credit balance is exhausted. Add credits in your billing settings to "
                "continue using the API.", "insufficient_quota", None,
                "credit_balance_exhausted")),
            "server_error": (500, _error(
                "The server had an error while processing your request. Sorry about that!",
                "server_error")),
            "overloaded": (503, _error(
                "Our servers are currently overloaded. Please try again later.",
                "service_unavailable_error", None, "server_is_overloaded")),
        }[name]
        plan = _plan_json(status, body)
        plan.headers.update(self._rl_headers(key, req.azure))
        return plan

    # -- bodies ------------------------------------------------------------------

    def _build(self, req: _Request, variant: str | None) -> tuple[Json, int]:
        """Validate and answer one request: (body, tokens spent). Raises _ApiError."""
        if req.endpoint == "assistants" and req.headers.get("openai-beta") != "assistants=v2":
            raise _invalid("You must provide the 'OpenAI-Beta' header to access the Assistants "
                           "API. Please try again by setting the header "
                           "'OpenAI-Beta: assistants=v2'.", None, "invalid_beta")
        if req.endpoint in _LISTS:
            return _list_page(req), 0
        if req.endpoint == "models":
            return {"object": "list", "data": [
                {"id": mid, "object": "model", "created": m.created,
                 "owned_by": "system", "shutdown_date": m.shutdown_date}
                for mid, m in _MODELS.items()]}, 0
        body = _parse_json(req.raw) if req.raw.strip() else {}
        if not isinstance(body, dict):
            raise _invalid(_BAD_JSON_MESSAGE)
        if req.endpoint == "chat":
            return _chat(req, body, variant)
        if req.endpoint == "responses":
            return _responses(req, body, variant)
        if req.endpoint == "embeddings":
            return _embeddings(req, body)
        if req.endpoint == "moderations":
            return _moderations(body), 0
        return _images(req, body)


def _plan_json(status: int, body: Json) -> _Plan:
    return _Plan(status, _dumps(body))


def _parse_json(raw: bytes) -> Json:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _route(method: str, path: str, query: dict[str, str], headers: dict[str, str],
           raw: bytes) -> _Request | None:
    """Map a path to a probe key, OpenAI or Azure style; None for unknown routes."""
    path = path.rstrip("/") or "/"
    for endpoint, (m, p) in ENDPOINTS.items():
        if path == p and method == m:
            return _Request(method, path, query, headers, raw, endpoint, azure=False)
    parts = path.split("/")
    # /openai/deployments/{deployment}/<operation>
    if len(parts) >= 5 and parts[1] == "openai" and parts[2] == "deployments" and parts[3]:
        operation = _AZURE_DEPLOYMENT_ROUTES.get("/".join(parts[4:]))
        if operation and method == "POST":
            return _Request(method, path, query, headers, raw, operation, azure=True,
                            deployment=parts[3])
        return None
    if path.startswith("/openai/"):
        for endpoint, (m, p) in ENDPOINTS.items():
            if path == "/openai" + p[len("/v1"):] and method == m and \
                    endpoint in ("models", "files", "fine_tunes", "batches", "responses"):
                return _Request(method, path, query, headers, raw, endpoint, azure=True)
    return None


# Endpoints whose request names a model: an injected 404 is model_not_found there and an
# unknown-route 404 ("Invalid URL", code null) elsewhere, as the real API answers.
_MODEL_ENDPOINTS = frozenset({"chat", "responses", "embeddings", "moderations", "images"})


def _bad_request_body(endpoint: str) -> Json:
    """An injected 400 that makes sense for the endpoint (the demo shows these messages)."""
    if endpoint in ("chat", "responses"):
        return _error("Unsupported parameter: 'max_tokens' is not supported with this model. "
                      "Use 'max_completion_tokens' instead.", "invalid_request_error",
                      "max_tokens", "unsupported_parameter")
    if endpoint in _MODEL_ENDPOINTS:
        return _error("Unrecognized request argument supplied: dimensions_hint",
                      "invalid_request_error")
    return _error("Invalid value for 'limit': integer above maximum value. Expected a value "
                  "<= 100, but got 1000 instead.", "invalid_request_error", "limit",
                  "integer_above_max_value")


def _model_of(req: _Request) -> str:
    """The model a request is about, for error messages."""
    body = _parse_json(req.raw)
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        return body["model"]
    if req.deployment:
        return req.deployment
    return {"embeddings": "text-embedding-3-small", "moderations": "omni-moderation-latest",
            "images": "dall-e-2"}.get(req.endpoint, "gpt-4o-mini")


def _resolve_model(req: _Request, body: Json, kind: str, default: str | None) -> tuple[str, _Model]:
    """Check the model field like the API: missing -> 400, unknown -> 404."""
    if req.deployment:  # Azure: the deployment decides, the body model is ignored
        name = req.deployment if req.deployment in _MODELS else {
            "chat": "gpt-4o-mini", "embeddings": "text-embedding-3-small",
            "image": "gpt-image-1-mini"}[kind]
        return name, _MODELS[name]
    name = body.get("model", default)
    if name is None:
        raise _invalid("you must provide a model parameter")
    if not isinstance(name, str):
        raise _invalid(f"Invalid type for 'model': expected a string, but got "
                       f"{type(name).__name__} instead.", "model", "invalid_type")
    model = _MODELS.get(name)
    if model is None:
        raise _ApiError(404, _error(_not_found_message(name), "invalid_request_error", None,
                                    "model_not_found"))
    if model.kind != kind:
        if kind == "chat":
            raise _ApiError(404, _error(
                "This is not a chat model and thus not supported in the v1/chat/completions "
                "endpoint. Did you mean to use v1/completions?", "invalid_request_error",
                "model", None))
        raise _invalid(f"The model `{name}` does not support this endpoint.", "model")
    return name, model


def _cap(body: Json, name: str, minimum: int = 1) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"Invalid type for '{name}': expected an integer, but got "
                       f"{type(value).__name__} instead.", name, "invalid_type")
    if value < minimum:
        raise _invalid(f"Invalid '{name}': integer below minimum value. Expected a value >= "
                       f"{minimum}, but got {value} instead.", name, "integer_below_min_value")
    return value


_ANSWER_WORDS = ["Pong!", "How", "can", "I", "help", "you", "today?"]
_REASONING_TOKENS = 64  # hidden tokens a reasoning model spends before answering


def _generate(model: _Model, cap: int | None) -> tuple[str, int, int, bool]:
    """(visible text, output tokens, reasoning tokens, cut short by the cap)."""
    reasoning = _REASONING_TOKENS if model.reasoning else 0
    visible = len(_ANSWER_WORDS) + 2  # words plus punctuation, roughly
    if cap is None or reasoning + visible <= cap:
        return " ".join(_ANSWER_WORDS), reasoning + visible, reasoning, False
    # A small cap: reasoning eats it first, so a reasoning model may show nothing at all.
    reasoning = min(reasoning, cap)
    shown = cap - reasoning
    words = _ANSWER_WORDS[: max(0, shown - 1)] if shown else []
    return " ".join(words), cap, reasoning, True


def _chat(req: _Request, body: Json, variant: str | None) -> tuple[Json, int]:
    _, model = _resolve_model(req, body, "chat", None)
    messages = body.get("messages")
    if messages is None:
        raise _invalid("Missing required parameter: 'messages'.", "messages",
                       "missing_required_parameter")
    if not isinstance(messages, list):
        raise _invalid("Invalid type for 'messages': expected an array, but got "
                       f"{type(messages).__name__} instead.", "messages", "invalid_type")
    if not messages:
        raise _invalid("Invalid 'messages': empty array. Expected an array with minimum "
                       "length 1, but got an empty array instead.", "messages", "empty_array")
    if model.reasoning and "max_tokens" in body:
        raise _invalid("Unsupported parameter: 'max_tokens' is not supported with this model. "
                       "Use 'max_completion_tokens' instead.", "max_tokens",
                       "unsupported_parameter")
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


def _responses(req: _Request, body: Json, variant: str | None) -> tuple[Json, int]:
    _, model = _resolve_model(req, body, "chat", None)
    cap = _cap(body, "max_output_tokens", minimum=16)
    source = body.get("input", "")
    if isinstance(source, list):
        source = " ".join(_text_of(i.get("content")) for i in source if isinstance(i, dict))
    prompt = 4 + _tokens(source if isinstance(source, str) else "")
    text, output, reasoning, cut = _generate(model, cap)
    now = int(time.time())
    rid = "resp_" + secrets.token_hex(24)
    status, error, incomplete, usage_ok = "completed", None, None, True
    if variant == "response_failed":
        status, usage_ok = "failed", False
        error = {"code": "server_error", "message": (
            "An error occurred while processing your request. You can retry your request, or "
            "contact us through our help center at help.openai.com if the error persists.")}
    elif cut or variant == "response_incomplete":
        status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        if not cut:  # forced: pretend the cap was hit mid-sentence
            output, text = cap or 16, " ".join(_ANSWER_WORDS[:3])
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
        "error": error, "incomplete_details": incomplete, "instructions": None,
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


def _embeddings(req: _Request, body: Json) -> tuple[Json, int]:
    _, model = _resolve_model(req, body, "embeddings", None)
    source = body.get("input")
    if source is None:
        raise _invalid("Missing required parameter: 'input'.", "input",
                       "missing_required_parameter")
    inputs = source if isinstance(source, list) else [source]
    if not inputs or not all(isinstance(i, str) for i in inputs):
        raise _invalid("'$.input' is invalid. Please check the API reference: "
                       "https://platform.openai.com/docs/api-reference.", "input")
    dims = body.get("dimensions", model.dimensions)
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= model.dimensions:
        raise _invalid(f"Invalid 'dimensions': expected an integer between 1 and "
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


def _moderations(body: Json) -> Json:
    source = body.get("input")
    if source is None:
        raise _invalid("Missing required parameter: 'input'.", "input",
                       "missing_required_parameter")
    name = body.get("model", "omni-moderation-latest")
    model = _MODELS.get(name) if isinstance(name, str) else None
    if model is None:
        raise _ApiError(404, _error(_not_found_message(str(name)), "invalid_request_error",
                                    None, "model_not_found"))
    if model.kind != "moderation":
        raise _invalid(f"The model `{name}` does not support this endpoint.", "model")
    inputs = source if isinstance(source, list) else [source]
    results = []
    for item in inputs:
        seed = hashlib.sha256(json.dumps(item, sort_keys=True).encode()).digest()
        rng = random.Random(seed)
        scores = {c: round(rng.uniform(1e-7, 2e-3), 10) for c in _MODERATION_CATEGORIES}
        results.append({
            "flagged": False,
            "categories": {c: False for c in _MODERATION_CATEGORIES},
            "category_scores": scores,
            "category_applied_input_types": {c: ["text"] for c in _MODERATION_CATEGORIES},
        })
    return {"id": "modr-" + secrets.token_hex(16), "model": model.snapshot, "results": results}


def _images(req: _Request, body: Json) -> tuple[Json, int]:
    prompt = body.get("prompt")
    if not prompt:
        raise _invalid("Missing required parameter: 'prompt'.", "prompt",
                       "missing_required_parameter")
    name, _ = _resolve_model(req, body, "image", "dall-e-2")
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10:
        raise _invalid("Invalid 'n': expected an integer between 1 and 10.", "n",
                       "invalid_value")
    size = body.get("size", "1024x1024")
    created = int(time.time())
    if name == "dall-e-2":  # URLs and no usage object
        return {"created": created, "data": [
            {"url": f"https://images.fake.invalid/{secrets.token_hex(8)}.png",
             "revised_prompt": None} for _ in range(n)]}, 0
    quality = body.get("quality", "medium")
    quality = "medium" if quality == "auto" else quality
    per_image = _IMAGE_OUTPUT_TOKENS.get((quality, size), 1056)
    text_in = _tokens(str(prompt or ""))
    output = per_image * n
    return {
        "created": created, "background": "opaque",
        "data": [{"b64_json": _PNG_1PX} for _ in range(n)],
        "output_format": "png", "quality": quality, "size": size,
        "usage": {"input_tokens": text_in,
                  "input_tokens_details": {"text_tokens": text_in, "image_tokens": 0},
                  "output_tokens": output,
                  "output_tokens_details": {"image_tokens": output, "text_tokens": 0},
                  "total_tokens": text_in + output},
    }, text_in + output


def _list_page(req: _Request) -> Json:
    """One page of a list endpoint: limit/after cursors, has_more, first/last ids."""
    items, max_limit, default, ids = _LISTS[req.endpoint]
    raw_limit = req.query.get("limit")
    limit = default
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise _invalid(f"Invalid 'limit': expected an integer, but got '{raw_limit}' "
                           "instead.", "limit", "invalid_type") from None
        if limit < 1:
            raise _invalid(f"Invalid 'limit': integer below minimum value. Expected a value "
                           f">= 1, but got {limit} instead.", "limit", "integer_below_min_value")
        if limit > max_limit:
            raise _invalid(f"Invalid 'limit': integer above maximum value. Expected a value "
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
    return answer


def _wrong_shape(endpoint: str, body: Json) -> Json:
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


# ------------------------------------------------------------------ HTTP plumbing


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], fake: FakeUpstream) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.fake = fake
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.discard(conn)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):  # already gone
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-answer is routine here (timeouts are the point), and
        # stop() closing sockets under a handler ends in "I/O operation on closed file".
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)) or (
                isinstance(exc, ValueError) and "closed file" in str(exc)):
            log.debug("client %s went away: %r", client_address, exc)
            return
        super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real client sees
    server: _Server
    timeout = 300  # idle keep-alive connections end eventually in a long demo

    def version_string(self) -> str:
        return "cloudflare"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle plus the
        # client's delayed ACK adds ~40 ms to every answer on a kept-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)

    def finish(self) -> None:
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
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        raw = self._read_body()
        if split.path.startswith("/__fake__/"):
            self._control(split.path, raw)
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            plan, record = fake._plan(self.command, split.path, query, headers, raw)
        except Exception:  # a bug in the fake must not look like a network fault
            log.exception("fake upstream failed on %s %s", self.command, split.path)
            plan, record = _plan_json(500, _error("fake upstream bug", "server_error")), None
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
                self._reply(404, _error(f"no control route {method} {path}", "not_found"))
        except ValueError as err:  # also json.JSONDecodeError
            self._reply(400, _error(str(err), "invalid_request_error"))

    def _reply(self, status: int, body: Json) -> None:
        data = _dumps(body)
        self.send_response(status)
        self.send_header("Content-Type", _JSON)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    # -- answer side ---------------------------------------------------------------

    def _wait(self, seconds: float | None) -> bool:
        """Sleep, cut short by stop(); True if the server is stopping."""
        return self.server.fake._stopping.wait(seconds)

    def _execute(self, plan: _Plan, record: dict[str, Any] | None) -> None:
        if plan.sleep_s > 0 and self._wait(plan.sleep_s):
            self.close_connection = True
            return
        if plan.transport == "hang":
            # Accept, read, say nothing; with a stall, hang up without an answer after it.
            self._wait(plan.stall_s)
            self.close_connection = True
            return
        if plan.transport == "reset":
            self._rst()
            return
        if record is not None:
            record["status"] = plan.status
        self.send_response(plan.status)
        headers = {"content-type": plan.content_type, "content-length": str(len(plan.body)),
                   "x-request-id": _request_id()}
        if not plan.edge:
            headers.update({"openai-version": "2020-10-01", "openai-organization": "user-fake",
                            "access-control-expose-headers": "X-Request-ID"})
        headers.update(plan.headers)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if plan.transport == "normal":
            self.wfile.write(plan.body)
        elif plan.transport == "trickle_body":
            # Every read finishes quickly; only a total deadline notices.
            for start in range(0, len(plan.body), 16):
                self.wfile.write(plan.body[start:start + 16])
                if start + 16 < len(plan.body) and self._wait(plan.trickle_s):
                    self.close_connection = True
                    return
        elif plan.transport == "slow_body":
            # Headers promptly, a few body bytes, then nothing until the stall ends
            # (connection closed with the body incomplete) or stop().
            self.wfile.write(plan.body[:8])
            self._wait(plan.stall_s)
            self.close_connection = True
        elif plan.transport == "reset_mid_body":
            self.wfile.write(plan.body[: len(plan.body) // 2])
            time.sleep(0.02)  # let the client read the headers before the RST lands
            self._rst()

    def _rst(self) -> None:
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


# --------------------------------------------------------------------------- CLI


def _fault_arg(text: str) -> tuple[str, str]:
    endpoint, sep, fault = text.partition("=")
    if not sep or (endpoint != "*" and endpoint not in ENDPOINTS) or \
            (fault != "none" and fault not in FAULTS):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not ENDPOINT=FAULT (endpoints: {', '.join(ENDPOINTS)}, *; "
            f"faults: {', '.join(FAULTS)})")
    return endpoint, fault


def main(argv: list[str] | None = None) -> int:
    """Serve a fake upstream until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m exporter.fake_upstream",
        description="Fake OpenAI-compatible API for tests and the key-less demo.")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port, 0 = any free (default 0)")
    parser.add_argument("--profile", choices=("healthy", "chaos"), default="healthy",
                        help="healthy, or chaos: random latency and failures (default healthy)")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="latency added to every answer (default 0)")
    parser.add_argument("--seed", type=int, default=None, help="chaos random seed")
    parser.add_argument("--api-key", default=None,
                        help="the only accepted key (default: any non-empty key)")
    parser.add_argument("--rpm-limit", type=int, default=500, help="requests per window")
    parser.add_argument("--tpm-limit", type=int, default=200000, help="tokens per window")
    parser.add_argument("--window-seconds", type=float, default=60.0,
                        help="rate-limit window (default 60)")
    parser.add_argument("--fault", type=_fault_arg, action="append", default=[],
                        metavar="ENDPOINT=FAULT", help="inject a fault; repeatable")
    args = parser.parse_args(argv)
    try:
        fake = FakeUpstream(args.host, args.port, api_key=args.api_key, profile=args.profile,
                            latency_ms=args.latency_ms, seed=args.seed,
                            rpm_limit=args.rpm_limit, tpm_limit=args.tpm_limit,
                            window_seconds=args.window_seconds)
    except (ValueError, OSError) as err:
        parser.error(str(err))
    for endpoint, fault in args.fault:
        fake.set_fault(endpoint, fault)

    done = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    fake.start()
    print(f"fake upstream listening on {fake.base_url}", file=sys.stderr, flush=True)
    while not done.wait(0.5):
        pass
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

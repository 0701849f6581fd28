"""The routing table: which requests each kind of answer takes, and how it checks the key.

A new kind of answer joins by adding rows here, each naming its own functions: ``build``
makes the body, ``render`` puts it on the wire (JSON unless it says otherwise), ``auth``
checks the credential, ``when`` picks it by the request body (a row for ``"stream": true``
sits before the plain row of the same path). The first matching row wins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import admin, answers, streams
from .answers import Builder
from .errors import unauthorized
from .exchange import Plan, Request
from .tables import ENDPOINTS, STREAMED, Json

Auth = Callable[[Request, Any], tuple[str, Plan | None]]
"""(request, the FakeUpstream) -> (key to count the request under, refusal or None)."""
Render = Callable[[Request, Json, str | None], Plan]
"""(request, built body, body fault or None) -> the plan of a successful answer."""


def api_key_auth(req: Request, fake: Any) -> tuple[str, Plan | None]:
    """The API key: any non-empty key, or only ``fake.api_key`` when that is set."""
    key = req.credential
    if not key or (fake.api_key is not None and key != fake.api_key):
        return key, unauthorized(req, key)
    return key, None


@dataclass(frozen=True)
class Route:
    """One row of the routing table."""

    method: str
    path: str  # literal segments and {name} placeholders, one segment each
    endpoint: str  # the probe key: fault target, token accounting, error wording
    build: Builder
    azure: bool = False  # api-key header, api-version required, Azure error shapes
    auth: Auth = api_key_auth
    render: Render = answers.render_json
    when: Callable[[Json], bool] | None = None  # also requires this of the parsed body

    def match(self, method: str, path: str, body: Json) -> dict[str, str] | None:
        """The path parameters if this row takes the request, else None."""
        if method != self.method or (self.when is not None and not self.when(body)):
            return None
        want, got = self.path.split("/"), path.split("/")
        if len(want) != len(got):
            return None
        params: dict[str, str] = {}
        for pattern, segment in zip(want, got, strict=True):
            if pattern.startswith("{") and pattern.endswith("}"):
                if not segment:
                    return None
                params[pattern[1:-1]] = segment
            elif pattern != segment:
                return None
        return params


_BUILDERS: dict[str, Builder] = {
    "chat": answers.chat,
    "responses": answers.responses,
    "embeddings": answers.embeddings,
    "moderations": answers.moderations,
    "models": answers.models,
    "files": answers.list_page,
    "fine_tunes": answers.list_page,
    "batches": answers.list_page,
    "assistants": answers.assistants,
    "images": answers.images,
}

def _streamed(body: Json) -> bool:
    """The request asks for a streamed answer ("stream": true)."""
    return isinstance(body, dict) and body.get("stream") is True


def _stream_row(endpoint: str, path: str, azure: bool = False) -> Route:
    """The row of a streamed twin: its plain endpoint's builder, rendered as SSE."""
    plain = STREAMED[endpoint]
    render = streams.render_chat if plain == "chat" else streams.render_responses
    return Route("POST", path, endpoint, _BUILDERS[plain], azure=azure, render=render,
                 when=_streamed)

_ADMIN_BUILDERS: dict[str, Builder] = {
    **{name: admin.usage for name in admin.ADMIN_ENDPOINTS if name.startswith("usage_")},
    "costs": admin.costs, "projects": admin.projects, "project_rate_limits": admin.rate_limits,
}

ROUTES: tuple[Route, ...] = (
    # Streamed answers first: the same paths as chat and responses, with "stream": true.
    _stream_row("chat_stream", "/v1/chat/completions"),
    _stream_row("responses_stream", "/v1/responses"),
    # OpenAI: every probe endpoint at its /v1 path, Bearer auth.
    *(Route(method, path, endpoint, _BUILDERS[endpoint])
      for endpoint, (method, path) in ENDPOINTS.items()),
    # Azure: deployment-scoped operations sit under /openai/deployments/{d}/..., the rest
    # directly under /openai/... (openai-python lib/azure.py _deployments_endpoints).
    _stream_row("chat_stream", "/openai/deployments/{deployment}/chat/completions", True),
    _stream_row("responses_stream", "/openai/responses", True),
    Route("POST", "/openai/deployments/{deployment}/chat/completions", "chat",
          answers.chat, azure=True),
    Route("POST", "/openai/deployments/{deployment}/embeddings", "embeddings",
          answers.embeddings, azure=True),
    Route("POST", "/openai/deployments/{deployment}/images/generations", "images",
          answers.images, azure=True),
    Route("GET", "/openai/models", "models", answers.models, azure=True),
    Route("GET", "/openai/files", "files", answers.list_page, azure=True),
    Route("GET", "/openai/fine_tuning/jobs", "fine_tunes", answers.list_page, azure=True),
    Route("GET", "/openai/batches", "batches", answers.list_page, azure=True),
    Route("POST", "/openai/responses", "responses", answers.responses, azure=True),
    # The organisation admin API (admin key only): usage, costs, projects, rate limits.
    *(Route("GET", path, endpoint, _ADMIN_BUILDERS[endpoint], auth=admin.admin_key_auth)
      for endpoint, path in admin.ADMIN_ENDPOINTS.items()),
)

ROUTED_ENDPOINTS: tuple[str, ...] = tuple(dict.fromkeys(r.endpoint for r in ROUTES))
"""Every endpoint some route answers for, in table order: what faults can target."""


def route(method: str, path: str, query: dict[str, str], headers: dict[str, str],
          raw: bytes, body: Json, multi: dict[str, list[str]] | None = None,
          org: Any = None) -> Request | None:
    """The request as its route sees it, or None when no row takes it."""
    path = path.rstrip("/") or "/"
    for row in ROUTES:
        params = row.match(method, path, body)
        if params is not None:
            return Request(method, path, query, headers, raw, body, row,
                           deployment=params.get("deployment"), path_params=params,
                           multi=multi or {}, org=org)
    return None

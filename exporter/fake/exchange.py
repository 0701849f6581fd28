"""The two ends of one exchange: the Request the fake received and the Plan of its answer."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .faults import DEFAULT_TRICKLE_MS
from .tables import JSON, Json

if TYPE_CHECKING:
    from .routes import Route


@dataclass(frozen=True)
class Request:
    """One API request after routing: everything an answer is built from."""

    method: str
    path: str  # without a trailing slash
    query: dict[str, str]  # name -> last value
    headers: dict[str, str]  # lower-case names
    raw: bytes
    json: Json  # the parsed body; None when empty or not JSON
    route: Route
    deployment: str | None = None  # Azure: the {deployment} segment of the path
    path_params: dict[str, str] = field(default_factory=dict)  # every {name} segment
    multi: dict[str, list[str]] = field(default_factory=dict)  # name -> every value (arrays)
    org: Any = None  # the fake's org.Organization: what the admin routes serve

    @property
    def endpoint(self) -> str:
        """The probe key the route answers for."""
        return self.route.endpoint

    @property
    def azure(self) -> bool:
        """Whether the route is Azure style (api-key header, Azure error shapes)."""
        return self.route.azure

    @property
    def credential(self) -> str:
        """The key the request presents: Azure's api-key header, else a Bearer token, or ""."""
        if self.azure and self.headers.get("api-key"):
            return self.headers["api-key"]
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""


@dataclass
class Part:
    """One piece of a streamed answer, sent as one HTTP chunk after `delay_s`."""

    kind: str  # head | content | tail | terminal | error (streams.py says which is which)
    data: bytes
    delay_s: float = 0.0


@dataclass
class Stream:
    """A streamed (SSE) answer: its parts, what an error mid-stream sends, how it ends."""

    parts: list[Part]
    error: Callable[[int], list[Part]]  # (parts sent before it) -> the error's parts
    end: str = "done"  # done (the chunked body ends) | cut (closed) | stall | reset


@dataclass
class Plan:
    """What the handler sends, and how: decided by FakeUpstream, executed by wire.Handler."""

    status: int = 200
    body: bytes = b""
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    sleep_s: float = 0.0  # before anything goes on the wire
    transport: str = "normal"  # a key of wire.TRANSPORTS or wire.SILENT_TRANSPORTS
    stall_s: float | None = None  # hang / slow_body: None = until stop()
    trickle_s: float = DEFAULT_TRICKLE_MS / 1000
    edge: bool = False  # from a proxy/CDN, not the API: no openai-* headers
    stream: Stream | None = None  # a streamed answer: chunked parts instead of body


def dumps(obj: Json) -> bytes:
    """Compact JSON, as the API sends it."""
    return json.dumps(obj, separators=(",", ":")).encode()


def plan_json(status: int, body: Json) -> Plan:
    """A JSON answer with this status."""
    return Plan(status, dumps(body))


def parse_json(raw: bytes) -> Json:
    """The parsed body, or None when it is empty or not JSON."""
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None

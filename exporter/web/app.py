"""HTTP routing: one path -> (handler, needs-auth) table behind one WSGI callable.

Every answer leaves through ``Router._send``, which adds the security headers and
Content-Length and drops the body of a HEAD (HEAD is answered wherever GET is). Errors
are JSON ``{"error": ...}`` from one helper: an unknown path is a 404, a method other than
GET/HEAD a 405 with ``Allow``, a bad parameter a 400, and an unexpected exception a 500
whose details go to the log, never to the client.

With ``WEB_AUTH_TOKEN`` set, routes that need auth (and unknown paths) want
``Authorization: Bearer <token>``, or HTTP Basic with the token as password (any user
name) so that a browser can open the page. /metrics and /healthz stay open (see
docs/history.md).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import parse_qsl

from prometheus_client import CollectorRegistry, make_wsgi_app

log = logging.getLogger("exporter.web")

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]
StartResponse = Callable[..., Any]

SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]
ALLOWED_METHODS = ("GET", "HEAD")
MAX_QUERY_FIELDS = 32


class Response(NamedTuple):
    """A complete answer: status line, headers (without Content-Length), body."""

    status: str
    headers: list[tuple[str, str]]
    body: bytes


class HTTPError(Exception):
    """An answer with a JSON error body; raised by handlers."""

    status = "500 Internal Server Error"

    def __init__(self, message: str, status: str | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class BadRequest(HTTPError):
    """400 with this message."""

    status = "400 Bad Request"


@dataclass(frozen=True)
class Request:
    """What a handler gets: the method (GET or HEAD), the path, the query parameters
    (checked against the route's names) and the WSGI environ for anything else."""

    method: str
    path: str
    params: dict[str, str]
    environ: Mapping[str, Any] = field(repr=False)


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    """A handler, whether it sits behind WEB_AUTH_TOKEN, and the query parameters it
    takes: a set of names (anything else is a 400), or None to leave the query string
    alone (the handler reads the environ if it cares)."""

    handler: Handler
    needs_auth: bool = True
    params: frozenset[str] | None = frozenset()


def json_response(doc: Any, status: str = "200 OK",
                  headers: list[tuple[str, str]] | None = None) -> Response:
    """A JSON answer (compact, non-JSON values as strings)."""
    body = json.dumps(doc, default=str, separators=(",", ":")).encode()
    return Response(status, [("Content-Type", "application/json")] + (headers or []), body)


def json_error(status: str, message: str,
               headers: list[tuple[str, str]] | None = None) -> Response:
    """The one shape of every error answer: {"error": "<one line>"}."""
    return json_response({"error": message}, status, headers)


def parse_params(query: str, allowed: frozenset[str]) -> dict[str, str]:
    """Query parameters by name; BadRequest for an unknown or repeated one."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False,
                          max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        raise BadRequest("too many query parameters") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            raise BadRequest(f"unknown parameter {name!r}; allowed: "
                             + ", ".join(sorted(allowed)))
        if name in params:
            raise BadRequest(f"parameter {name!r} given twice")
        params[name] = value
    return params


class Router:
    """The WSGI app: dispatches on the path through one table of routes."""

    def __init__(self, routes: Mapping[str, Route], auth_token: str = "") -> None:
        self.routes = dict(routes)
        self._token = auth_token.encode()

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            resp = self._dispatch(environ, method)
        except Exception:  # never a traceback to the client; the log keeps it
            log.exception("error serving %s", environ.get("PATH_INFO"))
            resp = json_error("500 Internal Server Error", "internal error")
        return self._send(start_response, method, resp)

    def _dispatch(self, environ: dict, method: str) -> Response:
        path = environ.get("PATH_INFO") or "/"
        route = self.routes.get(path)
        # Unknown paths are behind the token too: they must not reveal which routes exist.
        if ((route is None or route.needs_auth) and self._token
                and not self._authorized(environ.get("HTTP_AUTHORIZATION", ""))):
            return self._unauthorized()
        if route is None:
            return json_error("404 Not Found", f"no route {path[:200]}")
        if method not in ALLOWED_METHODS:
            return json_error("405 Method Not Allowed", "method not allowed; use GET",
                              [("Allow", ", ".join(ALLOWED_METHODS))])
        try:
            params = ({} if route.params is None
                      else parse_params(environ.get("QUERY_STRING", ""), route.params))
            return route.handler(Request(method, path, params, environ))
        except HTTPError as exc:
            return json_error(exc.status, str(exc))

    @staticmethod
    def _send(start_response: StartResponse, method: str, resp: Response) -> list[bytes]:
        start_response(resp.status, resp.headers + SECURITY_HEADERS
                       + [("Content-Length", str(len(resp.body)))])
        return [b""] if method == "HEAD" else [resp.body]

    # -- auth ---------------------------------------------------------------------------
    def _authorized(self, header: str) -> bool:
        scheme, _, cred = header.strip().partition(" ")
        cred = cred.strip()
        if scheme.lower() == "bearer":
            given = cred.encode()
        elif scheme.lower() == "basic":
            try:
                given = base64.b64decode(cred, validate=True).partition(b":")[2]
            except (binascii.Error, ValueError):
                return False
        else:
            return False
        return hmac.compare_digest(given, self._token)  # constant time

    @staticmethod
    def _unauthorized() -> Response:
        # Basic lets a browser prompt; API clients use Bearer.
        return json_error("401 Unauthorized", "missing or wrong credentials (WEB_AUTH_TOKEN)", [
            ("WWW-Authenticate", 'Bearer realm="openai-exporter"'),
            ("WWW-Authenticate", 'Basic realm="openai-exporter", charset="UTF-8"')])


def metrics_route(registry: CollectorRegistry) -> Route:
    """/metrics through prometheus_client's own app, so content negotiation (OpenMetrics
    via Accept, gzip via Accept-Encoding, name[] filters) is the library's."""
    library_app = make_wsgi_app(registry)

    def handler(req: Request) -> Response:
        seen: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> None:
            seen[:] = [status, list(headers)]

        # The library answers HEAD with 405; ask it for GET and let the router drop the
        # body, so HEAD gets the GET's status and headers.
        body = b"".join(library_app(dict(req.environ, REQUEST_METHOD="GET"), start_response))
        return Response(seen[0], seen[1], body)

    return Route(handler, needs_auth=False, params=None)


def health_route(problem: Callable[[], str | None] | None = None) -> Route:
    """/healthz: 200 "ok", or 503 with the one-line reason `problem()` gives (the probe
    loop's liveness; exporter/liveness.py). Plain text, for curl and probes alike."""
    def handler(req: Request) -> Response:
        reason = problem() if problem is not None else None
        if reason is None:
            return Response("200 OK", [("Content-Type", "text/plain; charset=utf-8")], b"ok\n")
        return Response("503 Service Unavailable",
                        [("Content-Type", "text/plain; charset=utf-8")],
                        (" ".join(reason.splitlines()) + "\n").encode())

    return Route(handler, needs_auth=False, params=None)


def make_app(registry: CollectorRegistry, routes: Mapping[str, Route] | None = None,
             auth_token: str = "", health: Callable[[], str | None] | None = None) -> Router:
    """The exporter's app: /metrics, /healthz and /-/healthy (503 while `health()` names a
    problem), plus `routes` (the history's)."""
    healthz = health_route(health)
    table = {"/metrics": metrics_route(registry), "/healthz": healthz, "/-/healthy": healthz}
    table.update(routes or {})
    return Router(table, auth_token)

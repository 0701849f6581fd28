"""HTTP: a small WSGI dispatcher around prometheus_client's make_wsgi_app.

prometheus_client serves metrics on *every* GET path, so /metrics gets its own route
and everything else (/status, /traces, the page at /) goes to the history app.
/metrics never waits on upstream: it renders what the probes already recorded.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


def json_response(start_response: Callable, status: str, doc: Any) -> list[bytes]:
    body = json.dumps(doc).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


def _landing(environ: dict, start_response: Callable) -> list[bytes]:
    body = (b"<!doctype html><html><head><title>openai-exporter</title></head><body>"
            b"<h1>openai-exporter</h1><p><a href=\"metrics\">Metrics</a></p></body></html>")
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]


def make_app(registry: CollectorRegistry, fallback: WSGIApp | None = None) -> WSGIApp:
    """/metrics and /healthz here; any other path to `fallback` (or a landing page)."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
                return json_response(start_response, "405 Method Not Allowed",
                                     {"error": "method not allowed"})
            return metrics_app(environ, start_response)
        if path in ("/healthz", "/-/healthy"):
            body = b"ok\n"
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        if fallback is not None:
            return fallback(environ, start_response)
        if path == "/":
            return _landing(environ, start_response)
        return json_response(start_response, "404 Not Found", {"error": f"no route {path}"})

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass  # one line per scrape would drown the probe lines


def serve(app: WSGIApp, host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
    """Start serving in a daemon thread; returns the server (for .server_port/.shutdown)."""
    host = host.strip("[]")
    server_class = _Server
    try:
        if ipaddress.ip_address(host).version == 6:
            server_class = _Server6
    except ValueError:
        pass  # a hostname: AF_INET
    httpd = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, name="http", daemon=True)
    thread.start()
    return httpd, thread

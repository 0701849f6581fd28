"""HTTP: one route table (app.py) on a bounded server (server.py); the history's routes
and their JSON (history_routes.py, history_json.py)."""

from __future__ import annotations

from .app import (
    BadRequest,
    HTTPError,
    Request,
    Response,
    Route,
    Router,
    json_error,
    json_response,
    make_app,
)
from .history_routes import history_routes
from .server import BoundedWSGIServer, serve

__all__ = ["BadRequest", "BoundedWSGIServer", "HTTPError", "Request", "Response", "Route",
           "Router", "history_routes", "json_error", "json_response", "make_app", "serve"]

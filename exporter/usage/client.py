"""The admin client: GET requests to ``/organization/*`` with the admin key, and the two
ways those answers page (usage and costs: ``has_more``/``next_page``; lists:
``has_more``/``last_id``/``after``), each loop bounded.

The admin key goes only here, and only to paths under ``/organization/``: the one check
that keeps it away from every other URL. Failures become an ``AdminError`` carrying the
probes' error_type (exporter/errors.py) and a redacted one-line message.
"""

from __future__ import annotations

import json
import time
from typing import Any

import requests

from .. import __version__
from ..errors import http_error, transport_error
from ..redact import redact

ADMIN_PREFIX = "/organization/"
MAX_PAGES = 50  # per read: 50 pages of up to 1,440 one-minute buckets is 50 days
MAX_BODY_BYTES = 32 * 1024 * 1024  # one page; a bigger body is a broken upstream
MAX_MESSAGE_CHARS = 300

Json = Any
Params = list[tuple[str, str]]


class AdminError(Exception):
    """A failed admin call: error_type (the probes' vocabulary) and a redacted message."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class Truncated(AdminError):
    """The page loop hit its bound: what was read so far is usable but not complete."""

    def __init__(self, message: str, pages: list[Json]) -> None:
        super().__init__("invalid_response", message)
        self.pages = pages


class AdminClient:
    """GET ``base_url + /organization/...`` with ``Authorization: Bearer <admin key>``."""

    def __init__(self, base_url: str, admin_key: str, timeout_seconds: float,
                 secrets: tuple[str, ...] = ()) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = admin_key
        self.timeout = timeout_seconds
        # Every secret the process knows is masked in messages, not only the admin key.
        self._secrets = tuple(s for s in (admin_key, *secrets) if s)
        self._session = requests.Session()
        self._session.trust_env = True  # HTTPS_PROXY / NO_PROXY, like the probes

    def close(self) -> None:
        """Release the connection pool."""
        self._session.close()

    def get(self, path: str, params: Params) -> Json:
        """One GET; the parsed JSON object, or AdminError."""
        if not path.startswith(ADMIN_PREFIX):
            raise ValueError(f"the admin key is only sent to {ADMIN_PREFIX}*, not {path!r}")
        deadline = time.monotonic() + 2 * self.timeout
        try:
            resp = self._session.get(
                self.base_url + path, params=params, timeout=(self.timeout, self.timeout),
                headers={"Authorization": f"Bearer {self._key}", "Accept": "application/json",
                         "User-Agent": f"openai-exporter/{__version__}"},
                # A redirect is never followed: the key must not travel to another origin.
                allow_redirects=False, stream=True)
            try:
                body = self._read(resp, deadline)
            finally:
                resp.close()
        except requests.RequestException as exc:
            raise self._error(*transport_error(exc, self.timeout)) from None
        if not 200 <= resp.status_code < 300:
            raise self._error(*http_error(resp.status_code, body))
        try:
            doc = json.loads(body)
        except ValueError:
            raise self._error("invalid_response", f"HTTP {resp.status_code}: not JSON "
                              f"({resp.headers.get('content-type', 'no content-type')})") from None
        if not isinstance(doc, dict):
            raise self._error("invalid_response", "the answer is not a JSON object")
        return doc

    def pages(self, path: str, params: Params) -> list[Json]:
        """Every page of a usage or costs read (``UsageResponse``), following next_page.
        At the page bound, Truncated carries the pages read so far."""
        cursor: str | None = None
        seen: set[str] = set()
        pages: list[Json] = []
        for _ in range(MAX_PAGES):
            page = self.get(path, params + ([("page", cursor)] if cursor else []))
            _require(page, ("object", "data", "has_more"), "page")
            if not isinstance(page["data"], list):
                raise self._error("invalid_response", "data is not a list")
            pages.append(page)
            cursor = page.get("next_page")
            if not page["has_more"]:
                return pages
            if not isinstance(cursor, str) or not cursor or cursor in seen:
                raise self._error("invalid_response", "has_more without a new next_page cursor")
            seen.add(cursor)
        raise Truncated(f"more than {MAX_PAGES} pages; lower USAGE_LOOKBACK_MIN", pages)

    def items(self, path: str, limit: int) -> list[Json]:
        """Every object of a list endpoint (``has_more``/``last_id``, ``after=``)."""
        out: list[Json] = []
        after: str | None = None
        for _ in range(MAX_PAGES):
            params: Params = [("limit", str(limit))] + ([("after", after)] if after else [])
            page = self.get(path, params)
            _require(page, ("object", "data", "has_more"), "list")
            if not isinstance(page["data"], list):
                raise self._error("invalid_response", "data is not a list")
            out.extend(page["data"])
            if not page["has_more"]:
                return out
            last = page.get("last_id") or (page["data"][-1].get("id") if page["data"]
                                           and isinstance(page["data"][-1], dict) else None)
            if not isinstance(last, str) or not last or last == after:
                raise self._error("invalid_response", "has_more without a new last_id")
            after = last
        raise self._error("invalid_response", f"more than {MAX_PAGES} pages of {path}")

    def _read(self, resp: requests.Response, deadline: float) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in resp.iter_content(65536):
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise self._error("invalid_response", f"body over {MAX_BODY_BYTES} bytes")
            if time.monotonic() > deadline:  # a body trickling in forever
                raise requests.Timeout("body not complete before the deadline")
            chunks.append(chunk)
        return b"".join(chunks)

    def _error(self, error_type: str, message: str) -> AdminError:
        return AdminError(error_type, redact(message, self._secrets)[:MAX_MESSAGE_CHARS])


def _require(doc: Json, keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if k not in doc]
    if missing:
        raise AdminError("invalid_response", f"{what} without {', '.join(missing)}")

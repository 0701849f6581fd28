"""Run one probe: one HTTP call, classified into one ProbeResult.

Probes never retry: a probe measures one attempt, and a retry would hide exactly
the failure the exporter exists to show. Redirects are not followed either, so a
credential can never travel to another origin.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any, Mapping

import requests
import urllib3

from . import __version__
from .catalogue import CATALOGUE, Probe, ResponseFailed, ShapeError
from .durations import parse_duration
from .pricing import PriceTable
from .redact import redact
from .result import ProbeResult, RateLimits
from .settings import TargetSettings

log = logging.getLogger("exporter.prober")

MAX_MESSAGE_CHARS = 300
MAX_BODY_BYTES = 4 * 1024 * 1024  # a probe answer is tiny; anything bigger is broken

# 429 codes that need a human (billing, spend caps): retrying never helps.
QUOTA_CODES = frozenset({
    "insufficient_quota",
    "credit_balance_exhausted",
    "project_spend_limit_exceeded",
    "organization_spend_limit_exceeded",
    "organization_usage_limit_exceeded",
    "billing_hard_limit_reached",
})

_TITLE = re.compile(rb"<title>\s*(.*?)\s*</title>", re.I | re.S)


class _Deadline(Exception):
    """The whole call took longer than the probe timeout."""


def classify_status(status: int, error: Mapping[str, Any]) -> str:
    """Map an HTTP error status (and the OpenAI error object, if any) to an error_type."""
    code = error.get("code")
    code = code.lower() if isinstance(code, str) else code
    etype = error.get("type")
    if status == 429:
        if code in QUOTA_CODES or etype == "insufficient_quota":
            return "quota_exceeded"
        return "rate_limited"
    if status == 401:
        return "unauthorized"
    if status == 403:
        return "forbidden"
    if status in (404, 410):
        return "not_found"
    if status == 408:
        return "timeout"
    if status in (502, 503, 504) or 520 <= status <= 524:
        return "provider_unavailable"
    if status >= 500:
        return "provider_error"
    if 300 <= status < 400:
        return "invalid_response"
    return "bad_request"


def parse_rate_limits(headers: Mapping[str, str]) -> RateLimits:
    """Read the six x-ratelimit-* headers. Absent, unparsable or -1 (Azure's
    "unknown") values become None, never an exception."""

    def number(name: str) -> float | None:
        raw = headers.get(name)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            return None
        return value if value >= 0 else None

    def duration(name: str) -> float | None:
        raw = headers.get(name)
        return parse_duration(raw) if raw is not None else None

    return RateLimits(
        requests_limit=number("x-ratelimit-limit-requests"),
        requests_remaining=number("x-ratelimit-remaining-requests"),
        requests_reset_seconds=duration("x-ratelimit-reset-requests"),
        tokens_limit=number("x-ratelimit-limit-tokens"),
        tokens_remaining=number("x-ratelimit-remaining-tokens"),
        tokens_reset_seconds=duration("x-ratelimit-reset-tokens"),
    )


def _error_object(body: bytes) -> dict[str, Any]:
    """The OpenAI error envelope, tolerating vLLM's string `error` and non-JSON bodies."""
    try:
        doc = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(doc, dict):
        return {}
    err = doc.get("error")
    if isinstance(err, dict):
        return err
    if isinstance(err, str):
        return {"message": err}
    if "message" in doc:  # vLLM's older {"object":"error","message":...}
        return doc
    return {}


def _error_text(status: int, body: bytes, error: Mapping[str, Any]) -> str:
    message = error.get("message")
    if isinstance(message, str) and message:
        return f"HTTP {status}: {message}"
    title = _TITLE.search(body[:4096])
    if title:
        return f"HTTP {status}: {title.group(1).decode('utf-8', 'replace')}"
    return f"HTTP {status}"


class Prober:
    """Runs the probes of one target. Thread-safe across endpoints: each endpoint
    has its own requests.Session (the scheduler never overlaps runs of one probe)."""

    def __init__(
        self,
        target: TargetSettings,
        *,
        timeout_seconds: float,
        prices: PriceTable | Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout_seconds
        # main() passes the process's one PriceTable; a plain mapping (tests, benchmarks)
        # gets a table of its own.
        self.prices = prices if isinstance(prices, PriceTable) else PriceTable(prices or {})
        self._secrets = tuple(s for s in (target.api_key,) if s)
        self._sessions: dict[str, requests.Session] = {}
        self._lock = threading.Lock()

    # -- request building ---------------------------------------------------------

    def url_for(self, probe: Probe) -> tuple[str, dict[str, str]]:
        base = self.target.base_url.rstrip("/")
        params = dict(probe.params)
        if self.target.provider == "azure":
            params["api-version"] = self.target.api_version
            if probe.azure_deployment:
                deployment = self.target.model_for(probe.name)
                return f"{base}/openai/deployments/{deployment}{probe.path}", params
            return f"{base}/openai{probe.path}", params
        return base + probe.path, params

    def headers_for(self, probe: Probe) -> dict[str, str]:
        headers = {"User-Agent": f"openai-exporter/{__version__}", "Accept": "application/json"}
        headers.update(self.target.headers)
        headers.update(probe.headers)
        key = self.target.api_key
        if key:
            if self.target.provider == "azure":
                headers["api-key"] = key
            else:
                headers["Authorization"] = f"Bearer {key}"
        if self.target.org_id:
            headers["OpenAI-Organization"] = self.target.org_id
        if self.target.project_id:
            headers["OpenAI-Project"] = self.target.project_id
        return headers

    def _session(self, endpoint: str) -> requests.Session:
        with self._lock:
            session = self._sessions.get(endpoint)
            if session is None:
                session = requests.Session()
                session.trust_env = True  # honour HTTPS_PROXY / NO_PROXY like other clients
                self._sessions[endpoint] = session
            return session

    def close(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()

    # -- the probe ------------------------------------------------------------------

    def run(self, endpoint: str) -> ProbeResult:
        """Probe `endpoint` once. Never raises for anything the network or upstream does."""
        probe = CATALOGUE[endpoint]
        model = self.target.model_for(endpoint)
        url, params = self.url_for(probe)
        body = json.dumps(probe.body(model)).encode() if probe.body else None
        headers = self.headers_for(probe)
        if body is not None:
            headers["Content-Type"] = "application/json"

        started_at = time.time()
        t0 = time.perf_counter()
        status: int | None = None
        raw = b""
        resp_headers: Mapping[str, str] = {}
        try:
            resp = self._session(endpoint).request(
                probe.method, url, params=params, data=body, headers=headers,
                timeout=(self.timeout, self.timeout), allow_redirects=False, stream=True,
            )
            status, resp_headers = resp.status_code, resp.headers
            raw = self._read_body(resp, t0)
        except (requests.Timeout, _Deadline) as exc:
            return self._result(
                probe, model, started_at, time.perf_counter() - t0, error_type="timeout",
                http_status=status, headers=resp_headers, nbytes=len(raw),
                message=f"timed out after {self.timeout:g}s ({type(exc).__name__})")
        except requests.RequestException as exc:
            return self._result(
                probe, model, started_at, time.perf_counter() - t0, error_type="network",
                http_status=status, headers=resp_headers, nbytes=len(raw),
                message=_network_message(exc))
        duration = time.perf_counter() - t0

        if not 200 <= status < 300:
            error = _error_object(raw)
            return self._result(
                probe, model, started_at, duration, error_type=classify_status(status, error),
                http_status=status, message=_error_text(status, raw, error),
                headers=resp_headers, nbytes=len(raw),
            )

        error_type, message, usage = "none", "", (0, 0, 0)
        content_type = resp_headers.get("content-type", "")
        if "json" not in content_type.lower():
            error_type, message = "invalid_response", (
                f"HTTP {status} with content-type {content_type[:60]!r}, expected JSON")
        else:
            try:
                usage = probe.check(json.loads(raw))
            except ResponseFailed as exc:
                error_type = "rate_limited" if exc.code == "rate_limit_exceeded" else "provider_error"
                message = f"HTTP {status}: {exc}"
            except (ValueError, ShapeError) as exc:
                # json.JSONDecodeError and UnicodeDecodeError are ValueErrors.
                error_type, message = "invalid_response", f"HTTP {status}: {_short(exc)}"
        return self._result(
            probe, model, started_at, duration, error_type=error_type, http_status=status,
            message=message, headers=resp_headers, nbytes=len(raw), usage=usage,
        )

    def _read_body(self, resp: requests.Response, t0: float) -> bytes:
        """Read the body, cutting it at the probe deadline: requests' timeout bounds
        each socket read, not the whole transfer, so a trickling body needs this.
        read1 returns as soon as any bytes arrive, so the deadline is checked often."""
        chunks, size = [], 0
        try:
            while True:
                try:
                    chunk = resp.raw.read1(16 * 1024, decode_content=True)
                except urllib3.exceptions.ReadTimeoutError as exc:  # a stalled body: timeout
                    raise requests.ReadTimeout(exc) from exc
                except (urllib3.exceptions.HTTPError, OSError) as exc:
                    raise requests.ConnectionError(exc) from exc
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if time.perf_counter() - t0 > self.timeout:
                    raise _Deadline()
                if size > MAX_BODY_BYTES:
                    break
        finally:
            resp.close()
        return b"".join(chunks)

    def _result(self, probe: Probe, model: str, started_at: float, duration: float, *,
                error_type: str, http_status: int | None, message: str,
                headers: Mapping[str, str], nbytes: int,
                usage: tuple[int, int, int] = (0, 0, 0)) -> ProbeResult:
        """The ProbeResult of one run; request id and rate limits come from `headers`
        (empty when no response arrived)."""
        input_tokens, output_tokens, total_tokens = usage
        return ProbeResult(
            target=self.target.name,
            region=self.target.region,
            endpoint=probe.name,
            model=model,
            started_at=started_at,
            duration_seconds=duration,
            success=error_type == "none",
            error_type=error_type,
            http_status=http_status,
            error_message=redact(message, self._secrets)[:MAX_MESSAGE_CHARS],
            request_id=_bounded_id(headers.get("x-request-id", "")),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=total_tokens,
            response_bytes=nbytes,
            cost_usd=self.prices.cost(model, input_tokens, output_tokens),
            rate_limits=parse_rate_limits(headers),
        )


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _network_message(exc: requests.RequestException) -> str:
    """A short, stable description: requests' messages embed object reprs and URLs."""
    text = str(exc)
    for needle, label in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "DNS lookup failed"),
        ("nodename nor servname", "DNS lookup failed"),
        ("Temporary failure in name resolution", "DNS lookup failed"),
        ("Failed to resolve", "DNS lookup failed"),
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate verification failed"),
        ("Connection reset", "connection reset by peer"),
        ("Connection aborted", "connection aborted"),
        ("IncompleteRead", "connection closed mid-body"),
        ("Connection broken", "connection closed mid-body"),
        ("RemoteDisconnected", "connection closed before a response"),
    ):
        if needle in text:
            return label
    return f"{type(exc).__name__}"


def _bounded_id(value: str) -> str:
    # Logged, never a label; still keep whatever a proxy sends to a sane size.
    return value[:80]

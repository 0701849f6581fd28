"""Error classification: what a status, an error object or a failed transfer means.

Each failure becomes one error_type (a bounded label value, see exporter/result.py) and
one short message. The message is not yet redacted: the prober redacts every message
once, where it builds the ProbeResult. docs/decisions.md has the table.
"""

from __future__ import annotations

import json
import re
from typing import Any
from collections.abc import Mapping

import requests

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


# The HTTP status an error code or type comes with (facts §5.2), for errors that arrive
# without one: an event in the middle of a stream, or a failed Responses object on HTTP
# 200. They are classified as that HTTP answer would be, by classify_status, so the two
# paths can never disagree (a quota code is quota_exceeded whether it comes as a 429 or
# mid-stream). The code is looked up first, then the type.
_STATUS_OF: dict[str, int] = {
    **dict.fromkeys(QUOTA_CODES, 429),
    "insufficient_quota": 429,
    "rate_limit_exceeded": 429, "slow_down": 429, "rate_limit_error": 429,
    "requests": 429, "tokens": 429,  # the 429's type says which limit
    "server_is_overloaded": 503, "service_unavailable_error": 503, "overloaded_error": 503,
    "server_error": 500, "api_error": 500,
    "invalid_api_key": 401, "authentication_error": 401,
    "request_forbidden": 403, "permission_error": 403,
    "unsupported_country_region_territory": 403,
    "model_not_found": 404, "not_found_error": 404,
    "invalid_request_error": 400, "invalid_prompt": 400, "context_length_exceeded": 400,
}


def status_of(error: Mapping[str, Any]) -> int:
    """The HTTP status an error object stands for: its code when that is a status (vLLM,
    Azure and Cloudflare put one there), else what its code or type comes with; 500 (an
    error of the provider) when neither says."""
    for key in ("code", "type"):
        value = error.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            if 400 <= int(value) <= 599:
                return int(value)
        elif isinstance(value, str) and value.lower() in _STATUS_OF:
            return _STATUS_OF[value.lower()]
    return 500


def classify_error(error: Mapping[str, Any]) -> str:
    """The error_type of an error object that came without an HTTP status (a mid-stream
    error event, a failed Responses object): that of the HTTP error it stands for."""
    return classify_status(status_of(error), error)


def failed_response(code: Any) -> str:
    """The error_type of a Responses object that reports failure in its body on HTTP 200."""
    return classify_error({"code": code})


def http_error(status: int, body: bytes) -> tuple[str, str]:
    """error_type and message of a non-2xx answer, from its status and body."""
    error = error_object(body)
    return classify_status(status, error), error_text(status, body, error)


def transport_error(exc: requests.RequestException, timeout: float) -> tuple[str, str]:
    """error_type and message of a call that failed on the wire: no answer, or a body
    cut short (a read timeout, the probe deadline, a reset, a closed connection)."""
    if isinstance(exc, requests.Timeout):
        return "timeout", f"timed out after {timeout:g}s ({type(exc).__name__})"
    return "network", network_message(exc)


def error_object(body: bytes) -> dict[str, Any]:
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


def error_text(status: int, body: bytes, error: Mapping[str, Any]) -> str:
    """The message "HTTP <status>: <the error's message or the HTML title>"; not redacted."""
    message = error.get("message")
    if isinstance(message, str) and message:
        return f"HTTP {status}: {message}"
    title = _TITLE.search(body[:4096])
    if title:
        return f"HTTP {status}: {title.group(1).decode('utf-8', 'replace')}"
    return f"HTTP {status}"


def network_message(exc: requests.RequestException) -> str:
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

"""Error answers: the OpenAI and Azure envelopes, masked-key 401s, 429 wording, the canned
bodies of the replace faults and the proxy pages (facts §5, §8)."""

from __future__ import annotations

import math
import secrets

from .exchange import Plan, Request, dumps, plan_json
from .limiter import Snapshot, go_duration
from .tables import (
    AZURE_401,
    AZURE_OPERATIONS,
    CAPTIVE_PORTAL,
    CF_502,
    CF_504,
    HTML,
    KEYS_URL,
    MISSING_KEY_MESSAGE,
    MODEL_ENDPOINTS,
    ORG,
    QUOTA_MESSAGE,
    STREAMED,
    Json,
)

AZURE_NOT_FOUND: Json = {"error": {"code": "404", "message": "Resource not found"}}
"""Azure's answer to an unknown resource, and to a request without api-version."""


class ApiError(Exception):
    """Raised by an answer builder: answer with this status and JSON body."""

    def __init__(self, status: int, body: Json) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def error(message: str, type_: str | None, param: str | None = None,
          code: str | int | None = None) -> Json:
    """The OpenAI error envelope; all four keys, as the spec requires."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def invalid(message: str, param: str | None = None, code: str | None = None,
            status: int = 400) -> ApiError:
    """An ``invalid_request_error`` to raise."""
    return ApiError(status, error(message, "invalid_request_error", param, code))


def mask_key(key: str) -> str:
    """Mask a key the way OpenAI echoes it in 401s: first 8 chars, *****, last 4.

    Keys under 16 characters keep only their first 3 so most of a short key stays hidden.
    """
    if len(key) >= 16:
        return f"{key[:8]}*****{key[-4:]}"
    return f"{key[:3]}*****" if len(key) >= 6 else "*****"


def not_found_message(model: str) -> str:
    """The ``model_not_found`` message, backticks included."""
    return f"The model `{model}` does not exist or you do not have access to it."


def invalid_url(method: str, path: str) -> Json:
    """The API's 404 for a route it does not have."""
    return error(f"Invalid URL ({method} {path})", "invalid_request_error")


def model_of(req: Request) -> str:
    """The model a request is about, for error messages."""
    model = req.json.get("model") if isinstance(req.json, dict) else None
    if isinstance(model, str):
        return model
    if req.deployment:
        return req.deployment
    return {"embeddings": "text-embedding-3-small", "moderations": "omni-moderation-latest",
            "images": "dall-e-2"}.get(req.endpoint, "gpt-4o-mini")


def unauthorized(req: Request, key: str) -> Plan:
    """The 401 for a missing or wrong key; the key comes back masked, never whole."""
    # No rate-limit headers: an unknown key belongs to no organisation.
    if req.azure:
        return plan_json(401, {"error": {"code": "401", "message": AZURE_401}})
    if not key:
        return plan_json(401, error(MISSING_KEY_MESSAGE, "invalid_request_error"))
    return plan_json(401, error(
        f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
        f"{KEYS_URL}.", "invalid_request_error", None, "invalid_api_key"))


def rate_limited(req: Request, snap: Snapshot, kind: str, wait_s: float,
                 used: int | None = None, requested: int = 1) -> Plan:
    """The 429 for a spent "requests" or "tokens" limit, with retry-after (not the
    x-ratelimit-* headers: the caller adds those)."""
    if kind == "requests":
        limit, unit = snap.requests_limit, "requests per min (RPM)"
    else:
        limit, unit = snap.tokens_limit, "tokens per min (TPM)"
    used = limit if used is None else used
    retry_after = max(1, math.ceil(wait_s))
    if req.azure:
        op = AZURE_OPERATIONS.get(req.endpoint, "Operation")
        what = "call rate limit" if kind == "requests" else "token rate limit"
        plan = plan_json(429, {"error": {"code": "429", "message": (
            f"Requests to the {op} Operation under Azure OpenAI API version "
            f"{req.query.get('api-version')} have exceeded {what} of your current OpenAI "
            f"S0 pricing tier. Please retry after {retry_after} seconds. Please go here: "
            "https://aka.ms/oai/quotaincrease if you would like to further increase the "
            "default rate limit.")}})
        plan.headers["retry-after-ms"] = str(int(wait_s * 1000))
    else:
        plan = plan_json(429, error(
            f"Rate limit reached for {model_of(req)} in organization {ORG} on {unit}: "
            f"Limit {limit}, Used {used}, Requested {requested}. Please try again in "
            f"{go_duration(wait_s)}. Visit https://platform.openai.com/account/rate-limits "
            "to learn more.", kind, None, "rate_limit_exceeded"))
    plan.headers["retry-after"] = str(retry_after)
    return plan


def edge_page(name: str) -> Plan | None:
    """What a proxy or CDN in front of the API sends for this fault, or None if the API
    itself answers it."""
    edge = {"server": "cloudflare", "cf-ray": secrets.token_hex(8) + "-ORD"}
    if name == "html_200":  # a captive portal or proxy page, not the API at all
        return Plan(200, CAPTIVE_PORTAL, "text/html; charset=utf-8", edge=True)
    if name == "bad_gateway_html":
        return Plan(502, CF_502, HTML, headers=edge, edge=True)
    if name == "gateway_timeout":
        return Plan(504, CF_504, HTML, headers=edge, edge=True)
    if name == "bad_gateway_json":  # Cloudflare JSON variant: integer code
        return Plan(502, dumps({"error": {"code": 502, "message": "Bad gateway.",
                                          "param": None, "type": "cf_bad_gateway"}}),
                    headers=edge, edge=True)
    return None


def bad_request_body(endpoint: str) -> Json:
    """An injected 400 that makes sense for the endpoint (the demo shows these messages)."""
    if STREAMED.get(endpoint, endpoint) in ("chat", "responses"):
        return error("Unsupported parameter: 'max_tokens' is not supported with this model. "
                     "Use 'max_completion_tokens' instead.", "invalid_request_error",
                     "max_tokens", "unsupported_parameter")
    if endpoint in MODEL_ENDPOINTS:
        return error("Unrecognized request argument supplied: dimensions_hint",
                     "invalid_request_error")
    return error("Invalid value for 'limit': integer above maximum value. Expected a value "
                 "<= 100, but got 1000 instead.", "invalid_request_error", "limit",
                 "integer_above_max_value")


def canned(name: str, req: Request) -> tuple[int, Json]:
    """(status, body) of a replace fault the API itself answers, rate limits aside."""
    if name == "bad_request":
        return 400, bad_request_body(req.endpoint)
    if name == "forbidden":
        return 403, error("Country, region, or territory not supported", "request_forbidden",
                          None, "unsupported_country_region_territory")
    if name == "not_found":
        if req.endpoint in MODEL_ENDPOINTS:
            return 404, error(not_found_message(model_of(req)), "invalid_request_error", None,
                              "model_not_found")
        return 404, invalid_url(req.method, req.path)
    if name == "quota":
        return 429, error(QUOTA_MESSAGE, "insufficient_quota", None, "insufficient_quota")
    if name == "quota_legacy":
        return 429, error(QUOTA_MESSAGE, "insufficient_quota", None, None)
    if name == "billing":  # the exact wording is not documented; code and type are (§5.2)
        return 429, error("Your credit balance is exhausted. Add credits in your billing "
                          "settings to continue using the API.", "insufficient_quota", None,
                          "credit_balance_exhausted")
    if name == "server_error":
        return 500, error("The server had an error while processing your request. Sorry "
                          "about that!", "server_error")
    if name == "overloaded":
        return 503, error("Our servers are currently overloaded. Please try again later.",
                          "service_unavailable_error", None, "server_is_overloaded")
    raise ValueError(f"{name!r} is not a canned fault")

"""FakeUpstream: the server's lifecycle, its faults and request records, and planning the
answer to each request (wire.Handler then executes the plan on the socket)."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

from . import errors, streams
from .errors import AZURE_NOT_FOUND, ApiError, invalid_url
from .exchange import Plan, Request, parse_json, plan_json
from .faults import BODY_FAULTS, DEFAULT_DELAY_MS, REPLACE_FAULTS, FaultBook
from .limiter import Limiter
from .org import Organization
from .routes import ROUTED_ENDPOINTS, route
from .tables import TOKEN_ENDPOINTS
from .wire import Server

MAX_RECORDED = 10_000  # the request log is a ring: a long demo must not grow without bound
_SECRET_HEADERS = frozenset({"authorization", "api-key"})


class FakeUpstream:
    """An OpenAI-compatible HTTP server on loopback with injectable faults.

    ``api_key=None`` accepts any non-empty key. ``latency_ms`` is added to every API
    answer. In the ``chaos`` profile each request without an explicit fault also gets a
    lognormal jitter (80-1500 ms, median 250 ms) on top of ``latency_ms`` and, with the
    odds in ``CHAOS_WEIGHTS``, a random fault; ``time_scale`` multiplies the chaos
    jitter and stalls (0 makes chaos instant, for tests). ``clock`` drives the rate-limit
    windows. ``admin_key=None`` accepts any ``sk-admin-`` key on the admin routes; ``org``
    is the organisation they serve (with its own clock).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None,
                 profile: str = "healthy", latency_ms: float = 0.0, seed: int | None = None,
                 rpm_limit: int = 500, tpm_limit: int = 200000, window_seconds: float = 60.0,
                 time_scale: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 admin_key: str | None = None) -> None:
        if profile not in ("healthy", "chaos"):
            raise ValueError(f"profile must be 'healthy' or 'chaos', not {profile!r}")
        if api_key is not None and not api_key:
            raise ValueError("api_key must be None (accept any key) or non-empty")
        if admin_key is not None and not admin_key:
            raise ValueError("admin_key must be None (accept any sk-admin- key) or non-empty")
        if rpm_limit < 1 or tpm_limit < 1 or window_seconds <= 0:
            raise ValueError("rpm_limit, tpm_limit and window_seconds must be positive")
        if latency_ms < 0 or time_scale < 0:
            raise ValueError("latency_ms and time_scale must be >= 0")
        self.api_key = api_key
        self.admin_key = admin_key
        # The organisation behind the admin routes; its clock and lag are settable.
        self.org = Organization(chaos=profile == "chaos")
        self.latency_ms = latency_ms
        self._faults = FaultBook(ROUTED_ENDPOINTS, chaos=profile == "chaos", seed=seed,
                                 time_scale=time_scale)
        self._limiter = Limiter(rpm_limit, tpm_limit, window_seconds, clock)
        self._lock = threading.Lock()  # guards _records
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_RECORDED)
        self._thread: threading.Thread | None = None
        self._stopped = False
        # Bind now so port/base_url are known before start().
        self._server = Server((host, port), self)

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
        self._server.stopping.set()  # wakes hang / slow_body / delay waits
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
    def profile(self) -> str:
        """"healthy" or "chaos"."""
        return "chaos" if self._faults.chaos else "healthy"

    @property
    def port(self) -> int:
        """The port it listens on (chosen by the OS for port 0)."""
        return int(self._server.server_address[1])

    @property
    def root_url(self) -> str:
        """``http://host:port``: the Azure endpoint, and the control API's root."""
        host = str(self._server.server_address[0])
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``root_url`` plus ``/v1``: what an OpenAI client takes as its base URL."""
        return self.root_url + "/v1"

    # -- faults and records ----------------------------------------------------------

    def set_fault(self, endpoint: str, fault: str, *, count: int | None = None,
                  delay_ms: float | None = None) -> None:
        """Make `endpoint` ("*" for all) misbehave; `count` = only the next N requests.

        An endpoint's own fault wins over "*". ``delay_ms`` is the sleep for ``delay``,
        the stall for ``hang``/``slow_body``/``stall_stream`` (then the connection
        closes), the chunk interval for ``trickle_body``, the wait before the first token
        for ``slow_first_token`` (default 2 s) and between tokens for ``slow_tokens``
        (default 100 ms), and a pre-answer delay for every other fault. Stream faults
        apply to ``chat_stream`` and ``responses_stream`` only ("*" reaches those).
        ``"none"`` forces normal answers (also suppressing chaos) for that endpoint.
        """
        self._faults.set(endpoint, fault, count=count, delay_ms=delay_ms)

    def clear_faults(self) -> None:
        """Lift every fault set with set_fault."""
        self._faults.clear()

    def faults(self) -> dict[str, dict[str, Any]]:
        """The faults in force: endpoint -> {fault, count, delay_ms}."""
        return self._faults.in_force()

    def reset(self) -> None:
        """Clear faults, recorded requests and rate-limit counters."""
        self._faults.clear()
        with self._lock:
            self._records.clear()
        self._limiter.clear()

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Recorded API requests, oldest first (control requests are not recorded).

        Keys: method, path, query (name -> last value), headers (lower-case names,
        credentials replaced by "<redacted>"), json (the parsed JSON body, or None),
        endpoint (probe key or None for unknown routes), model, ts (Unix seconds), and,
        once answered, fault (name or None), chaos (bool) and status (HTTP status, None
        when no status line was sent).
        """
        with self._lock:
            return [dict(r) for r in self._records]

    # -- planning ------------------------------------------------------------------

    def plan(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
             raw: bytes, multi: dict[str, list[str]] | None = None
             ) -> tuple[Plan, dict[str, Any]]:
        """Decide the whole answer to one API request, and record the request; the
        handler executes the plan and fills in the record's status. `multi` has every
        value of each query parameter (arrays such as group_by[])."""
        body = parse_json(raw)
        req = route(method, path, query, headers, raw, body, multi, self.org)
        record: dict[str, Any] = {
            "method": method, "path": path, "query": dict(query),
            "headers": {k: ("<redacted>" if k in _SECRET_HEADERS else v)
                        for k, v in headers.items()},
            "json": body, "endpoint": req.endpoint if req else None,
            "model": body.get("model") if isinstance(body, dict) else None,
            "ts": time.time(), "fault": None, "chaos": False, "status": None,
        }
        with self._lock:
            self._records.append(record)
        if req is None:
            return plan_json(404, AZURE_NOT_FOUND if path.startswith("/openai/")
                             else invalid_url(method, path)), record
        if req.azure and not query.get("api-version"):
            # Azure answers a request without api-version as an unknown resource.
            return plan_json(404, AZURE_NOT_FOUND), record

        fault, chaos = self._faults.take(req.endpoint)
        record["fault"], record["chaos"] = (fault.name if fault else None), chaos
        sleep = self.latency_ms / 1000
        if self._faults.chaos:
            sleep += self._faults.jitter_s()
        name = fault.name if fault else None
        delay_s = (fault.delay_ms / 1000) if fault and fault.delay_ms is not None else None

        if name == "hang":
            return Plan(transport="hang", sleep_s=sleep, stall_s=delay_s), record
        if name == "reset":
            return Plan(transport="reset", sleep_s=sleep + (delay_s or 0.0)), record
        if name in REPLACE_FAULTS:
            plan = self._replace(name, req)
            plan.sleep_s = sleep + (delay_s or 0.0)
        else:
            if name == "delay":
                sleep += delay_s if delay_s is not None else DEFAULT_DELAY_MS / 1000
            elif name in BODY_FAULTS or name in ("reset_mid_body", "cut_stream", "stream_error"):
                sleep += delay_s or 0.0
            plan = self._answer(req, variant=name if name in BODY_FAULTS else None)
            plan.sleep_s = sleep
            if plan.stream is not None:  # a streamed answer: the fault shapes its parts
                streams.shape(plan, name, delay_s)
            elif name in ("slow_body", "reset_mid_body", "trickle_body"):
                plan.transport = name
            if name == "slow_body":
                plan.stall_s = delay_s
            elif name == "trickle_body" and delay_s is not None:
                plan.trickle_s = delay_s
        if not plan.edge:
            plan.headers.setdefault("openai-processing-ms", str(int(plan.sleep_s * 1000) + 1))
        return plan, record

    def _answer(self, req: Request, variant: str | None) -> Plan:
        """The normal pipeline of the request's route: auth, rate limit, validation, body."""
        key, refusal = req.route.auth(req, self)
        if refusal is not None:
            return refusal
        limited = self._limiter.take(key, uses_tokens=req.endpoint in TOKEN_ENDPOINTS)
        if limited:
            left = self._limiter.snapshot(key)
            wait = left.requests_reset if limited == "requests" else left.tokens_reset
            return self._rate_limited(req, key, limited, wait)
        try:
            body, tokens = req.route.build(req, variant)
        except ApiError as err:
            plan = plan_json(err.status, err.body)
        else:
            self._limiter.add_tokens(key, tokens)
            plan = req.route.render(req, body, variant)
        plan.headers.update(self._limiter.headers(key, azure=req.azure))
        return plan

    def _rate_limited(self, req: Request, key: str, kind: str, wait_s: float,
                      used: int | None = None, requested: int = 1) -> Plan:
        plan = errors.rate_limited(req, self._limiter.snapshot(key), kind, wait_s, used,
                                   requested)
        plan.headers.update(self._limiter.headers(key, azure=req.azure))
        return plan

    def _replace(self, name: str, req: Request) -> Plan:
        """The canned answer of a replace fault (facts §5.2)."""
        page = errors.edge_page(name)
        if page is not None:
            return page
        if name == "unauthorized":
            return errors.unauthorized(req, req.credential)
        key = req.credential or "anonymous"
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
        plan = plan_json(*errors.canned(name, req))
        plan.headers.update(self._limiter.headers(key, azure=req.azure))
        return plan

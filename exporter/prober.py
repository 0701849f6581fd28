"""Run one probe: send -> read -> classify, into one ProbeResult.

send builds the request from the catalogue entry and returns once the response headers
are in; read hands the body to the reader the probe names (exporter/readers.py), or reads
an error answer's body; classify turns the transport failure, the status or the
reading's verdict into one error_type and message (exporter/errors.py). One place,
``_result``, builds the ProbeResult, redacting the message.

Probes never retry: a probe measures one attempt, and a retry would hide exactly
the failure the exporter exists to show. Redirects are not followed either, so a
credential can never travel to another origin.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple
from collections.abc import Mapping

import requests

from . import __version__, transport
from .catalogue import CATALOGUE, Probe
from .durations import parse_duration
from .errors import http_error, transport_error
from .pricing import PriceTable
from .readers import READERS, ProbeClock, Reading, read_error
from .redact import redact
from .result import ProbeResult, RateLimits
from .settings import TargetSettings

MAX_MESSAGE_CHARS = 300


# Bounds of what the headers may say; anything else is unusable (None), never a gauge
# value: float() reads "inf", "nan" and "1e400" (inf) happily. The largest real limits are
# ~10^9 tokens a minute; resets and Retry-After are for limits of a day at most.
MAX_RATE_LIMIT = 1e12
MAX_WAIT_SECONDS = 86400.0
RETRY_AFTER_NOTE = " (retry-after {:g} s)"


def _bounded_number(raw: str | None, hi: float) -> float | None:
    """A number 0..hi from a header value; None when absent or unusable."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if 0 <= value <= hi else None  # NaN fails both comparisons


def parse_rate_limits(headers: Mapping[str, str]) -> RateLimits:
    """Read the six x-ratelimit-* headers. Absent, unparsable, negative (Azure's -1,
    "unknown"), infinite, NaN or out-of-bounds values become None, never an exception."""

    def number(name: str) -> float | None:
        return _bounded_number(headers.get(name), MAX_RATE_LIMIT)

    def duration(name: str) -> float | None:
        raw = headers.get(name)
        seconds = parse_duration(raw) if raw is not None else None
        return seconds if seconds is not None and seconds <= MAX_WAIT_SECONDS else None

    return RateLimits(
        requests_limit=number("x-ratelimit-limit-requests"),
        requests_remaining=number("x-ratelimit-remaining-requests"),
        requests_reset_seconds=duration("x-ratelimit-reset-requests"),
        tokens_limit=number("x-ratelimit-limit-tokens"),
        tokens_remaining=number("x-ratelimit-remaining-tokens"),
        tokens_reset_seconds=duration("x-ratelimit-reset-tokens"),
    )


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a 429 asks to wait: retry-after-ms first (as the official SDK reads it;
    Azure sends it), then Retry-After as seconds or an HTTP-date. None when absent or
    unusable (negative, infinite, NaN, over a day, a bad date); a past date is 0."""
    ms = _bounded_number(headers.get("retry-after-ms"), MAX_WAIT_SECONDS * 1000)
    if ms is not None:
        return ms / 1000
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = _bounded_number(raw, MAX_WAIT_SECONDS)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    wait = max(0.0, when.timestamp() - time.time())
    return wait if wait <= MAX_WAIT_SECONDS else None


def classify(status: int | None, reading: Reading, failure: requests.RequestException | None,
             timeout: float) -> tuple[str, str]:
    """error_type and message of one probe: the transfer's failure if there was one, else
    the answer's status, else what the reader found in the body."""
    if failure is not None:
        return transport_error(failure, timeout)
    if status is not None and not 200 <= status < 300:
        return http_error(status, reading.body)
    return reading.error_type, reading.message


class _Request(NamedTuple):
    method: str
    url: str
    params: dict[str, str]
    data: bytes | None
    headers: dict[str, str]


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
        self._send_kwargs: dict[str, dict[str, Any]] = {}  # per URL, see _prepare
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
                # fresh: a new connection every probe; reuse: the warm one (transport.py)
                session = transport.session(self.target.connection)
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
        session = self._session(probe.name)
        status: int | None = None
        headers: Mapping[str, str] = {}
        reading = Reading()
        failure: requests.RequestException | None = None
        # Prepared (and the proxy, .netrc and CA bundle looked up) before the clock starts:
        # the duration is the exchange with the upstream, not requests' bookkeeping.
        try:
            prepared, send_kwargs = self._prepare(session, self._request(probe, model))
        except requests.RequestException as exc:  # a header or URL requests refuses
            prepared, send_kwargs, failure = None, {}, exc
        started_at = time.time()
        clock = ProbeClock.start(self.timeout)
        timer = transport.begin(clock.started, self.timeout)
        try:
            if prepared is not None:
                resp = session.send(prepared, **send_kwargs)
                status, headers = resp.status_code, resp.headers
                reading = self._read(probe, resp, clock)
        except requests.RequestException as exc:  # the probe deadline is one too
            failure = exc
        finally:
            transport.end()
        duration = clock.elapsed()
        stream = probe.reader == "sse" and status is not None and 200 <= status < 300
        phases = {} if prepared is None else transport.phases(
            timer, duration, https=(prepared.url or "").startswith("https:"), stream=stream,
            first_content=reading.ttft)
        error_type, message = classify(status, reading, failure, self.timeout)
        return self._result(probe, model, started_at, duration, error_type=error_type,
                            http_status=status, message=message, headers=headers,
                            reading=reading, phases=phases)

    def _request(self, probe: Probe, model: str) -> _Request:
        url, params = self.url_for(probe)
        data = json.dumps(probe.body(model)).encode() if probe.body else None
        headers = self.headers_for(probe)
        if data is not None:
            headers["Content-Type"] = "application/json"
        return _Request(probe.method, url, params, data, headers)

    def _prepare(self, session: requests.Session,
                 request: _Request) -> tuple[requests.PreparedRequest, dict[str, Any]]:
        """What Session.request does before it sends: the prepared request and the send
        arguments (proxies, verify, cert from the environment; the timeouts; no
        redirects; the body left unread until the reader takes it)."""
        prepared = session.prepare_request(requests.Request(
            request.method, request.url, params=request.params, data=request.data,
            headers=request.headers))
        # The environment's proxies and CA bundle are read once per URL: looking them up
        # scans os.environ twice (~0.3 ms of CPU a probe), and a daemon's environment
        # does not change under it.
        url = prepared.url or ""
        kwargs = self._send_kwargs.get(url)
        if kwargs is None:
            kwargs = {"timeout": (self.timeout, self.timeout), "allow_redirects": False}
            kwargs.update(session.merge_environment_settings(url, {}, True, None, None))
            self._send_kwargs[url] = kwargs
        return prepared, kwargs

    def _read(self, probe: Probe, resp: requests.Response, clock: ProbeClock) -> Reading:
        """A 2xx body through the probe's reader; any other answer's body as an error."""
        try:
            if 200 <= resp.status_code < 300:
                return READERS[probe.reader](resp, probe, clock)
            return read_error(resp, clock)
        finally:
            resp.close()

    def _result(self, probe: Probe, model: str, started_at: float, duration: float, *,
                error_type: str, http_status: int | None, message: str,
                headers: Mapping[str, str], reading: Reading,
                phases: Mapping[str, float] | None = None) -> ProbeResult:
        """The ProbeResult of one run; request id and rate limits come from `headers`
        (empty when no response arrived)."""
        input_tokens, output_tokens, total_tokens = reading.usage
        retry_after = parse_retry_after(headers) if http_status == 429 else None
        # The wait goes in the message too, so /status's last failure and /traces show it;
        # it is cut from the upstream text, never from the note.
        note = "" if retry_after is None else RETRY_AFTER_NOTE.format(retry_after)
        message = redact(message, self._secrets)[:MAX_MESSAGE_CHARS - len(note)] + note
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
            error_message=message,
            request_id=_bounded_id(headers.get("x-request-id", "")),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=total_tokens,
            response_bytes=reading.nbytes,
            cost_usd=self.prices.cost(model, input_tokens, output_tokens),
            rate_limits=parse_rate_limits(headers),
            retry_after_seconds=retry_after,
            ttft_seconds=reading.ttft,
            tpot_seconds=reading.tpot,
            phases=phases or {},
        )


def _bounded_id(value: str) -> str:
    # Logged, never a label; still keep whatever a proxy sends to a sane size.
    return value[:80]

"""Every metric family of the exporter, in one place (the contract in DESIGN.md).

The values come from probes the exporter runs on its own timer, not from the
scrape: each probe costs tokens and rate limit, and several Prometheus replicas
scraping would multiply that. HELP texts say so, and no sample carries a timestamp.
No *_created series either: prometheus_client's switch for them is process-wide, so
main() turns them off, not an import of this module.
"""

from __future__ import annotations

import threading
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from . import __version__
from .catalogue import CATALOGUE
from .result import ERROR_TYPES, PHASES, ProbeResult, RateLimits
from .settings import Settings

BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 15, 20, 30, 60)
# Time per output token: a few ms (fast small models) to a second (a stalled stream).
TPOT_BUCKETS = (0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1)
# Why a scheduled probe did not run (label values of openai_probe_skipped_total):
# still_running - the previous run of the same probe had not finished (it never overlaps);
# budget        - paid probes are paused by PROBE_BUDGET_USD_PER_DAY.
SKIP_REASONS: tuple[str, ...] = ("still_running", "budget")
_FROM_PROBES = " (from scheduled probes, not measured at scrape time)."


class ExporterMetrics:
    """Holds the families on a private registry; `observe` feeds one ProbeResult."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self._lock = threading.Lock()
        self.requests = Counter(
            "openai_requests", "Probe requests sent to the API, by outcome" + _FROM_PROBES,
            ["target", "region", "endpoint", "model", "status", "error_type"], registry=r)
        self.duration = Histogram(
            "openai_request_duration_seconds",
            "Wall-clock duration of probe requests, body included" + _FROM_PROBES,
            ["target", "region", "endpoint", "model", "status"], buckets=BUCKETS, registry=r)
        self.tokens = Counter(
            "openai_tokens", "Tokens consumed by probes, as reported in the response usage"
            + _FROM_PROBES, ["target", "region", "endpoint", "model", "token_type"], registry=r)
        self.response_bytes = Counter(
            "openai_response_bytes", "Response body bytes received by probes" + _FROM_PROBES,
            ["target", "region", "endpoint"], registry=r)
        self.cost = Counter(
            "openai_cost_usd",
            "Estimated spend of the probes in USD, from the configured price table"
            + _FROM_PROBES, ["target", "region", "endpoint", "model"], registry=r)
        self.rate_limit: dict[tuple[str, str], Gauge] = {}
        for kind in ("requests", "tokens"):
            for field, suffix, help_text in (
                ("limit", "limit", f"x-ratelimit-limit-{kind} seen on the last probe that sent it"),
                ("remaining", "remaining",
                 f"x-ratelimit-remaining-{kind} seen on the last probe that sent it"),
                ("reset", "reset_seconds", f"Seconds until the {kind} limit is back to full "
                                           f"(x-ratelimit-reset-{kind})"),
            ):
                self.rate_limit[(kind, field)] = Gauge(
                    f"openai_rate_limit_{kind}_{suffix}", help_text + _FROM_PROBES,
                    ["target", "region", "model"], registry=r)
        # How old the values above are: a response without the headers leaves them as
        # they were (0 would read as "exhausted"), so this says when they were last read.
        self.rate_limit_updated = Gauge(
            "openai_rate_limit_last_update_timestamp_seconds",
            "Unix time the last probe that sent usable x-ratelimit-* headers finished (the "
            "rate-limit gauges keep their values until such a probe)" + _FROM_PROBES,
            ["target", "region", "model"], registry=r)
        self.retry_after = Gauge(
            "openai_rate_limit_retry_after_seconds",
            "Seconds the last answer to this probe asked to wait before retrying (a 429's "
            "Retry-After or retry-after-ms); 0 when it asked for no wait" + _FROM_PROBES,
            ["target", "region", "endpoint", "model"], registry=r)
        self.success = Gauge(
            "openai_probe_success", "1 if the last probe of this endpoint succeeded, else 0"
            + _FROM_PROBES, ["target", "region", "endpoint", "model"], registry=r)
        self.last_run = Gauge(
            "openai_probe_last_run_timestamp_seconds",
            "Unix time the last probe of this endpoint finished" + _FROM_PROBES,
            ["target", "region", "endpoint"], registry=r)
        self.last_success = Gauge(
            "openai_probe_last_success_timestamp_seconds",
            "Unix time the last successful probe of this endpoint finished" + _FROM_PROBES,
            ["target", "region", "endpoint"], registry=r)
        self.ttft = Histogram(
            "openai_time_to_first_token_seconds",
            "Streaming probes: seconds from the start of the request to the first event that "
            "carries content" + _FROM_PROBES,
            ["target", "region", "endpoint", "model"], buckets=BUCKETS, registry=r)
        self.tpot = Histogram(
            "openai_time_per_output_token_seconds",
            "Streaming probes: seconds per output token after the first (probes with at "
            "least 5 output tokens)" + _FROM_PROBES,
            ["target", "region", "endpoint", "model"], buckets=TPOT_BUCKETS, registry=r)
        self.phase = Gauge(
            "openai_probe_phase_seconds",
            "Seconds the last probe of this endpoint spent in each phase: connect, tls, "
            "server (request sent to response headers), first_token (streams), transfer"
            + _FROM_PROBES, ["target", "region", "endpoint", "phase"], registry=r)
        self.skipped = Counter(
            "openai_probe_skipped",
            "Scheduled probes that did not run, by reason (still_running: the previous run "
            "had not finished; budget: paid probes paused by the daily budget)",
            ["target", "endpoint", "reason"], registry=r)
        self.interval = Gauge(
            "openai_probe_interval_seconds",
            "Configured probe interval; in roundrobin mode each endpoint is probed once per "
            "interval times the number of its target's endpoints", registry=r)
        self.build_info = Gauge(
            "openai_exporter_build_info", "Build information of openai-exporter (always 1)",
            ["version"], registry=r)
        self.build_info.labels(__version__).set(1)
        # Where this instance stands in a fleet of exporters (docs/bundle.md#scale-out): a
        # shard that is missing or runs twice, or a fleet without exactly one primary,
        # shows in PromQL. `up` cannot show it: an instance never started has no `up`.
        self.shard_index = Gauge(
            "openai_exporter_shard_index",
            "This instance's shard (SHARD_INDEX, 0 to the shard count - 1): it probes the "
            "targets whose name hashes to it", registry=r)
        self.shards = Gauge(
            "openai_exporter_shards",
            "Number of shards the configured targets are split across (SHARD_COUNT; 1: not "
            "sharded)", registry=r)
        self.primary = Gauge(
            "openai_exporter_primary",
            "1 if this instance runs the once-per-fleet work (the organisation usage "
            "poller), else 0", registry=r)

    def configure(self, settings: Settings) -> None:
        """Create every series the configuration implies, so that rates and ratios
        read 0 instead of "No data" before the first error ever happens."""
        self.interval.set(settings.interval_seconds)
        self.shard_index.set(settings.shard_index)
        self.shards.set(settings.shard_count)
        self.primary.set(1 if settings.primary else 0)
        for t in settings.targets:
            for endpoint in t.probes:
                base = (t.name, t.region, endpoint, t.model_for(endpoint))
                self.requests.labels(*base, "success", "none")
                for error_type in ERROR_TYPES[1:]:
                    self.requests.labels(*base, "error", error_type)
                for status in ("success", "error"):
                    self.duration.labels(*base, status)
                if CATALOGUE[endpoint].model_kind:
                    for token_type in ("input", "output", "total"):
                        self.tokens.labels(*base, token_type)
                    self.cost.labels(*base)
                self.response_bytes.labels(t.name, t.region, endpoint)
                if CATALOGUE[endpoint].reader == "sse":
                    self.ttft.labels(*base)
                    self.tpot.labels(*base)
                for reason in SKIP_REASONS:
                    self.skipped.labels(t.name, endpoint, reason)

    def observe(self, result: ProbeResult) -> None:
        """Record one probe run. Safe to call from any thread."""
        r = result
        base = (r.target, r.region, r.endpoint, r.model)
        with self._lock:
            self.requests.labels(*base, r.status, r.error_type).inc()
            self.duration.labels(*base, r.status).observe(r.duration_seconds)
            if r.total_tokens or r.input_tokens or r.output_tokens:
                self.tokens.labels(*base, "input").inc(r.input_tokens)
                self.tokens.labels(*base, "output").inc(r.output_tokens)
                self.tokens.labels(*base, "total").inc(r.total_tokens)
            if r.cost_usd:
                self.cost.labels(*base).inc(r.cost_usd)
            self.response_bytes.labels(r.target, r.region, r.endpoint).inc(r.response_bytes)
            self.success.labels(*base).set(1 if r.success else 0)
            self.last_run.labels(r.target, r.region, r.endpoint).set(r.finished_at)
            if r.success:
                self.last_success.labels(r.target, r.region, r.endpoint).set(r.finished_at)
            if r.ttft_seconds is not None:
                self.ttft.labels(*base).observe(r.ttft_seconds)
            if r.tpot_seconds is not None:
                self.tpot.labels(*base).observe(r.tpot_seconds)
            if r.phases:
                # A phase the probe did not go through (tls on http://, first_token of a
                # JSON probe or of a stream cut before content) took 0 s: a stacked chart
                # of the phases then adds up to this probe, not to a mix of probes.
                for phase in PHASES:
                    self.phase.labels(r.target, r.region, r.endpoint, phase).set(
                        r.phases.get(phase, 0.0))
            self._observe_rate_limits(r)
            if r.http_status is not None:  # no answer (a timeout): nothing known of a wait
                self.retry_after.labels(*base).set(r.retry_after_seconds or 0.0)

    def skip(self, target: str, endpoint: str, reason: str) -> None:
        """Count one scheduled probe that did not run; `reason` is one of SKIP_REASONS."""
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; known: {', '.join(SKIP_REASONS)}")
        self.skipped.labels(target, endpoint, reason).inc()

    def _observe_rate_limits(self, r: ProbeResult) -> None:
        # Model-less endpoints (models, files, ...) share the org-wide limits upstream,
        # but the gauges are keyed by model: keep them to probes that name one.
        if not r.model:
            return
        lim = r.rate_limits
        if lim != RateLimits():
            self.rate_limit_updated.labels(r.target, r.region, r.model).set(r.finished_at)
        for (kind, field), value in (
            (("requests", "limit"), lim.requests_limit),
            (("requests", "remaining"), lim.requests_remaining),
            (("requests", "reset"), lim.requests_reset_seconds),
            (("tokens", "limit"), lim.tokens_limit),
            (("tokens", "remaining"), lim.tokens_remaining),
            (("tokens", "reset"), lim.tokens_reset_seconds),
        ):
            # An absent header leaves the last known value: 0 would read as "exhausted".
            if value is not None:
                self.rate_limit[(kind, field)].labels(r.target, r.region, r.model).set(value)


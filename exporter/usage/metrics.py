"""The organisation's usage, spend, projects and the poller's health as Prometheus
families, built fresh on every scrape from what the last polls recorded (one Collector on
the exporter's registry).

Counters (``openai_usage_*_total``) only ever grow by what the high-water marks let
through (marks.py). A series that does not exist yet is created at 0 and its first
increment is shown one poll later: Prometheus takes the first sample of a series as its
starting point, so an increment shown on the sample that creates the series would be
missing from ``increase()``. Spend, projects and limits are gauges replaced as a whole by
each successful read, so two exporters polling one organisation show the same values.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..result import ERROR_TYPES
from .kinds import FAMILIES, GROUP_BY_LABELS
from .store import SeriesKey

OVERFLOW = "__overflow__"  # the label value of everything past USAGE_MAX_SERIES
# What the poller can fail with: the probes' vocabulary, without what only a probe sees.
POLL_ERROR_TYPES = tuple(e for e in ERROR_TYPES if e not in ("none", "stream_interrupted"))
_SCHEDULED = " (read by the exporter's usage poller on its own timer, not at scrape time)."


class LabelCap:
    """At most `limit` distinct label sets: admit() says whether one gets its own series;
    the others share OVERFLOW values, so sums stay right and the series count bounded."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.admitted: set[tuple[str, ...]] = set()
        self.refused: set[tuple[str, ...]] = set()  # bounded too: see admit()

    def admit(self, key: tuple[str, ...]) -> bool:
        """True if `key` has (or now gets) its own series."""
        if key in self.admitted:
            return True
        if len(self.admitted) < self.limit:
            self.admitted.add(key)
            return True
        if len(self.refused) < self.limit:  # only for /status: how many were folded
            self.refused.add(key)
        return False


class UsageMetrics(Collector):
    """Every ``openai_usage_*``, ``openai_org_*`` and ``openai_project_*`` family."""

    def __init__(self, kinds: Iterable[str], group_by: Iterable[str],
                 endpoints: Iterable[str]) -> None:
        self.kinds = tuple(kinds)
        self.dim_labels = ["project", "model"] + [
            GROUP_BY_LABELS[g] for g in group_by if g not in ("project_id", "model")]
        self._lock = threading.Lock()
        self._round = 0
        self._values: dict[SeriesKey, float] = {}
        self._born: dict[SeriesKey, int] = {}
        self._pending: dict[SeriesKey, float] = {}
        self.corrections = {k: 0 for k in self.kinds}
        self.costs: dict[tuple[str, str, str], float] = {}
        self.projects: dict[tuple[str, str], float] = {}
        self.rate_limits: dict[tuple[str, str, str], float] = {}
        self.poll_success: dict[str, float] = {}
        self.poll_errors = {(e, t): 0.0 for e in endpoints for t in POLL_ERROR_TYPES}
        self.last_poll: float | None = None
        self.last_complete: dict[str, float] = {}

    # -- counters ----------------------------------------------------------------------
    def begin_round(self) -> None:
        """Start a poll: show the increments held back on series created earlier."""
        with self._lock:
            self._round += 1
            for key in [k for k, born in self._born.items() if born < self._round]:
                self._values[key] += self._pending.pop(key, 0.0)
                del self._born[key]

    def ensure(self, key: SeriesKey) -> None:
        """Create a series at 0 if it does not exist."""
        with self._lock:
            if key not in self._values:
                self._values[key] = 0.0
                self._born[key] = self._round

    def add(self, key: SeriesKey, amount: float) -> None:
        """Count `amount` on a series; on a series new this poll, one poll later."""
        with self._lock:
            if key not in self._values:
                self._values[key] = 0.0
                self._born[key] = self._round
            if key in self._born:
                self._pending[key] = self._pending.get(key, 0.0) + amount
            else:
                self._values[key] += amount

    def pending(self) -> dict[SeriesKey, float]:
        """Increments not shown yet (the store keeps them across a restart)."""
        with self._lock:
            return dict(self._pending)

    def restore_pending(self, pending: dict[SeriesKey, float]) -> None:
        """Increments a previous process held back: shown after this process's first poll."""
        with self._lock:
            for key, amount in pending.items():
                self._values.setdefault(key, 0.0)
                self._born[key] = self._round + 1
                self._pending[key] = self._pending.get(key, 0.0) + amount

    def series_count(self) -> int:
        """Usage counter series (openai_usage_*_total) exposed now."""
        with self._lock:
            return len(self._values)

    # -- gauges and health --------------------------------------------------------------
    def set_costs(self, costs: dict[tuple[str, str, str], float]) -> None:
        """Replace the spend gauges: (project, line_item, period) -> USD."""
        with self._lock:
            self.costs = dict(costs)

    def set_projects(self, projects: dict[tuple[str, str], float] | None = None,
                     limits: dict[tuple[str, str, str], float] | None = None) -> None:
        """Replace the project info gauges, the rate-limit gauges, or both."""
        with self._lock:
            if projects is not None:
                self.projects = dict(projects)
            if limits is not None:
                self.rate_limits = dict(limits)

    def polled(self, endpoint: str, error_type: str, complete_until: float | None) -> None:
        """Record one read: success (error_type "none") or its failure; `complete_until`
        is the end of the newest bucket that was complete when read."""
        with self._lock:
            self.poll_success[endpoint] = 1.0 if error_type == "none" else 0.0
            if error_type != "none":
                self.poll_errors[(endpoint, error_type)] = (
                    self.poll_errors.get((endpoint, error_type), 0.0) + 1)
            if complete_until is not None:
                self.last_complete[endpoint] = complete_until

    def correct(self, kind: str, n: int) -> None:
        """Count `n` buckets revised downward."""
        with self._lock:
            self.corrections[kind] = self.corrections.get(kind, 0) + n

    def round_done(self, ts: float) -> None:
        """A poll round finished at `ts` (Unix seconds)."""
        with self._lock:
            self.last_poll = ts

    # -- exposition ---------------------------------------------------------------------
    def describe(self) -> Iterable[Metric]:
        """The families without samples (for the registry's duplicate check)."""
        return list(self._families(empty=True))

    def collect(self) -> Iterable[Metric]:
        """Fresh families from the recorded values."""
        with self._lock:
            return list(self._families(empty=False))

    def _families(self, empty: bool) -> Iterator[Metric]:
        dims = self.dim_labels
        counters = {}
        for family, (name, help_text) in FAMILIES.items():
            labels = ["kind", *dims] + (["token_type"] if family == "tokens" else [])
            counters[family] = CounterMetricFamily(name, help_text + _SCHEDULED, labels=labels)
        if not empty:
            for (family, kind, values, token_type), value in sorted(self._values.items()):
                extra = [token_type] if family == "tokens" else []
                counters[family].add_metric([kind, *values, *extra], value)
        yield from counters.values()

        corrections = CounterMetricFamily(
            "openai_usage_corrections",
            "Usage buckets the API revised downward after they were counted (the counters "
            "never go down: they stay above the revised figures)" + _SCHEDULED,
            labels=["kind"])
        cost = GaugeMetricFamily(
            "openai_org_cost_usd",
            "Organisation spend in USD from the Costs API, UTC day or month so far"
            + _SCHEDULED, labels=["project", "line_item", "period"])
        info = GaugeMetricFamily(
            "openai_project_info", "Projects of the organisation (always 1)" + _SCHEDULED,
            labels=["project", "name"])
        limit = GaugeMetricFamily(
            "openai_project_rate_limit",
            "Rate limits configured per project and model: rpm, tpm, rpd, ipm (images per "
            "minute), audio_mbpm (audio MB per minute), batch_tpd (batch input tokens per "
            "day)" + _SCHEDULED, labels=["project", "model", "kind"])
        success = GaugeMetricFamily(
            "openai_usage_poll_success", "1 if the last read of this admin endpoint succeeded, "
            "else 0" + _SCHEDULED, labels=["endpoint"])
        errors = CounterMetricFamily(
            "openai_usage_poll_errors", "Failed reads of admin endpoints, by error_type"
            + _SCHEDULED, labels=["endpoint", "error_type"])
        last = GaugeMetricFamily(
            "openai_usage_last_poll_timestamp_seconds",
            "Unix time the last usage poll round finished" + _SCHEDULED)
        complete = GaugeMetricFamily(
            "openai_usage_last_complete_bucket_timestamp_seconds",
            "Unix time the newest bucket that was complete when last read successfully ends"
            + _SCHEDULED, labels=["endpoint"])
        if not empty:
            for kind, n in sorted(self.corrections.items()):
                corrections.add_metric([kind], n)
            tables: list[tuple[GaugeMetricFamily | CounterMetricFamily, dict[Any, float]]] = [
                (cost, self.costs), (info, self.projects), (limit, self.rate_limits),
                (errors, self.poll_errors)]
            for metric, table in tables:
                for labels, value in sorted(table.items()):
                    metric.add_metric(list(labels), value)
            for endpoint, value in sorted(self.poll_success.items()):
                success.add_metric([endpoint], value)
            if self.last_poll is not None:
                last.add_metric([], self.last_poll)
            for endpoint, value in sorted(self.last_complete.items()):
                complete.add_metric([endpoint], value)
        yield from (corrections, cost, info, limit, success, errors, last, complete)

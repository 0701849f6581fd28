"""The usage poller: on its own timer thread, each round reads every usage kind (one-minute
buckets over the lookback window, the current partial minute included), the month's
costs (one-day buckets), and hourly the projects and their rate limits; it feeds the
high-water marks (marks.py) and the families of UsageMetrics.

A round never blocks probes or scrapes (its own thread; scrapes read what the last round
recorded), one failing read never stops the others, and a round longer than the interval
skips the ticks it overran instead of piling up. docs/usage.md explains the counting.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from ..throttle import Throttle
from . import reads
from .client import AdminClient, AdminError, Truncated
from .kinds import KINDS, Kind
from .marks import Dims, KindMarks, Reading
from .metrics import OVERFLOW, LabelCap, UsageMetrics
from .store import MarkStore, SeriesKey

log = logging.getLogger("exporter.usage")

METADATA_SECONDS = 3600.0  # projects and rate limits change rarely: read them hourly
ERROR_LOG_SECONDS = 60.0  # at most one warning a minute about failing reads
META_ENDPOINTS = ("costs", "projects", "rate_limits")


@dataclass(frozen=True)
class PollerConfig:
    """What the poller needs from the settings."""

    base_url: str
    admin_key: str = field(repr=False)
    interval_seconds: float = 300.0
    lookback_minutes: int = 60
    kinds: tuple[str, ...] = tuple(KINDS)
    group_by: tuple[str, ...] = ("project_id", "model")
    max_series: int = 1000
    timeout_seconds: float = 12.0
    other_secrets: tuple[str, ...] = field(default=(), repr=False)  # masked in messages too


@dataclass
class Endpoint:
    """The last read of one admin endpoint, for /status."""

    error_type: str = ""  # "" before the first read, "none" after a success
    message: str = ""
    last_attempt: float | None = None
    last_success: float | None = None


class UsagePoller:
    """Polls the Usage, Costs and Projects APIs of one organisation."""

    def __init__(self, config: PollerConfig, metrics: UsageMetrics, store: MarkStore,
                 clock: Callable[[], float] = time.time,
                 client: AdminClient | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.store = store
        self.clock = clock
        self.client = client or AdminClient(config.base_url, config.admin_key,
                                            config.timeout_seconds, config.other_secrets)
        # The fields that fill the dimension labels: project and model always (the
        # contract's labels; "" when not grouped by them), then the opt-in ones.
        self.dim_fields = ["project_id", "model"] + [
            g for g in config.group_by if g not in ("project_id", "model")]
        # USAGE_MAX_SERIES bounds each kind of label set coming from the organisation.
        self.cap = LabelCap(config.max_series)  # (kind, project, model, ...) of the counters
        self.cost_cap = LabelCap(config.max_series)  # (project, line_item)
        self.project_cap = LabelCap(config.max_series)  # projects
        self.limit_cap = LabelCap(config.max_series)  # (project, model) of the rate limits
        self.project_ids: list[str] = []
        self.windows: dict[str, int] = {}  # kind -> start of its last window (monotonic)
        self.endpoints = {e: Endpoint() for e in (*config.kinds, *META_ENDPOINTS)}
        self.costs = reads.Costs(self.cost_cap)
        self.cost_totals: dict[str, float] = {}
        self.limits_dropped = 0
        self.polls = self.polls_skipped = 0
        self.last_duration: float | None = None
        self._metadata_at: float | None = None
        self._failing = False
        self._error_log = Throttle(ERROR_LOG_SECONDS)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        loaded = store.load(",".join(config.group_by),
                            {k: len(KINDS[k].fields) for k in config.kinds},
                            self._window_start(self.clock()))
        self.marks: dict[str, KindMarks] = loaded.marks
        self.started_at: dict[str, float] = loaded.started_at
        for kind, marks in self.marks.items():  # the series they counted keep their labels
            for _bucket, dims, _row in marks.rows():
                if OVERFLOW not in dims:
                    self.cap.admit((kind, *dims))
        metrics.restore_pending(loaded.pending)

    # -- the timer ------------------------------------------------------------------------
    def start(self) -> UsagePoller:
        """Poll now, then every interval, on a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="usage-poller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the timer without waiting for a read in flight; close the store."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=0.5)
        self.store.close()
        self.client.close()

    def _run(self) -> None:
        interval = self.config.interval_seconds
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.poll_once()
            except Exception:  # a bug must not end the timer
                log.exception("usage poll crashed")
            elapsed = time.monotonic() - started
            # Due one interval after this round started; a round that overran skips the
            # ticks it missed (counted in /status) rather than running them back to back.
            periods = max(1, math.ceil(elapsed / interval))
            self.polls_skipped += periods - 1
            if self._stop.wait(max(0.0, started + periods * interval - time.monotonic())):
                return

    # -- one round ------------------------------------------------------------------------
    def poll_once(self) -> None:
        """One round: every kind, the costs, and the projects when due."""
        t0 = time.monotonic()
        now = self.clock()
        self.metrics.begin_round()
        for kind in self.config.kinds:
            self._read(kind, lambda k=kind: self._poll_kind(KINDS[k], now), now)
        self._read("costs", lambda: self._poll_costs(now), now)
        due = self._metadata_at is None or now - self._metadata_at >= METADATA_SECONDS
        if (due and self._read("projects", self._poll_projects, now)
                and self._read("rate_limits", self._poll_limits, now)):
            self._metadata_at = now  # else both are read again next round
        self.polls += 1
        self.last_duration = time.monotonic() - t0
        self.metrics.round_done(self.clock())
        self._log_round()

    def _read(self, endpoint: str, read: Callable[[], float | None] | Callable[[], None],
              now: float) -> bool:
        """Run one read; record its outcome on the metrics and for /status."""
        state = self.endpoints[endpoint]
        state.last_attempt = now
        try:
            complete_until = read()
        except AdminError as exc:
            state.error_type, state.message = exc.error_type, exc.message
            self.metrics.polled(endpoint, exc.error_type,
                                exc.complete_until if isinstance(exc, _Partial) else None)
            return False
        state.error_type, state.message, state.last_success = "none", "", now
        self.metrics.polled(endpoint, "none", complete_until)
        return True

    def _log_round(self) -> None:
        failing = [(e, s) for e, s in self.endpoints.items()
                   if s.error_type not in ("", "none")]
        if not failing:
            if self._failing:
                log.info("usage poll: every read succeeds again")
            self._failing = False
            return
        self._failing = True
        if not self._error_log.ready():
            return  # one line a minute, however short the interval
        first = failing[0][1]
        log.warning("usage poll: %d of %d reads failing (%s); first: %s", len(failing),
                    len(self.endpoints), ", ".join(f"{e}={s.error_type}" for e, s in failing),
                    first.message)

    # -- usage --------------------------------------------------------------------------
    def _window_start(self, now: float) -> int:
        return int(now // 60) * 60 - self.config.lookback_minutes * 60

    def _poll_kind(self, kind: Kind, now: float) -> float:
        window_start = self._window_start(now)
        last = self.windows.get(kind.name)
        if last is not None and 0 < last - window_start <= self.config.lookback_minutes * 60:
            # The wall clock stepped back: buckets before the last window have no marks any
            # more and would be counted again. (A step back longer than the lookback means
            # the clock was wrong before: follow it.)
            window_start = last
        params = [("start_time", str(window_start)), ("bucket_width", "1m"),
                  ("limit", str(min(1440, self.config.lookback_minutes + 1)))]
        params += [("group_by[]", g) for g in self.config.group_by]
        partial: Truncated | None = None
        try:
            pages = self.client.pages(f"/organization/usage/{kind.name}", params)
        except Truncated as exc:
            pages, partial = exc.pages, exc
        buckets = reads.usage_rows(kind, pages, self.dim_fields, self.cap)
        reading = Reading(window_start, buckets, complete=partial is None)
        self._count(kind, reading, now)
        complete_until = float(int(now // 60) * 60)  # the current minute is still filling
        if partial is not None:
            raise _Partial(partial.message, complete_until)
        return complete_until

    def _count(self, kind: Kind, reading: Reading, now: float) -> None:
        marks = self.marks.get(kind.name)
        baseline = marks is None
        if marks is None:
            marks = self.marks[kind.name] = KindMarks(len(kind.fields))
            self.started_at[kind.name] = now
        out = marks.apply(reading, baseline=baseline)
        if baseline:  # the series exist from the first poll on, at 0
            for rows in reading.buckets.values():
                for dims, values in rows.items():
                    for f, value in zip(kind.fields, values, strict=True):
                        if value is not None:
                            self.metrics.ensure(_series(kind.name, dims, f.family,
                                                        f.token_type))
        for dims, i, amount in out.increments:
            f = kind.fields[i]
            self.metrics.add(_series(kind.name, dims, f.family, f.token_type), amount)
        if out.corrections:
            self.metrics.correct(kind.name, out.corrections)
        self.windows[kind.name] = reading.window_start
        self.store.save(kind.name, marks, out.changed, reading.window_start,
                        self.started_at[kind.name], self.metrics.pending())

    # -- costs, projects, rate limits -----------------------------------------------------
    def _poll_costs(self, now: float) -> float:
        day_start = int(now // 86400) * 86400
        today = datetime.fromtimestamp(now, tz=timezone.utc)
        month_start = int(datetime(today.year, today.month, 1, tzinfo=timezone.utc).timestamp())
        params = [("start_time", str(month_start)), ("bucket_width", "1d"), ("limit", "31"),
                  ("group_by[]", "project_id"), ("group_by[]", "line_item")]
        gauges, self.cost_totals = self.costs.gauges(
            self.client.pages("/organization/costs", params), day_start)
        self.metrics.set_costs(gauges)
        return float(day_start)

    def _poll_projects(self) -> None:
        info, self.project_ids = reads.projects(self.client.items("/organization/projects", 100),
                                                self.project_cap)
        self.metrics.set_projects(projects=info)

    def _poll_limits(self) -> None:
        limits: dict[tuple[str, str, str], float] = {}
        dropped = 0
        for pid in self.project_ids:
            items = self.client.items(f"/organization/projects/{quote(pid, safe='')}/rate_limits",
                                      100)
            dropped += reads.rate_limits(pid, items, self.limit_cap, limits)
        self.metrics.set_projects(limits=limits)
        self.limits_dropped = dropped

    # -- /status ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What /status shows (Unix seconds; the web layer writes the times)."""
        c = self.config
        return {
            "enabled": True,
            "base_url": c.base_url,
            "poll_interval_seconds": c.interval_seconds,
            "lookback_minutes": c.lookback_minutes,
            "kinds": list(c.kinds),
            "group_by": list(c.group_by),
            "max_series": c.max_series,
            "marks": self.store.backend,
            "counting_since": dict(self.started_at),
            "polls": self.polls,
            "polls_skipped": self.polls_skipped,
            "last_poll": self.metrics.last_poll,
            "last_poll_duration_seconds": self.last_duration,
            "endpoints": {name: {"success": None if not e.error_type else e.error_type == "none",
                                 "error_type": e.error_type or None, "message": e.message,
                                 "last_attempt": e.last_attempt, "last_success": e.last_success}
                          for name, e in self.endpoints.items()},
            "cost_usd": dict(self.cost_totals) or None,
            "corrections": dict(self.metrics.corrections),
            # What USAGE_MAX_SERIES kept out: label sets folded into __overflow__ series,
            # projects and (project, model) rate limits left out.
            "series": {"usage": self.metrics.series_count(),
                       "usage_folded": len(self.cap.refused),
                       "costs_folded": len(self.cost_cap.refused),
                       "projects_left_out": len(self.project_cap.refused),
                       "rate_limits_left_out": self.limits_dropped},
        }


class _Partial(AdminError):
    """A read that counted what it got but could not read everything."""

    def __init__(self, message: str, complete_until: float) -> None:
        super().__init__("invalid_response", message)
        self.complete_until = complete_until


def _series(kind: str, dims: Dims, family: str, token_type: str) -> SeriesKey:
    return (family, kind, dims, token_type)


__all__ = ["PollerConfig", "UsagePoller"]

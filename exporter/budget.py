"""The probe budget guard: PROBE_BUDGET_USD_PER_DAY caps what the probes themselves spend.

The guard is one more sink (``observe``: each probe's estimated cost goes into a rolling
24-hour sum of per-minute slots) and the probe loop's gate (``allow``, asked before each
probe). Once the sum reaches the budget, paid probes pause (each pause counts in
``openai_probe_skipped_total{reason="budget"}``) while free ones (``Probe.free``: lists,
moderations) go on; ``openai_probe_budget_exhausted`` is 1 and one line is logged. When
spend rolls out of the 24 hours and the sum is under the budget again, they resume, with
one line more. Unset, nothing is ever paused.

The sum lives in memory. At start it is seeded from the probe history, which with
ENABLE_DB=1 survived the restart (in 15-minute chunks, each counted until its last minute
leaves the 24 hours: up to 15 minutes late to resume, never early).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from .catalogue import CATALOGUE
from .history import History
from .result import ProbeResult

log = logging.getLogger("exporter.budget")

WINDOW_MINUTES = 1440
SEED_CHUNK_MINUTES = 15  # the history's coarse bucket: one aggregate row per endpoint


class BudgetGuard:
    """Pauses paid probes while their spend over the last 24 hours is at the budget."""

    def __init__(self, budget_usd: float | None, registry: CollectorRegistry,
                 skip: Callable[[str, str, str], None],
                 clock: Callable[[], float] = time.time) -> None:
        self.budget = budget_usd
        self.clock = clock
        self._skip = skip
        self._lock = threading.Lock()
        self._minutes: dict[int, float] = {}  # minute (Unix seconds // 60) -> USD
        self._total = 0.0
        self.exhausted = False
        self.gauge = Gauge(
            "openai_probe_budget_exhausted",
            "1 while paid probes are paused because their estimated spend over the last 24 "
            "hours reached PROBE_BUDGET_USD_PER_DAY, else 0", registry=registry)
        self.gauge.set(0)

    def seed(self, history: History) -> None:
        """Add the probes' spend of the last 24 hours that the history kept."""
        if self.budget is None:
            return
        last = int(self.clock() // 60)
        first = last - WINDOW_MINUTES + 1
        minute = first
        while minute <= last:
            end = min(last, minute - minute % SEED_CHUNK_MINUTES + SEED_CHUNK_MINUTES - 1)
            cost = history.status(end - minute + 1, now=end * 60 + 59.0).overall.figures.cost_usd
            if cost:
                self._add(end, cost)
            minute = end + 1
        self._update()

    def observe(self, result: ProbeResult) -> None:
        """Sink: count one probe's estimated cost."""
        if self.budget is None or not result.cost_usd:
            return
        self._add(int(result.started_at // 60), result.cost_usd)
        self._update()

    def allow(self, target: str, endpoint: str) -> bool:
        """Gate: may this probe run now? Free probes always may."""
        if self.budget is None or CATALOGUE[endpoint].free:
            return True
        if self._update():
            return True
        self._skip(target, endpoint, "budget")
        return False

    def spent(self) -> float:
        """USD the probes spent over the last 24 hours (estimated)."""
        with self._lock:
            self._expire(int(self.clock() // 60))
            return self._total

    def status(self) -> dict[str, Any]:
        """What /status shows of the guard."""
        return {"budget_usd_per_day": self.budget, "spent_usd_24h": round(self.spent(), 6),
                "exhausted": self.exhausted,
                "paused": sorted(name for name, p in CATALOGUE.items() if not p.free)
                if self.exhausted else []}

    def _add(self, minute: int, usd: float) -> None:
        with self._lock:
            self._minutes[minute] = self._minutes.get(minute, 0.0) + usd
            self._total += usd

    def _expire(self, now_minute: int) -> None:
        for minute in [m for m in self._minutes if m <= now_minute - WINDOW_MINUTES]:
            self._total -= self._minutes.pop(minute)
        if not self._minutes:
            self._total = 0.0  # no float residue once everything has rolled out

    def _update(self) -> bool:
        """Recompute the state; log and set the gauge on a change. True if under budget."""
        assert self.budget is not None
        spent = self.spent()
        with self._lock:
            over = spent >= self.budget
            changed, self.exhausted = over != self.exhausted, over
        if changed:
            self.gauge.set(1 if over else 0)
            if over:
                log.warning("probe budget reached: %.4f USD spent over the last 24 h of "
                            "%.4f USD (PROBE_BUDGET_USD_PER_DAY); paid probes pause, free "
                            "ones go on", spent, self.budget)
            else:
                log.info("probe budget: %.4f USD spent over the last 24 h, under %.4f USD; "
                         "paid probes resume", spent, self.budget)
        return not over

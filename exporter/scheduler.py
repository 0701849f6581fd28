"""The probe loop: APScheduler jobs that run probes and hand each ProbeResult to the sinks.

Modes:
- ``all``: one job per target x endpoint, all due every interval and run side by side
  in a bounded thread pool, so one endpoint hanging until its timeout delays nothing else.
- ``roundrobin``: one job per target; each tick probes that target's next endpoint.
A job never overlaps itself (max_instances=1): a tick that finds the previous run of
the same probe still going is skipped, not queued.
"""

from __future__ import annotations

import itertools
import logging
import threading
from datetime import datetime, timezone
from collections.abc import Callable, Iterable

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from .prober import Prober
from .result import ProbeResult
from .settings import Settings

log = logging.getLogger("exporter.scheduler")

Sink = Callable[[ProbeResult], None]
Gate = Callable[[str, str], bool]  # (target, endpoint) -> may it run now (budget.py)


class ProbeLoop:
    def __init__(self, settings: Settings, probers: Iterable[Prober],
                 sinks: Iterable[Sink], gate: Gate | None = None) -> None:
        self.settings = settings
        self.gate = gate
        self.probers = list(probers)
        self.sinks = list(sinks)
        self._cycles: dict[str, itertools.cycle] = {}
        self._cycle_lock = threading.Lock()
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(settings.max_workers)},
            job_defaults={"max_instances": 1, "coalesce": True,
                          "misfire_grace_time": max(1, int(settings.interval_seconds))},
            timezone=timezone.utc,
        )

    def start(self) -> None:
        now = datetime.now(timezone.utc)
        interval = self.settings.interval_seconds
        for prober in self.probers:
            name = prober.target.name
            if self.settings.mode == "all":
                for endpoint in prober.target.probes:
                    self.scheduler.add_job(
                        self.run_one, "interval", args=(prober, endpoint), seconds=interval,
                        next_run_time=now, id=f"{name}/{endpoint}", name=f"probe {name}/{endpoint}")
            else:
                self._cycles[name] = itertools.cycle(prober.target.probes)
                self.scheduler.add_job(
                    self.run_next, "interval", args=(prober,), seconds=interval,
                    next_run_time=now, id=name, name=f"probe {name} (roundrobin)")
        self.scheduler.start()

    def stop(self) -> None:
        # wait=False: a probe blocked on a hanging upstream must not hold up shutdown.
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for prober in self.probers:
            prober.close()

    def run_next(self, prober: Prober) -> ProbeResult | None:
        with self._cycle_lock:
            endpoint = next(self._cycles[prober.target.name])
        return self.run_one(prober, endpoint)

    def run_one(self, prober: Prober, endpoint: str) -> ProbeResult | None:
        """Probe once and feed every sink; a failing sink never stops the loop."""
        if self.gate is not None and not self.gate(prober.target.name, endpoint):
            return None  # paused (the gate counts the skip)
        try:
            result = prober.run(endpoint)
        except Exception:  # a bug in the prober must not kill the schedule
            log.exception("probe %s/%s crashed", prober.target.name, endpoint)
            return None
        for sink in self.sinks:
            try:
                sink(result)
            except Exception:
                log.exception("sink %s failed on %s/%s", getattr(sink, "__qualname__", sink),
                              result.target, result.endpoint)
        return result

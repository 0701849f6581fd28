"""The probe loop: jobs on the monotonic clock that run probes and hand each ProbeResult to
the sinks.

Modes:
- ``all``: one job per target x endpoint, each due every interval.
- ``roundrobin``: one job per target; each tick probes that target's next endpoint.

Isolation: a job never overlaps itself, and every job has its own slot. Probes run on an
elastic pool that starts a thread whenever all of its threads are busy, so there are never
more threads than probes in flight, and never more probes in flight than jobs (at most
``MAX_JOBS``, checked by exporter/settings/jobs.py): one endpoint or target hanging until
its timeout costs nobody else a tick. A tick that finds the job's previous run still going
is skipped, counted (``on_skip``: ``openai_probe_skipped_total{reason="still_running"}``)
and logged at most once a minute per target x endpoint.

Jitter: each job starts at a stable offset into the interval, from a BLAKE2 hash of its
name (target/endpoint in ``all``, the target in ``roundrobin``), as Prometheus spreads its
scrapes; the first probe of each job starts within one interval of ``start()``.

Time: due times are on the monotonic clock (``clock``, injectable for tests), so a step of
the wall clock (NTP, a VM resumed) changes nothing; ``started_at`` in a ProbeResult is a
wall-clock timestamp, taken by the prober. A timer late by more than an interval (the
process stopped) runs each due job once, not once per missed tick.

Stop: ``stop()`` starts no new probe, waits for the probes in flight and their sinks
(bounded by the probe timeout + ``DRAIN_MARGIN_SECONDS``), then closes the probers.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .prober import Prober
from .result import ProbeResult
from .settings import Settings
from .throttle import Throttle

log = logging.getLogger("exporter.scheduler")

Sink = Callable[[ProbeResult], None]
Gate = Callable[[str, str], bool]  # (target, endpoint) -> may it run now (budget.py)
OnSkip = Callable[[str, str, str], None]  # (target, endpoint, reason), metrics.skip
Clock = Callable[[], float]

DRAIN_MARGIN_SECONDS = 2.0  # past the probe timeout, for the sinks (an fsynced write)
SKIP_LOG_SECONDS = 60.0  # at most one "still running" line per target x endpoint this often
MAX_WAIT_SECONDS = 3600.0  # the timer's longest sleep (no job; past the stop)

__all__ = ["DRAIN_MARGIN_SECONDS", "ProbeLoop", "offset_fraction"]


def offset_fraction(name: str) -> float:
    """Where in the interval the job called `name` starts, in [0, 1): the same for the same
    name in every process (BLAKE2, not Python's salted hash())."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


@dataclass(eq=False)
class _Job:
    name: str  # "target/endpoint" (all) or "target" (roundrobin)
    prober: Prober
    endpoint: str | None  # None: the target's next endpoint in the cycle (roundrobin)
    offset: float  # seconds into the interval
    due: float = math.inf  # monotonic time of the next tick
    running: str | None = None  # the endpoint in flight, None when idle
    ticks: int = 0  # ticks that started a probe


class _Pool:
    """Threads that run job bodies. `submit` hands the body to an idle thread or starts a
    new one, so a body never waits for another; threads stay for the next ticks."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0

    @property
    def threads(self) -> int:
        with self._lock:
            return self._threads

    def submit(self, body: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1  # that thread takes this body
            else:
                self._threads += 1
                threading.Thread(target=self._work, name=f"{self._name}-{self._threads}",
                                 daemon=True).start()
        self._queue.put(body)

    def _work(self) -> None:
        while True:
            body = self._queue.get()
            if body is None:
                return
            try:
                body()
            except Exception:  # pragma: no cover - run_one catches everything itself
                log.exception("probe thread: unexpected error")
            with self._lock:
                self._idle += 1

    def close(self) -> None:
        """Let every thread end once it is idle (a thread still probing ends after)."""
        with self._lock:
            count = self._threads
        for _ in range(count):
            self._queue.put(None)


class ProbeLoop:
    def __init__(self, settings: Settings, probers: Iterable[Prober],
                 sinks: Iterable[Sink], gate: Gate | None = None, *,
                 on_skip: OnSkip | None = None, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self.gate = gate
        self.on_skip = on_skip
        self.clock = clock
        self.probers = list(probers)
        self.sinks = list(sinks)
        self.interval = float(settings.interval_seconds)
        self.drain_seconds = settings.timeout_seconds + DRAIN_MARGIN_SECONDS
        self._cycles: dict[str, Iterator[str]] = {}
        self._cycle_lock = threading.Lock()
        self.jobs: list[_Job] = []
        for prober in self.probers:
            name = prober.target.name
            if settings.mode == "all":
                for endpoint in prober.target.probes:
                    key = f"{name}/{endpoint}"
                    self.jobs.append(_Job(key, prober, endpoint,
                                          offset_fraction(key) * self.interval))
            else:
                self._cycles[name] = itertools.cycle(prober.target.probes)
                if prober.target.probes:
                    self.jobs.append(_Job(name, prober, None,
                                          offset_fraction(name) * self.interval))
        self._lock = threading.Condition()
        self._in_flight = 0
        self._stopping = threading.Event()
        self._closed = False  # past the drain: late results reach no sink
        self._timer: threading.Thread | None = None
        self._pool = _Pool("probe")
        self._skip_log = Throttle(SKIP_LOG_SECONDS, clock=clock)
        self._skipped: dict[tuple[str, str], int] = {}

    # -- schedule -------------------------------------------------------------------------

    def schedule(self, now: float | None = None) -> None:
        """Set every job's first tick at its offset from `now` (the clock's, by default)."""
        now = self.clock() if now is None else now
        with self._lock:
            for job in self.jobs:
                job.due = now + job.offset

    def start(self) -> None:
        """Schedule the jobs and start the timer thread."""
        self.schedule()
        log.info("probe loop: %d job(s) (%s mode), every %g s, starts spread over the "
                 "interval", len(self.jobs), self.settings.mode, self.interval)
        self._timer = threading.Thread(target=self._run_timer, name="probe-timer", daemon=True)
        self._timer.start()

    def _run_timer(self) -> None:
        while not self._stopping.is_set():
            delay = self.tick()  # inf once stopping, which Event.wait cannot take
            # Event.wait times out on the monotonic clock: a wall-clock step is invisible.
            self._stopping.wait(min(delay, MAX_WAIT_SECONDS))

    def tick(self) -> float:
        """Start every job that is due; return the seconds until the next one is.

        A job whose previous run is still going is skipped for this tick. A job more than
        one interval behind (the timer was late) runs once and moves to its next tick."""
        now = self.clock()
        due: list[_Job] = []
        with self._lock:
            if self._stopping.is_set():
                return math.inf
            for job in self.jobs:
                if job.due <= now:
                    due.append(job)
                    behind = math.floor((now - job.due) / self.interval) + 1
                    job.due += behind * self.interval
            for job in due:
                self._fire(job)
            next_due = min((job.due for job in self.jobs), default=math.inf)
        return max(0.0, next_due - now) if next_due != math.inf else MAX_WAIT_SECONDS

    def _fire(self, job: _Job) -> None:
        """Start `job` on the pool, or count the tick skipped (called under the lock)."""
        if job.running is not None:
            self._skip(job.prober.target.name, job.running)
            return
        endpoint = job.endpoint or self._next_endpoint(job.prober)
        job.running = endpoint
        job.ticks += 1
        self._in_flight += 1
        self._pool.submit(lambda: self._run_job(job, endpoint))

    def _run_job(self, job: _Job, endpoint: str) -> None:
        try:
            self.run_one(job.prober, endpoint)
        finally:
            with self._lock:
                job.running = None
                self._in_flight -= 1
                self._lock.notify_all()

    def _skip(self, target: str, endpoint: str) -> None:
        if self.on_skip is not None:
            try:
                self.on_skip(target, endpoint, "still_running")
            except Exception:
                log.exception("counting a skipped tick of %s/%s failed", target, endpoint)
        key = (target, endpoint)
        count = self._skipped[key] = self._skipped.get(key, 0) + 1
        if self._skip_log.ready(key):
            self._skipped[key] = 0
            log.warning("probe %s/%s was still running at its next tick: skipped %d tick(s) "
                        "since the last such line (interval %g s, timeout %g s; counted in "
                        "openai_probe_skipped_total{reason=\"still_running\"})",
                        target, endpoint, count, self.interval, self.settings.timeout_seconds)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def threads(self) -> int:
        """Probe threads started so far (never more than the peak of probes in flight)."""
        return self._pool.threads

    # -- stop -----------------------------------------------------------------------------

    def stop(self, drain_seconds: float | None = None) -> bool:
        """Start no new probe; wait up to `drain_seconds` (the probe timeout + a margin by
        default) for the probes in flight and their sinks; close the probers. True when
        every probe in flight finished in time."""
        self._stopping.set()
        if self._timer is not None:
            self._timer.join()
        wait = self.drain_seconds if drain_seconds is None else drain_seconds
        with self._lock:
            pending = self._in_flight
            drained = self._lock.wait_for(lambda: self._in_flight == 0, timeout=wait)
            left = self._in_flight
            self._closed = True
        if pending:
            if drained:
                log.info("stopping: %d probe(s) in flight finished and were recorded", pending)
            else:
                log.warning("stopping: %d probe(s) still in flight after %g s, not recorded",
                            left, wait)
        self._pool.close()
        for prober in self.probers:
            prober.close()
        return drained

    # -- one probe ------------------------------------------------------------------------

    def _next_endpoint(self, prober: Prober) -> str:
        """The next endpoint of `prober`'s target in its roundrobin cycle."""
        with self._cycle_lock:
            return next(self._cycles[prober.target.name])

    def run_next(self, prober: Prober) -> ProbeResult | None:
        return self.run_one(prober, self._next_endpoint(prober))

    def run_one(self, prober: Prober, endpoint: str) -> ProbeResult | None:
        """Probe once and feed every sink; a failing sink never stops the loop."""
        if self.gate is not None and not self.gate(prober.target.name, endpoint):
            return None  # paused (the gate counts the skip)
        try:
            result = prober.run(endpoint)
        except Exception:  # a bug in the prober must not kill the schedule
            log.exception("probe %s/%s crashed", prober.target.name, endpoint)
            return None
        if self._closed:  # finished after the drain: the stores may be closed already
            log.debug("probe %s/%s finished after shutdown; not recorded",
                      prober.target.name, endpoint)
            return result
        for sink in self.sinks:
            try:
                sink(result)
            except Exception:
                log.exception("sink %s failed on %s/%s", getattr(sink, "__qualname__", sink),
                              result.target, result.endpoint)
        return result

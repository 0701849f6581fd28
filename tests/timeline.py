"""A simulated timeline of the exporter at its shipped defaults, written as OpenMetrics.

The real exporter code runs in-process against the fake upstream: the shipped settings
(`load([], env)` with only a key and the fake's URL), the real Prober, the real
ExporterMetrics (and BudgetGuard) sinks and, with an admin key, the real usage poller. What
is simulated is the clock: probes run in the order and at the cadence the shipped schedule
gives them (roundrobin: each target's next endpoint every interval; all: every endpoint
every interval; each job from its offset into the interval, as exporter/scheduler.py),
each ProbeResult is stamped with its simulated start before it reaches the sinks, and
the registry is rendered (what `/metrics` serves) at every simulated scrape of the shipped
prometheus/prometheus.yml. The fake's rate-limit windows and organisation, and the usage
poller, read the same simulated clock. Real probes take real (milliseconds of)
time; the fake's chaos latency is scaled down by TIME_SCALE and the measured durations
scaled back up, so a 75-minute timeline runs in seconds with the chaos profile's
latencies.

tests/prom.py turns the file into a TSDB (promtool tsdb create-blocks-from openmetrics).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.utils import floatToGoString

from exporter.budget import BudgetGuard
from exporter.fake import FakeUpstream
from exporter.metrics import ExporterMetrics
from exporter.pricing import PriceTable
from exporter.prober import Prober
from exporter.result import ProbeResult
from exporter.scheduler import offset_fraction
from exporter.settings import Settings, load
from exporter.usage.metrics import UsageMetrics
from exporter.usage.poller import META_ENDPOINTS, UsagePoller
from exporter.usage.setup import poller_config
from exporter.usage.store import MemoryMarks

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_YML = ROOT / "prometheus" / "prometheus.yml"
JOB = "openai-exporter"
INSTANCE = "exporter:9188"  # the compose stack's scrape target
TIME_SCALE = 0.1  # the fake's chaos latency runs 10 times faster; durations are scaled back
API_KEY = "sk-test-timeline-0000"
ADMIN_KEY = "sk-admin-test-timeline-0000"


def scrape_interval() -> float:
    """The shipped Prometheus scrape interval, in seconds."""
    text = yaml.safe_load(PROMETHEUS_YML.read_text())["global"]["scrape_interval"]
    m = re.fullmatch(r"(\d+)([sm])", text)
    assert m, text
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


class SimClock:
    """The simulated wall clock every component reads."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def schedule(settings: Settings, start: float, end: float) -> list[tuple[float, str, str]]:
    """(time, target, endpoint) of every probe the shipped schedule runs in [start, end):
    each job's first tick at its offset into the interval (the scheduler's
    offset_fraction of its name), then one every interval."""
    out = []
    interval = settings.interval_seconds

    def ticks(name: str) -> list[float]:
        first = start + offset_fraction(name) * interval
        return [first + i * interval for i in range(int(math.ceil((end - first) / interval)))]

    for target in settings.targets:
        if settings.mode == "all":
            out += [(t, target.name, e) for e in target.probes
                    for t in ticks(f"{target.name}/{e}")]
        elif target.probes:
            out += [(t, target.name, target.probes[i % len(target.probes)])
                    for i, t in enumerate(ticks(target.name))]
    return sorted(out)


def _retimed(r: ProbeResult, started_at: float, scale: float) -> ProbeResult:
    """The result as if it had started at `started_at`, its durations scaled by `scale`."""
    def up(x: float | None) -> float | None:
        return None if x is None else x * scale
    return dataclasses.replace(
        r, started_at=started_at, duration_seconds=r.duration_seconds * scale,
        ttft_seconds=up(r.ttft_seconds), tpot_seconds=up(r.tpot_seconds),
        phases={k: v * scale for k, v in r.phases.items()})


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@dataclass
class Timeline:
    """Samples by family: name -> (metadata lines, {series line prefix: [(ts, value)]})."""

    start: float
    end: float
    settings: Settings
    probes: list[tuple[float, str, str, ProbeResult]] = field(default_factory=list)
    meta: dict[str, list[str]] = field(default_factory=dict)
    samples: dict[str, dict[str, list[tuple[float, str]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list)))

    def scrape(self, registry: CollectorRegistry, ts: float) -> None:
        """Record what `/metrics` would serve at `ts`: every sample of the registry (the
        `_created` ones aside: the exporter turns them off), with the scrape's labels."""
        extra = f'instance="{INSTANCE}",job="{JOB}"'
        for family in registry.collect():
            self.meta.setdefault(family.name, [
                f"# HELP {family.name} {_escape(family.documentation)}",
                f"# TYPE {family.name} {family.type}"])
            series = self.samples[family.name]
            for s in family.samples:
                if s.name.endswith("_created"):
                    continue
                labels = "".join(f',{k}="{_escape(v)}"' for k, v in sorted(s.labels.items()))
                series[f"{s.name}{{{extra}{labels}}}"].append((ts, floatToGoString(s.value)))

    def add_up(self, ts: float) -> None:
        self.meta.setdefault("up", ["# TYPE up gauge"])
        self.samples["up"][f'up{{instance="{INSTANCE}",job="{JOB}"}}'].append((ts, "1"))

    def write_openmetrics(self, path: Path) -> Path:
        """Families one after the other, each series' samples in time order, `# EOF`."""
        lines = []
        for family, series in self.samples.items():
            lines += self.meta.get(family, [])
            for prefix, points in series.items():
                lines += [f"{prefix} {value} {ts:.3f}" for ts, value in points]
        path.write_text("\n".join(lines) + "\n# EOF\n")
        return path


def simulate(profile: str, start: float, minutes: float, *, seed: int = 1,
             admin: bool = True,
             env: dict[str, str] | None = None) -> Timeline:
    """Run the shipped defaults for `minutes` of simulated time from `start` (Unix s)
    against the fake upstream in `profile`; every scrape of the shipped interval recorded."""
    clock = SimClock(start)
    end = start + minutes * 60
    with FakeUpstream(profile=profile, seed=seed, time_scale=TIME_SCALE,
                      clock=clock) as fake:
        fake.org.clock = clock
        settings = load([], {"OPENAI_API_KEY": API_KEY,
                             "OPENAI_BASE_URL": fake.base_url,
                             **({"OPENAI_ADMIN_KEY": ADMIN_KEY} if admin else {}),
                             **(env or {})})
        metrics = ExporterMetrics()
        metrics.configure(settings)
        guard = BudgetGuard(settings.probe_budget_usd_per_day, metrics.registry,
                            lambda t, e, reason: metrics.skip(t, e, reason), clock=clock)
        prices = PriceTable(settings.prices)
        probers = {t.name: Prober(t, timeout_seconds=settings.timeout_seconds, prices=prices)
                   for t in settings.targets}
        poller = None
        config = poller_config(settings)
        if config is not None:
            usage = UsageMetrics(config.kinds, config.group_by,
                                 (*config.kinds, *META_ENDPOINTS))
            poller = UsagePoller(config, usage, MemoryMarks(), clock=clock)
            metrics.registry.register(usage)
        sinks: list[Callable[[ProbeResult], None]] = [metrics.observe, guard.observe]
        timeline = Timeline(start, end, settings)
        events: list[tuple[float, int, str, str]] = [
            (t, 1, target, endpoint) for t, target, endpoint in schedule(settings, start, end)]
        step = scrape_interval()
        # The first scrape lands half an interval after the exporter started.
        events += [(start + step / 2 + i * step, 2, "", "")
                   for i in range(int((end - start - step / 2) // step) + 1)]
        if poller is not None:
            every = settings.usage_poll_interval_seconds
            events += [(start + i * every, 0, "", "")
                       for i in range(int((end - start) // every) + 1)]
        try:
            for t, kind, target, endpoint in sorted(events):
                clock.t = t
                if kind == 0:
                    assert poller is not None
                    poller.poll_once()
                elif kind == 1:
                    if not guard.allow(target, endpoint):
                        continue
                    r = _retimed(probers[target].run(endpoint), t, 1 / TIME_SCALE
                                 if profile == "chaos" else 1.0)
                    timeline.probes.append((t, target, endpoint, r))
                    for sink in sinks:
                        sink(r)
                else:
                    timeline.scrape(metrics.registry, t)
                    timeline.add_up(t)
        finally:
            for p in probers.values():
                p.close()
            if poller is not None:
                poller.client.close()
    return timeline

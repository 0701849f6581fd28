"""Helpers of the usage tests: a settable clock, a poller on a fake upstream, and sums of
what the counters show."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from exporter.fake import FakeUpstream
from exporter.usage.metrics import UsageMetrics
from exporter.usage.poller import META_ENDPOINTS, PollerConfig, UsagePoller
from exporter.usage.store import MemoryMarks, SQLiteMarks
from tests.conftest import ADMIN_CANARY_KEY
from tests.conftest import Clock as _Clock

ADMIN_KEY = ADMIN_CANARY_KEY
# 2027-01-15T08:00:00Z plus 17 s: mid-month, mid-day, mid-minute.
T0 = 1_800_000_017.0
# (kind, field of the API, counter family, token_type)
FIELDS = [
    ("completions", "input_tokens", "openai_usage_tokens_total", "input"),
    ("completions", "output_tokens", "openai_usage_tokens_total", "output"),
    ("completions", "input_cached_tokens", "openai_usage_tokens_total", "input_cached"),
    ("completions", "input_audio_tokens", "openai_usage_tokens_total", "input_audio"),
    ("completions", "output_audio_tokens", "openai_usage_tokens_total", "output_audio"),
    ("completions", "num_model_requests", "openai_usage_requests_total", ""),
    ("embeddings", "input_tokens", "openai_usage_tokens_total", "input"),
    ("moderations", "num_model_requests", "openai_usage_requests_total", ""),
    ("images", "images", "openai_usage_images_total", ""),
    ("audio_speeches", "characters", "openai_usage_characters_total", ""),
    ("audio_transcriptions", "seconds", "openai_usage_seconds_total", ""),
]
_FAMILY = {"openai_usage_tokens_total": "tokens", "openai_usage_requests_total": "requests",
           "openai_usage_images_total": "images",
           "openai_usage_characters_total": "characters",
           "openai_usage_seconds_total": "seconds"}


@dataclass
class Rig:
    """A poller, its metrics and registry, on a fake upstream driven by one clock."""

    poller: UsagePoller
    metrics: UsageMetrics
    registry: CollectorRegistry

    def poll(self) -> None:
        self.poller.poll_once()

    def value(self, metric: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(metric, labels)

    def shown(self, name: str, kind: str, token_type: str = "") -> float:
        """What the counter shows summed over projects and models."""
        total = 0.0
        for family in self.registry.collect():
            for s in family.samples:
                if (s.name == name and s.labels["kind"] == kind
                        and s.labels.get("token_type", "") == token_type):
                    total += s.value
        return total

    def counted(self, name: str, kind: str, token_type: str = "") -> float:
        """Shown plus held back for a series created this poll."""
        held = sum(v for (f, k, _, t), v in self.metrics.pending().items()
                   if f == _FAMILY[name] and k == kind and t == token_type)
        return self.shown(name, kind, token_type) + held


class Clock(_Clock):
    """The test clock, starting at T0 unless told otherwise."""

    def __init__(self, t: float = T0) -> None:
        super().__init__(t)


def rig(fake: FakeUpstream, clock: Clock, db: str | None = None, key: str = ADMIN_KEY,
        **config: object) -> Rig:
    """A poller on `fake` (whose organisation follows `clock`), marks in `db` or memory."""
    fake.org.clock = clock
    cfg = PollerConfig(base_url=fake.base_url, admin_key=key, timeout_seconds=3.0,
                       **config)  # type: ignore[arg-type]
    metrics = UsageMetrics(cfg.kinds, cfg.group_by, (*cfg.kinds, *META_ENDPOINTS))
    registry = CollectorRegistry()
    registry.register(metrics)
    store = SQLiteMarks(db) if db else MemoryMarks()
    return Rig(UsagePoller(cfg, metrics, store, clock=clock), metrics, registry)

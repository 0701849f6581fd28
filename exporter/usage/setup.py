"""Building the usage poller from the settings: which target's organisation it polls,
where its marks live, and the one line saying why there is no poller."""

from __future__ import annotations

import logging
import sqlite3
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from .metrics import UsageMetrics
from .poller import META_ENDPOINTS, PollerConfig, UsagePoller
from .store import MemoryMarks, SQLiteMarks

if TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger("exporter.usage")

HOW_TO_ENABLE = ("set OPENAI_ADMIN_KEY to an admin key of the organisation (or a target's "
                 "admin_key_env) to export its usage and spend (docs/usage.md)")


class UsageSetupError(Exception):
    """The marks cannot be kept where the settings say (DB_FILE)."""


NOT_PRIMARY = ("off on this instance: the primary (SHARD_PRIMARY, shard 0 by default) polls "
               "the organisation (docs/bundle.md#scale-out)")


def off_reason(settings: Settings) -> str:
    """Why this instance runs no poller, in one line (for the log and /status)."""
    return HOW_TO_ENABLE if settings.primary else NOT_PRIMARY


def poller_config(settings: Settings) -> PollerConfig | None:
    """The poller's configuration: the organisation of `settings.usage_target` (the first
    target with an admin key, whichever shard probes it; settings allow one organisation),
    or None when there is none or this instance is not the primary."""
    target = settings.usage_target
    if target is None:
        return None
    return PollerConfig(
        base_url=target.base_url, admin_key=target.admin_key,
        interval_seconds=settings.usage_poll_interval_seconds,
        lookback_minutes=settings.usage_lookback_minutes, kinds=settings.usage_kinds,
        group_by=settings.usage_group_by, max_series=settings.usage_max_series,
        timeout_seconds=settings.timeout_seconds,
        other_secrets=tuple(t.api_key for t in (*settings.targets, target) if t.api_key))


def build_usage(settings: Settings, registry: CollectorRegistry) -> UsagePoller | None:
    """The poller (not started yet) with its families on `registry`, or None after one
    line saying how to enable it. Raises UsageSetupError when ENABLE_DB is on and DB_FILE
    cannot hold the marks."""
    config = poller_config(settings)
    if config is None:
        log.info("usage poller off: %s", off_reason(settings))
        return None
    metrics = UsageMetrics(config.kinds, config.group_by, (*config.kinds, *META_ENDPOINTS))
    try:
        store = SQLiteMarks(settings.db_file) if settings.enable_db else MemoryMarks()
        poller = UsagePoller(config, metrics, store)  # loads the marks
    except sqlite3.Error as exc:
        raise UsageSetupError(f"cannot keep the usage marks there: {exc}") from None
    registry.register(metrics)
    log.info("usage poller on: every %gs, lookback %d min, kinds %s, group_by %s, marks in %s",
             config.interval_seconds, config.lookback_minutes, ",".join(config.kinds),
             ",".join(config.group_by), store.backend)
    return poller

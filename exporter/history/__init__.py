"""Probe history: raw events for /traces, minute aggregates for window queries.

Every ProbeResult goes to ``History.add``. Two things are kept:

* **events**: one row per probe, newest-first by a monotonic id, for ``/traces``;
* **aggregates**: per (bucket, target, endpoint, model) the count, successes, errors by
  type, tokens, bytes, cost, a mergeable latency sketch and the last probe and last
  failure seen, at two resolutions: 1-minute and 15-minute buckets (both updated on every
  add). ``status`` and ``latency_histogram`` read only these: a window is covered by whole
  15-minute buckets plus 1-minute buckets at its two edges, so a 24 h window merges at
  most ~124 aggregates per endpoint, whatever the probe rate.

Modules: ``model`` (events, filters, cursors, errors), ``results`` (typed answers of the
window queries), ``aggregates`` (bucket aggregates and window groups), ``store`` (the
``History`` interface and its queries), ``memory`` (``MemoryHistory``, the default) and
``sqlite`` (``SQLiteHistory``, opt-in). Stores only store: they know nothing of
settings, and turning their answers into JSON is the HTTP layer's job.
"""

from __future__ import annotations

from .aggregates import COARSE, RESOLUTIONS, plan
from .memory import MemoryHistory
from .model import (
    MAX_TRACE_LIMIT,
    MAX_WINDOW_MINUTES,
    CursorError,
    Event,
    HistoryClosed,
    HistoryError,
    LastFailure,
    LastProbe,
    SchemaVersionError,
    StoreOpenError,
    TraceFilter,
    TracePage,
)
from .results import (
    EndpointStatus,
    Figures,
    HistogramBucket,
    LatencyHistogram,
    OverallStatus,
    Series,
    SeriesPoint,
    StoreInfo,
    WindowStatus,
)
from .sqlite import SCHEMA_VERSION, SQLiteHistory
from .store import HISTOGRAM_BOUNDS, History

__all__ = [
    "COARSE", "HISTOGRAM_BOUNDS", "MAX_TRACE_LIMIT", "MAX_WINDOW_MINUTES", "RESOLUTIONS",
    "SCHEMA_VERSION", "CursorError", "EndpointStatus", "Event", "Figures", "HistogramBucket",
    "History", "HistoryClosed", "HistoryError", "LastFailure", "LastProbe",
    "LatencyHistogram", "MemoryHistory", "OverallStatus", "SQLiteHistory",
    "SchemaVersionError", "Series", "SeriesPoint", "StoreInfo", "StoreOpenError",
    "TraceFilter", "TracePage", "WindowStatus", "plan",
]

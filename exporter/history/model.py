"""The trace model: stored events, /traces filters and pages, the cursor codec, and the
errors a query or a store can raise (plain data; the HTTP layer words the JSON)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from ..result import ERROR_TYPES, STATUS_ERROR, STATUS_SUCCESS

MAX_WINDOW_MINUTES = 1440
MAX_TRACE_LIMIT = 1000


class HistoryError(ValueError):
    """A bad query parameter; str(err) is the message for the 400 answer."""


class HistoryClosed(RuntimeError):
    """A query during shutdown, after close()."""


class CursorError(HistoryError):
    """A cursor that is malformed, from another store, or from other filters."""


class StoreOpenError(Exception):
    """A store that cannot use its file; `reason` says why, in one line."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class SchemaVersionError(StoreOpenError):
    """A history file written by a version with another schema."""

    def __init__(self, path: str, found: str, expected: str) -> None:
        super().__init__(path, f"history schema {found}, this version reads schema {expected}")
        self.found = found
        self.expected = expected


class Event(NamedTuple):
    """One probe as stored and as /traces returns it (a tuple: ~half the memory of a
    ProbeResult). Times in Unix seconds, durations in seconds."""

    id: int
    ts: float  # started_at
    target: str
    region: str
    endpoint: str
    model: str
    duration_seconds: float
    success: bool
    error_type: str
    http_status: int | None
    error_message: str
    request_id: str
    input_tokens: int
    output_tokens: int
    total_tokens: int
    response_bytes: int
    cost_usd: float
    # Streaming probes: start -> first content, seconds per output token after the first.
    ttft_seconds: float | None = None
    tpot_seconds: float | None = None
    phases: Mapping[str, float] | None = None  # seconds per phase; None: not timed by phase


class LastProbe(NamedTuple):
    """The newest probe (by start time) of a bucket or a window."""

    ts: float
    success: bool
    error_type: str
    http_status: int | None
    message: str


class LastFailure(NamedTuple):
    """The newest failed probe (by start time) of a bucket or a window."""

    ts: float
    error_type: str
    http_status: int | None
    message: str


def check_window(window: Any) -> int:
    """Window in minutes, an integer 1..1440; HistoryError otherwise."""
    if isinstance(window, bool) or not isinstance(window, int):
        raise HistoryError("window must be an integer number of minutes, 1..1440")
    if not 1 <= window <= MAX_WINDOW_MINUTES:
        raise HistoryError("window must be between 1 and 1440 minutes")
    return window


def check_limit(limit: Any) -> int:
    """Page size, an integer 1..MAX_TRACE_LIMIT; HistoryError otherwise."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_TRACE_LIMIT:
        raise HistoryError(f"limit must be an integer 1..{MAX_TRACE_LIMIT}")
    return limit


@dataclass(frozen=True)
class TraceFilter:
    """Filters of /traces; None means "any". since is inclusive, until exclusive."""

    target: str | None = None
    endpoint: str | None = None
    model: str | None = None
    status: str | None = None  # success | error
    error_type: str | None = None
    since: float | None = None
    until: float | None = None

    def __post_init__(self) -> None:
        if self.status not in (None, STATUS_SUCCESS, STATUS_ERROR):
            raise HistoryError("status must be success or error")
        if self.error_type is not None and self.error_type not in ERROR_TYPES:
            raise HistoryError("error_type must be one of " + ", ".join(ERROR_TYPES))
        if self.since is not None and self.until is not None and self.since > self.until:
            raise HistoryError("since must not be after until")

    def digest(self) -> bytes:
        """8 bytes identifying these filters, so a cursor cannot be reused with others."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).digest()[:8]


@dataclass(frozen=True)
class TracePage:
    """One page of /traces."""

    events: list[Event]  # newest first
    next_cursor: str | None  # None: no older matching event


_CURSOR = struct.Struct("<Q8s8s")  # last id returned, store epoch, filter digest
# Ids are SQLite INTEGER PRIMARY KEYs (signed 64-bit, from 1) or positions in the memory
# ring: a cursor's id outside this range was never issued, and SQLite would overflow on it.
MAX_EVENT_ID = 2**63 - 1


def encode_cursor(last_id: int, epoch: bytes, filters: TraceFilter) -> str:
    """An opaque token: continue below `last_id`, in this store, with these filters."""
    raw = _CURSOR.pack(last_id, epoch, filters.digest())
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, epoch: bytes, filters: TraceFilter) -> int:
    """The id to continue below; CursorError if the cursor does not fit this query."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        last_id, cur_epoch, digest = _CURSOR.unpack(raw)
    except (binascii.Error, struct.error, ValueError):
        raise CursorError("cursor is not valid") from None
    if not 1 <= last_id <= MAX_EVENT_ID:
        raise CursorError("cursor is not valid")
    if cur_epoch != epoch:
        raise CursorError("cursor is from another history store (restarted?); start over")
    if digest != filters.digest():
        raise CursorError("cursor was issued for other filters")
    return last_id

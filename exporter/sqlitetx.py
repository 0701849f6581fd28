"""One SQLite write transaction, used by every store that writes (history, usage marks)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress


@contextmanager
def write_transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT on a connection opened with isolation_level=None.

    IMMEDIATE takes the write lock at the start, so a busy database fails here (after the
    connection's busy_timeout) instead of half way through. Any error, the COMMIT's
    included, rolls the transaction back and propagates.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        with suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise

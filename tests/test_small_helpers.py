"""The two helpers the stores share: one SQLite write transaction, one log throttle."""

from __future__ import annotations

import sqlite3

import pytest

from exporter.sqlitetx import write_transaction
from exporter.throttle import Throttle


def _db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE t (x INTEGER)")
    return db


def test_a_transaction_commits_what_it_wrote() -> None:
    db = _db()
    with write_transaction(db) as tx:
        tx.execute("INSERT INTO t VALUES (1)")
    assert db.execute("SELECT count(*) FROM t").fetchone() == (1,)
    assert not db.in_transaction


def test_an_error_rolls_the_whole_transaction_back_and_propagates() -> None:
    db = _db()
    with pytest.raises(ZeroDivisionError), write_transaction(db) as tx:
        tx.execute("INSERT INTO t VALUES (1)")
        1 / 0  # noqa: B018 - the failure under test
    assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert not db.in_transaction  # the connection is usable for the next one
    with write_transaction(db) as tx:
        tx.execute("INSERT INTO t VALUES (2)")
    assert db.execute("SELECT x FROM t").fetchall() == [(2,)]


def test_the_throttle_lets_one_through_per_period_and_key() -> None:
    now = [100.0]
    throttle = Throttle(60.0, clock=lambda: now[0])
    assert throttle.ready("a") and throttle.ready("b")
    assert not throttle.ready("a")
    now[0] += 59.9
    assert not throttle.ready("a")
    now[0] += 0.1
    assert throttle.ready("a") and not throttle.ready("a")

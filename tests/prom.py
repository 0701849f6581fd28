"""Running real processes in tests (the fake upstream, the exporter, Prometheus) and asking
Prometheus whether every shipped expression answers.

Shared by the truth test (tests/test_truth.py) and the remote_write test
(tests/test_remote_write.py). Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from collections.abc import Callable, Iterable

import pytest

from tests import promql

# Talk to 127.0.0.1 directly, whatever *_proxy says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET `url`: (status, body), an HTTP error status included."""
    try:
        with _OPENER.open(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a process's log, for failure messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Processes:
    """Child processes with their output in log files; `stop()` ends every one."""

    def __init__(self, logs: Path, cwd: Path, env: dict[str, str]) -> None:
        self.logs, self.cwd, self.env = logs, cwd, env
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> None:
        log = self.logs / f"{name}.log"
        fh = log.open("wb")
        proc = subprocess.Popen(args, cwd=self.cwd, env={**self.env, **(extra_env or {})},
                                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        fh.close()
        self.procs.append((name, proc, log))

    def wait(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        """Poll `check` until true; fail at once if a process exits, or after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc, log in self.procs:
                if proc.poll() is not None:
                    pytest.fail(f"{name} exited with {proc.returncode} while waiting for "
                                f"{what}:\n" + tail(log))
            try:
                if check():
                    return
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n"
                    + "\n".join(f"--- {n}\n{tail(log)}" for n, _, log in self.procs))

    def stop(self) -> None:
        for _, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc, _ in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Prometheus:
    """The HTTP query API of one Prometheus server."""

    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, expr: str) -> dict:
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = get(url, timeout=10)
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {"status": "error", "error": f"HTTP {status}: {body[:200]}"}
        return doc

    def result(self, expr: str) -> list:
        doc = self.query(expr)
        if doc.get("status") != "success":
            raise AssertionError(f"{doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]["result"]


def as_promql(q: promql.Query) -> str:
    """The expression as Grafana would send it (variables filled in; label_values()
    as its series selector)."""
    expr = promql.substitute(q.expr)
    lv = promql.label_values(expr)
    return lv[0] if lv else expr


def assert_queries_answer(prom: Prometheus, queries: Iterable[promql.Query],
                          retry_timeout: float) -> None:
    """Every query evaluates, and every one but an alert condition returns data (an empty
    answer is what a user sees as "No data"); empty ones are retried for `retry_timeout`
    seconds first, as some windows need a few more samples."""
    pending: dict[promql.Query, str] = {}
    errors: list[str] = []
    for q in queries:
        expr = as_promql(q)
        doc = prom.query(expr)
        if doc.get("status") != "success":
            errors.append(f"{q.describe()}\n    -> {doc.get('errorType')}: {doc.get('error')}")
            continue
        result = doc["data"]["result"]
        if q.where == "alert":
            continue  # a condition: an empty answer means "not firing", which is fine
        if q.where == "variable":
            lv = promql.label_values(promql.substitute(q.expr))
            result = [r for r in result if r["metric"].get(lv[1])] if lv else result
        if not result:
            pending[q] = expr
    assert not errors, "queries Prometheus rejects:\n" + "\n".join(errors)

    deadline = time.monotonic() + retry_timeout
    while pending and time.monotonic() < deadline:
        time.sleep(2)
        for q, expr in list(pending.items()):
            result = prom.result(expr)
            if q.where == "variable":
                lv = promql.label_values(promql.substitute(q.expr))
                result = [r for r in result if lv and r["metric"].get(lv[1])]
            if result:
                del pending[q]
    assert not pending, "queries that return no data (a user sees \"No data\"):\n" + "\n".join(
        f"{q.describe()}\n    -> ran as: {expr}" for q, expr in pending.items())

"""Running real processes in tests (the fake upstream, the exporter, Prometheus) and asking
Prometheus whether every shipped expression answers.

Shared by the truth tests (tests/test_truth.py, tests/test_truth_defaults.py) and the
remote_write test (tests/test_remote_write.py). Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from collections.abc import Callable, Iterable

import pytest
import yaml

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

    def query(self, expr: str, at: float | None = None) -> dict:
        """An instant query, now or at Unix time `at`."""
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode(params)
        status, body = get(url, timeout=10)
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {"status": "error", "error": f"HTTP {status}: {body[:200]}"}
        return doc

    def result(self, expr: str, at: float | None = None) -> list:
        doc = self.query(expr, at)
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


def query_range(prom: Prometheus, expr: str, start: float, end: float, step: float) -> list:
    """A range query's result (matrix), failing on a rejected expression."""
    url = f"{prom.base}/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
    status, body = get(url, timeout=30)
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {"status": "error", "error": f"HTTP {status}: {body[:200]}"}
    if doc.get("status") != "success":
        raise AssertionError(f"{expr}\n    -> {doc.get('errorType')}: {doc.get('error')}")
    return doc["data"]["result"]


def rule_levels(paths: Iterable[Path] = promql.RULE_FILES) -> list[list[dict]]:
    """The recording rules in dependency order: level 0 reads only scraped series, level
    n reads series recorded at lower levels. `promtool tsdb create-blocks-from rules`
    evaluates every rule against the data already in Prometheus, so a rule reading
    another recorded series must be backfilled after it."""
    rules: list[tuple[str, dict]] = []
    for path in paths:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [(group["name"], r) for r in group["rules"] if "record" in r]
    names = {r["record"] for _, r in rules}
    level: dict[str, int] = {}
    while len(level) < len(names):
        before = len(level)
        for _, r in rules:
            reads = promql.metric_names(r["expr"]) & names
            if r["record"] not in level and reads <= set(level):
                level[r["record"]] = 1 + max((level[n] for n in reads), default=-1)
        assert len(level) > before, "a cycle among the recording rules"
    out: list[list[dict]] = [[] for _ in range(max(level.values()) + 1)]
    for _, r in rules:
        out[level[r["record"]]].append(r)
    return out


class Backfilled:
    """A Prometheus 2.42 serving a TSDB built offline: the scraped samples of an
    OpenMetrics file (`promtool tsdb create-blocks-from openmetrics`) and then the
    recording rules evaluated over them, level by level (`create-blocks-from rules`),
    restarting Prometheus after each level so it loads the new blocks."""

    def __init__(self, procs: Processes, prometheus: str, promtool: str, work: Path,
                 port: int) -> None:
        self.procs, self.prometheus, self.promtool = procs, prometheus, promtool
        self.work, self.port = work, port
        self.data = work / "data"
        self.prom = Prometheus(f"http://127.0.0.1:{port}")
        self._proc: subprocess.Popen | None = None
        self._runs = 0

    def _run(self, args: list[str], what: str) -> None:
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            pytest.fail(f"{what} failed ({done.returncode}):\n{done.stdout[-2000:]}"
                        f"\n{done.stderr[-2000:]}")

    def start(self) -> None:
        self._runs += 1
        config = self.work / "prometheus.yml"
        config.write_text("global:\n  evaluation_interval: 15s\n")
        self.procs.start(f"prometheus-{self._runs}", [
            self.prometheus, f"--config.file={config}", f"--storage.tsdb.path={self.data}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
            "--storage.tsdb.retention.time=15d"])
        self._proc = self.procs.procs[-1][1]
        self.procs.wait("Prometheus /-/ready",
                        lambda: get(f"{self.prom.base}/-/ready")[0] == 200, 30)

    def stop(self) -> None:
        assert self._proc is not None
        self._proc.terminate()
        self._proc.wait(timeout=30)
        self.procs.procs = [p for p in self.procs.procs if p[1] is not self._proc]

    def build(self, openmetrics: Path, start: float, end: float,
              rule_files: Iterable[Path] = promql.RULE_FILES, eval_interval: str = "15s"
              ) -> Prometheus:
        self._run([self.promtool, "tsdb", "create-blocks-from", "openmetrics",
                   str(openmetrics), str(self.data)], "create-blocks-from openmetrics")
        self.start()
        for i, rules in enumerate(rule_levels(rule_files)):
            path = self.work / f"rules-level-{i}.yml"
            path.write_text(yaml.safe_dump({"groups": [{"name": f"level-{i}",
                                                        "rules": rules}]}))
            out = self.work / f"rules-blocks-{i}"
            self._run([self.promtool, "tsdb", "create-blocks-from", "rules",
                       f"--url={self.prom.base}", f"--start={int(start)}",
                       f"--end={int(math.ceil(end))}", f"--eval-interval={eval_interval}",
                       f"--output-dir={out}", "--quiet", str(path)],
                      f"create-blocks-from rules (level {i})")
            self.stop()
            for block in out.iterdir():
                if block.is_dir():
                    block.rename(self.data / block.name)
            self.start()
        return self.prom

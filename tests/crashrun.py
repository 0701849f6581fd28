"""Run the exporter on an SQLite history against the fake upstream, stop it with a signal
at a chosen moment, and count what the database kept. Used by tests/test_crash.py and
bench/bench_crash.py (which measures the figures docs/history.md states).

What "lost" means here: a probe whose request reached the upstream (the fake records
every request it reads) and that has no row in the database. A probe logged as completed
is always stored: the history sink runs before the log sink.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from exporter.fake import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
# Two targets of five probes each, every probe every second (mode all): 10 probes a second.
TARGETS = {"t0": ["chat", "responses", "embeddings", "moderations", "models"],
           "t1": ["chat", "embeddings", "files", "fine_tunes", "batches"]}
PROBES_PER_SECOND = sum(map(len, TARGETS.values()))
JOBS = PROBES_PER_SECOND  # one job per target x endpoint: at most this many in flight
# The scheduler's line at a SIGTERM when probes were in flight (exporter/scheduler.py).
DRAINED = re.compile(r"stopping: (\d+) probe\(s\) in flight finished and were recorded")


@dataclass(frozen=True)
class Outcome:
    """One run, from start to the signal."""

    sent: int  # requests the upstream received
    stored: int  # rows the run added to the database
    logged: int  # probes the exporter logged as completed
    integrity: str  # PRAGMA integrity_check after the run
    exit_code: int
    stop_seconds: float = 0.0  # from the signal to the exit
    drained: int = 0  # probes in flight at a SIGTERM that the drain let finish (its log line)

    @property
    def lost(self) -> int:
        """Probes sent but not stored: the ones in flight when the signal came."""
        return self.sent - self.stored


def config(path: Path, base_url: str) -> Path:
    """The config file of TARGETS against `base_url` (JSON is YAML)."""
    targets = [{"name": name, "base_url": base_url, "probes": probes}
               for name, probes in TARGETS.items()]
    path.write_text(json.dumps({"interval": 1, "mode": "all", "targets": targets}))
    return path


def rows(db: Path) -> int:
    """Events in the history file (0 when there is none yet)."""
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_once(fake: FakeUpstream, db: Path, conf: Path, env: dict[str, str],
             after_ready_s: float, sig: int = signal.SIGKILL) -> Outcome:
    """Start the exporter, wait until /healthz answers and `after_ready_s` more, send
    `sig`, and count."""
    before = rows(db)
    fake.reset()
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config.file", str(conf)], cwd=ROOT,
        env=dict(env, ENABLE_DB="1", DB_FILE=str(db), LISTEN_ADDRESS=f"127.0.0.1:{port}",
                 OPENAI_API_KEY="sk-crash-test"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"exporter did not come up: {proc.stderr.read()!r}")
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.05)
        time.sleep(after_ready_s)
        signalled = time.monotonic()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=20)
        stop_seconds = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(0.3)  # requests already on the wire still reach the fake
    records = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    logged = sum(1 for r in records if r.get("message") == "probe")
    drained = sum(int(m.group(1)) for r in records
                  if (m := DRAINED.match(r.get("message", ""))))
    return Outcome(sent=len(fake.requests), stored=rows(db) - before, logged=logged,
                   integrity=integrity(db), exit_code=proc.returncode,
                   stop_seconds=stop_seconds, drained=drained)

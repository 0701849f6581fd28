"""What a kill -9 (and a SIGTERM) costs the SQLite history: probes sent but not stored.

    .venv/bin/python bench/bench_crash.py [--kills 10] [--latency-ms 700] [--seed 1]

The exporter (ENABLE_DB=1, mode all, two targets of five probes, interval 1 s: 10 probes a
second, 10 jobs, at most one probe each in flight) probes the bundled fake upstream, which
answers every request after --latency-ms. Each round starts it on the same database file,
waits a seeded random 0.5-3 s after /healthz answers, sends the signal and counts: requests
the upstream received, rows added, probes logged, PRAGMA integrity_check. "lost" =
received - stored: the probes in flight at the signal. Medians and maxima over the rounds,
per signal.
"""

from __future__ import annotations

import argparse
import random
import signal
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.fake import FakeUpstream  # noqa: E402
from tests.conftest import clean_env  # noqa: E402
from tests.crashrun import PROBES_PER_SECOND, config, run_once  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--latency-ms", type=float, default=700.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    print(f"{PROBES_PER_SECOND} probes/s, upstream latency {args.latency_ms:g} ms, "
          f"{args.kills} rounds per signal, seed {args.seed}; expected in flight "
          f"~{PROBES_PER_SECOND * args.latency_ms / 1000:.1f}")
    with tempfile.TemporaryDirectory() as tmp, \
            FakeUpstream(latency_ms=args.latency_ms, rpm_limit=1_000_000) as fake:
        conf = config(Path(tmp) / "c.yaml", fake.base_url)
        for sig in (signal.SIGKILL, signal.SIGTERM):
            db = Path(tmp) / f"{sig.name}.db"
            lost, unlogged = [], []
            for _ in range(args.kills):
                out = run_once(fake, db, conf, clean_env(), rnd.uniform(0.5, 3.0), sig)
                assert out.integrity == "ok", out
                lost.append(out.lost)
                unlogged.append(out.stored - out.logged)
                print(f"  {sig.name}: sent {out.sent:3d} stored {out.stored:3d} "
                      f"logged {out.logged:3d} lost {out.lost:2d} integrity {out.integrity}")
            print(f"{sig.name}: lost per round median {statistics.median(lost):g}, max "
                  f"{max(lost)}; stored but not yet logged: max {max(unlogged)}")


if __name__ == "__main__":
    main()

"""How many probe jobs a configuration makes, and the most one exporter runs.

The probe loop (exporter/scheduler.py) gives every job its own slot, so that a hanging
endpoint or target never costs another a tick: with every upstream hanging, one thread per
job. ``MAX_JOBS`` bounds that; past it, shard the targets or use roundrobin.
"""

from __future__ import annotations

from collections.abc import Iterable

from .schema import ConfigError, TargetSettings

MAX_JOBS = 1000


def job_count(mode: str, targets: Iterable[TargetSettings]) -> int:
    """One job per target x endpoint in ``all`` mode, one per target in ``roundrobin``."""
    targets = list(targets)
    if mode == "all":
        return sum(len(t.probes) for t in targets)
    return sum(1 for t in targets if t.probes)


def check_jobs(mode: str, mode_from: str, targets: Iterable[TargetSettings]) -> None:
    """Raise ConfigError when this exporter would run more than MAX_JOBS jobs."""
    count = job_count(mode, targets)
    if count > MAX_JOBS:
        how = ("targets x endpoints" if mode == "all" else "one per target")
        raise ConfigError(
            f"{mode_from}: {mode} mode makes {count} probe jobs ({how}) on this exporter, at most "
            f"{MAX_JOBS} (each gets its own probe thread when it hangs); use roundrobin, "
            "fewer endpoints, or shard the targets (SHARD_COUNT)")

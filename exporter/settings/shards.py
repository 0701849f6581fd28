"""Sharding targets across exporters: which shard probes a target, the shard settings'
parsers, and what an instance keeps of the configured targets.

One config file lists every target; each instance gets its shard index and the shard
count (SHARD_INDEX / SHARD_COUNT) and probes only the targets whose name hashes to its
index. The hash is the jump consistent hash (Lamping and Veach, 2014) of the first 8
bytes of SHA-256 of the name: the same on every machine and Python version (never
hash(), which is salted per process), and growing the count from N to N+1 moves only the
targets that go to the new shard (about 1/(N+1) of them), so scaling out does not
reshuffle which instance probes what. docs/bundle.md#scale-out.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any
from collections.abc import Mapping, Sequence

from .parsers import _bad, _int_range
from .schema import ConfigError, Settings, TargetSettings

# A fleet of a thousand exporters is far beyond any use; the bound keeps a typo (SHARD_COUNT
# of 10000000) a one-line error.
MAX_SHARDS = 1000
_MASK64 = (1 << 64) - 1
_SHARD_COUNT_WHERE = "SHARD_COUNT, --shard.count or shard.count in the config file"

_shard_count = _int_range(1, MAX_SHARDS)


def _shard_index(raw: Any, where: str) -> int:
    """A shard index 0..MAX_SHARDS-1 written as plain digits: a sign ("-0", "+1") is a
    typo rather than an index."""
    value: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and re.fullmatch(r"\s*\d{1,4}\s*", raw):
        value = int(raw)
    if value is None or not 0 <= value < MAX_SHARDS:
        raise _bad(where, f"must be a whole number 0-{MAX_SHARDS - 1} (this instance's shard, "
                          "below the shard count)", raw)
    return value


def shard_of(name: str, count: int) -> int:
    """The shard (0 to count-1) that probes the target called `name`."""
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"count must be 1-{MAX_SHARDS}, got {count}")
    key = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")
    # Jump consistent hash, in integer arithmetic (the paper divides doubles; integers
    # make every platform agree to the last bit).
    shard, j = -1, 0
    while j < count:
        shard = j
        key = (key * 2862933555777941757 + 1) & _MASK64
        j = ((shard + 1) << 31) // ((key >> 33) + 1)
    return shard


@dataclass(frozen=True)
class Shard:
    """What this instance probes: its targets, and where it stands in the fleet."""

    index: int
    count: int
    primary: bool  # runs the once-per-fleet work (the organisation usage poller)
    targets: tuple[TargetSettings, ...]  # the configured targets this shard owns
    elsewhere: int  # configured targets other shards probe


def select(targets: Sequence[TargetSettings], merged: Mapping[str, Any],
           sources: Mapping[str, str]) -> Shard:
    """Keep the targets of this instance's shard. Every target is checked before (a config
    is valid or not on every shard alike); this only picks.

    `primary` defaults to shard 0: one config serves every instance, and exactly one of
    them then polls the organisation.
    """
    index, count = merged["shard_index"], merged["shard_count"]
    if index >= count:  # the default index 0 is below every count: the index was set
        count_from = sources.get("shard_count")
        how = f"({count_from})" if count_from else f"(the default; set {_SHARD_COUNT_WHERE})"
        raise ConfigError(f"{sources['shard_index']}: must be below the shard count {count} "
                          f"{how}, got {index}")
    owned = tuple(t for t in targets if shard_of(t.name, count) == index)
    primary = merged["primary"]
    return Shard(index=index, count=count,
                 primary=(index == 0) if primary is None else bool(primary),
                 targets=owned, elsewhere=len(targets) - len(owned))


def describe(settings: Settings) -> str | None:
    """The start-up log's line about sharding; None for a lone primary instance."""
    index, count, primary = settings.shard_index, settings.shard_count, settings.primary
    if count == 1 and primary:
        return None
    role = ("primary: runs the organisation usage poller" if primary
            else "not primary: the organisation usage poller runs on another instance")
    owned = [t.name for t in settings.targets]
    total = len(owned) + settings.targets_on_other_shards
    if not owned:
        return (f"shard {index} of {count} owns none of the {total} configured target(s) "
                "(each target goes to one shard by a hash of its name) and serves /metrics "
                f"without probe series; {role}")
    names = ", ".join(owned[:10]) + (f" and {len(owned) - 10} more" if len(owned) > 10 else "")
    return f"shard {index} of {count} probes {len(owned)} of {total} target(s) ({names}); {role}"

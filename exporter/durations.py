"""Parse the Go-style durations OpenAI sends in x-ratelimit-reset-* headers."""

from __future__ import annotations

import math
import re

# Go's time.ParseDuration units. "ms" must be tried before "m", which the
# alternation order guarantees.
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6,
          "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|h|m|s)")


def parse_duration(value: str) -> float | None:
    """'6m0s' -> 360.0, '12ms' -> 0.012, '1h2m3.5s' -> 3723.5; None when unparsable,
    negative or infinite (400 digits make a float overflow to inf, as does 'inf').

    A bare number is taken as seconds (some gateways send one). Never raises.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if 0 <= seconds < math.inf else None
    pos, total = 0, 0.0
    while pos < len(text):
        match = _PART.match(text, pos)
        if not match:
            return None
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return total if math.isfinite(total) else None

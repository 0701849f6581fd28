"""The effective configuration with every secret masked, for the start-up log and /status."""

from __future__ import annotations

import dataclasses
from typing import Any

from .schema import Settings, TargetSettings

MASK = "***"


def _mask(value: str) -> str:
    return MASK if value else ""


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective configuration as a JSON-able dict for the start-up log and /status.

    Every field declared with repr=False (api_key, web_auth_token) shows as "***" when set
    and "" when not; header values show as "***" (a gateway header may be a credential).
    Prices are listed only for the models the targets use (None: no price, no cost).
    """
    def plain(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if isinstance(value, TargetSettings):  # usage_target: named, never shown whole
                value = value.name
            elif not f.repr:
                value = _mask(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = dict(value)
            out[f.name] = value
        return out

    config = plain(settings)
    targets = []
    used: set[str] = set()
    for t in settings.targets:
        entry = plain(t)
        entry["headers"] = {name: MASK for name in t.headers}
        targets.append(entry)
        used.update(filter(None, map(t.model_for, t.probes)))
    config["targets"] = targets
    config["prices"] = {m: (dict(settings.prices[m]) if m in settings.prices else None)
                        for m in sorted(used)}
    return config

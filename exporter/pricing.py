"""Model prices and the estimated cost of a probe.

The table is the shipped ``exporter/prices.yaml`` with the config file's ``prices:``
section merged over it, model by model, in USD per 1M tokens. ``parse_prices`` validates
one such section; a bad entry raises ``PriceError``, which settings turn into the same
one-line ConfigError as any other setting (the value is shown their way).

Sharing: ``Settings.prices`` holds the validated table as plain data, and ``main()``
builds one ``PriceTable`` from it for the whole process and hands it to every Prober.
The prices never change after start; the only mutable state is the set of models
already warned about, guarded by a lock, so probes on the pool threads may call
``cost()`` at once and a model without a price is warned about once per process,
however many targets probe it.
"""

from __future__ import annotations

import logging
import threading
from importlib import resources
from typing import Any
from collections.abc import Callable, Mapping

import yaml

log = logging.getLogger("exporter.pricing")

PRICE_KEYS = ("input", "output")
Prices = dict[str, dict[str, float]]  # {model: {"input": usd_per_1m, "output": usd_per_1m}}

_NO_VALUE = object()


class PriceError(ValueError):
    """A bad entry in a price table: `before` + the offending value, shown + `after`.

    The value is kept apart so that settings can show it the way they show every value
    in a message (``got a mapping``, ``got -1.0``); str() shows it with repr.
    """

    def __init__(self, before: str, value: Any = _NO_VALUE, after: str = "") -> None:
        self.before, self.value, self.after = before, value, after
        super().__init__(self.describe(repr))

    def describe(self, show: Callable[[Any], str]) -> str:
        """The one-line message, with the offending value shown by `show`."""
        if self.value is _NO_VALUE:
            return self.before + self.after
        return self.before + show(self.value) + self.after


# USD per 1M tokens: the dearest model lists a few hundred; more is a typo (or 1e300,
# which would make the cost counter +Inf for good).
MAX_USD = 100_000


def _usd(value: Any) -> float | None:
    """A price: a YAML number 0-MAX_USD (a quoted "0.15" is refused, as is true)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_USD:
        return None
    return float(value)


def parse_prices(raw: Any, where: str) -> Prices:
    """{model: {input: x, output: y}}, both present, numbers 0-MAX_USD (USD per 1M tokens).

    `where` names the section in messages ("config file prices"); None is an empty table.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise PriceError(f"{where}: must be a mapping of model: {{input: usd_per_1m, "
                         "output: usd_per_1m}, got ", raw)
    prices: Prices = {}
    for model, entry in raw.items():
        model_where = f"{where}.{model}"
        if not isinstance(model, str) or not model.strip():
            raise PriceError(f"{where}: keys must be model names, got ", model)
        if not isinstance(entry, dict):
            raise PriceError(f"{model_where}: must be a mapping {{input: usd_per_1m, "
                             "output: usd_per_1m}, got ", entry)
        unknown = [k for k in entry if k not in PRICE_KEYS]
        if unknown:
            raise PriceError("config file: unknown key ", unknown[0],
                             f" in {model_where.removeprefix('config file ')} "
                             f"(allowed: {', '.join(PRICE_KEYS)})")
        price: dict[str, float] = {}
        for key in PRICE_KEYS:
            if key not in entry:
                raise PriceError(f"{model_where}: must set both input and output "
                                 "(USD per 1M tokens)")
            value = _usd(entry[key])
            if value is None:
                raise PriceError(f"{model_where}.{key}: must be a number 0-{MAX_USD} "
                                 "(USD per 1M tokens), got ", entry[key])
            price[key] = value
        prices[model.strip()] = price
    return prices


def shipped_prices() -> Prices:
    """The price table shipped as exporter/prices.yaml (a fresh copy on each call)."""
    text = resources.files(__package__).joinpath("prices.yaml").read_text(encoding="utf-8")
    return parse_prices(yaml.safe_load(text), "prices.yaml")


class PriceTable:
    """Prices by model and the cost of a probe; one per process, shared by every Prober."""

    def __init__(self, prices: Mapping[str, Mapping[str, float]]) -> None:
        self._prices = {model: dict(price) for model, price in prices.items()}
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        """Estimated USD of one probe; 0 for a model without a price (warned about once)."""
        if not model or (input_tokens == 0 and output_tokens == 0):
            return 0.0
        price = self._prices.get(model)
        if price is None:
            with self._lock:
                first = model not in self._warned
                self._warned.add(model)
            if first:
                log.warning(
                    "no price for model %r: its probes add no cost; add it under `prices:` "
                    "in the config file", model,
                )
            return 0.0
        return (input_tokens * price.get("input", 0.0)
                + output_tokens * price.get("output", 0.0)) / 1_000_000

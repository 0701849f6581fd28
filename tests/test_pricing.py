"""The price table: validation errors, cost arithmetic, one warning per unpriced model."""

from __future__ import annotations

import threading
from importlib import resources

import pytest
import yaml

from exporter.pricing import PriceError, PriceTable, parse_prices, shipped_prices
from exporter.settings.sources import _parse_yaml

WARNING = ("no price for model 'mystery': its probes add no cost; add it under `prices:` in "
           "the config file")


def test_cost_is_usd_per_million_tokens():
    table = PriceTable({"m": {"input": 0.15, "output": 0.60}})
    assert table.cost("m", 8, 2) == pytest.approx((8 * 0.15 + 2 * 0.60) / 1e6)
    assert table.cost("m", 1_000_000, 1_000_000) == pytest.approx(0.75)


@pytest.mark.parametrize("model,tokens", [("", (5, 5)), ("m", (0, 0)), ("mystery", (0, 0))])
def test_no_model_or_no_tokens_cost_nothing_and_warn_nothing(caplog, model, tokens):
    table = PriceTable({"m": {"input": 1.0, "output": 1.0}})
    with caplog.at_level("WARNING", logger="exporter.pricing"):
        assert table.cost(model, *tokens) == 0.0
    assert caplog.records == []


def test_the_table_is_a_copy_of_the_settings():
    prices = {"m": {"input": 1.0, "output": 1.0}}
    table = PriceTable(prices)
    prices["m"]["input"] = 100.0
    assert table.cost("m", 1_000_000, 0) == 1.0


def test_one_shared_table_warns_once_per_process_across_threads(caplog):
    table = PriceTable({})  # main() hands this one table to every target's prober
    start = threading.Barrier(8)

    def probe_many() -> None:
        start.wait()
        for _ in range(200):
            assert table.cost("mystery", 3, 4) == 0.0

    with caplog.at_level("WARNING", logger="exporter.pricing"):
        threads = [threading.Thread(target=probe_many) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        table.cost("other", 1, 1)
    assert [r.getMessage() for r in caplog.records] == [
        WARNING, WARNING.replace("'mystery'", "'other'")]


def test_price_error_shows_the_value_the_callers_way():
    with pytest.raises(PriceError) as info:
        parse_prices({"m": {"input": -1, "output": 0}}, "config file prices")
    assert str(info.value) == (
        "config file prices.m.input: must be a number 0-100000 (USD per 1M tokens), got -1")
    assert info.value.describe(lambda v: f"<{v}>") == (
        "config file prices.m.input: must be a number 0-100000 (USD per 1M tokens), got <-1>")


@pytest.mark.parametrize("value", ["0.15", True, float("nan"), float("inf"), None, [1]])
def test_a_price_must_be_a_yaml_number(value):
    with pytest.raises(PriceError):
        parse_prices({"m": {"input": value, "output": 0}}, "config file prices")


def test_model_names_are_stripped_and_none_is_an_empty_table():
    assert parse_prices({" m ": {"input": 1, "output": 0}}, "p") == {
        "m": {"input": 1.0, "output": 0.0}}
    assert parse_prices(None, "p") == {}


def test_shipped_prices_are_a_fresh_copy_each_time():
    first = shipped_prices()
    first["gpt-4o-mini"]["input"] = 99.0
    assert shipped_prices()["gpt-4o-mini"]["input"] == 0.15


def test_shipped_prices_yaml_has_no_duplicate_keys():
    # pricing reads its own file with safe_load, which keeps the last of two equal keys;
    # the strict loader of config files proves no entry silently shadows another.
    text = resources.files("exporter").joinpath("prices.yaml").read_text(encoding="utf-8")
    assert _parse_yaml(text, "prices.yaml") == yaml.safe_load(text)

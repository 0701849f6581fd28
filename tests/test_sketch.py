"""The latency sketch: within 1 % of exact percentiles, mergeable, serialisable."""

from __future__ import annotations

import json
import math
import random

import pytest

from exporter.sketch import LatencySketch, SketchSum, nearest_rank

QS = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)


def exact(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile, the definition the sketch documents: the value at 1-based
    rank ceil(q * n) (at least 1) of the sorted values."""
    n = len(sorted_values)
    return sorted_values[max(1, math.ceil(q * n)) - 1]


def _uniform(rng: random.Random, n: int) -> list[float]:
    return [rng.uniform(0.05, 3.0) for _ in range(n)]


def _lognormal(rng: random.Random, n: int) -> list[float]:
    return [rng.lognormvariate(-0.7, 0.8) for _ in range(n)]


def _bimodal(rng: random.Random, n: int) -> list[float]:
    # Fast cached answers and slow cold starts: a shape averages hide.
    return [rng.gauss(0.12, 0.02) if rng.random() < 0.8 else rng.gauss(2.5, 0.6)
            for _ in range(n)]


def _heavy_tail(rng: random.Random, n: int) -> list[float]:
    return [0.08 * rng.paretovariate(1.3) for _ in range(n)]


DISTRIBUTIONS = {"uniform": _uniform, "lognormal": _lognormal, "bimodal": _bimodal,
                 "pareto": _heavy_tail}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_quantiles_within_1_percent_of_exact(name):
    rng = random.Random(name)
    values = [max(v, 0.001) for v in DISTRIBUTIONS[name](rng, 40_000)]
    sketch = LatencySketch()
    for v in values:
        sketch.add(v)
    values.sort()
    for q in QS:
        want = exact(values, q)
        got = sketch.quantile(q)
        assert abs(got - want) <= 0.01 * want, (name, q, got, want)
    assert sketch.quantiles(QS) == [sketch.quantile(q) for q in QS]
    assert sketch.count == len(values)
    assert sketch.min == values[0] and sketch.max == values[-1]


def test_merged_minute_sketches_equal_one_sketch_of_everything():
    rng = random.Random(5)
    minutes = [_lognormal(rng, rng.randint(0, 300)) for _ in range(200)]
    whole = LatencySketch()
    merged = LatencySketch()
    for values in minutes:
        part = LatencySketch()
        for v in values:
            part.add(v)
            whole.add(v)
        merged.merge(part)
    assert merged.buckets == whole.buckets and merged.count == whole.count
    assert merged.sum == pytest.approx(whole.sum)
    everything = sorted(v for values in minutes for v in values)
    for q in QS:
        assert abs(merged.quantile(q) - exact(everything, q)) <= 0.01 * exact(everything, q)


def test_small_counts_and_edges():
    s = LatencySketch()
    assert s.quantile(0.5) is None and s.quantiles((0.5, 0.9)) == [None, None]
    s.add(0.25)
    assert s.quantile(0.0) == s.quantile(1.0) == 0.25  # clamped to the exact min/max
    s.add(0.0)  # a zero duration goes to the zero bucket
    assert s.quantile(0.5) == 0.0 and s.quantile(1.0) == 0.25
    with pytest.raises(ValueError):
        s.add(float("nan"))
    with pytest.raises(ValueError):
        s.quantile(1.5)
    assert nearest_rank(0.5, 1) == 1 and nearest_rank(0.0, 10) == 1
    assert nearest_rank(1.0, 10) == 10 and nearest_rank(0.95, 20) == 19


def test_bytes_and_json_round_trip():
    rng = random.Random(9)
    s = LatencySketch()
    for v in _bimodal(rng, 5_000):
        s.add(max(v, 0.0))
    s.add(0.0, count=3)
    blob = s.to_bytes()
    assert LatencySketch.from_bytes(blob) == s
    assert LatencySketch.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    sparse = LatencySketch()
    for v in (0.001, 0.002, 50.0, 0.0):  # far apart: stored as (key, count) pairs
        sparse.add(v)
    assert len(sparse.to_bytes()) < len(blob) // 10
    assert LatencySketch.from_bytes(sparse.to_bytes()) == sparse
    empty = LatencySketch()
    assert LatencySketch.from_bytes(empty.to_bytes()) == empty
    assert LatencySketch.from_bytes(empty.to_bytes()).quantile(0.5) is None
    # A handful of probes a minute makes a small blob: fine to upsert on every probe.
    few = LatencySketch()
    for v in (0.31, 0.33, 0.29, 0.8):
        few.add(v)
    assert len(few.to_bytes()) < 100


def test_histogram_counts_add_up():
    s = LatencySketch()
    values = [0.01, 0.049, 0.2, 0.2, 1.2, 75.0]
    for v in values:
        s.add(v)
    counts = s.count_le((0.05, 0.1, 0.25, 60))
    assert counts == [2, 0, 2, 1, 1]
    assert sum(c for _lo, _hi, c in s.iter_buckets()) == len(values)


def test_sketch_sum_equals_merging_one_by_one():
    rng = random.Random(21)
    parts = []
    for i in range(300):
        part = LatencySketch()
        gen = (_bimodal, _heavy_tail, _uniform)[i % 3]
        for v in gen(rng, rng.randint(0, 80)):
            part.add(max(v, 0.0))
        parts.append(part)
    parts.append(LatencySketch())  # an empty minute
    low = LatencySketch()
    low.add(1e-5)  # a key below everything seen so far: the sum re-bases
    parts.append(low)
    merged = LatencySketch()
    total = SketchSum()
    for i, part in enumerate(parts):
        merged.merge(part)
        if i % 2:
            total.add(part)  # a live sketch
        else:
            total.add_bytes(part.to_bytes())  # a stored one
    assert total.sketch() == merged
    assert total.quantiles(QS) == merged.quantiles(QS)
    bounds = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
    assert total.count_le(bounds) == merged.count_le(bounds)
    nested = SketchSum()
    nested.add(total)
    assert nested.sketch() == merged
    assert SketchSum().quantiles((0.5,)) == [None]


def test_merge_refuses_other_alpha():
    a, b = LatencySketch(0.01), LatencySketch(0.02)
    b.add(1.0)
    with pytest.raises(ValueError):
        a.merge(b)
    with pytest.raises(ValueError):
        SketchSum(0.01).add_bytes(b.to_bytes())

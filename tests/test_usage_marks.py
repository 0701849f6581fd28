"""The counting model on its own (exporter/usage/marks.py): what each poll adds.

Readings are written out by hand, one field per row unless a test needs two, so every
expected number can be checked by reading the test.
"""

from __future__ import annotations

from exporter.usage.marks import KindMarks, Reading, sum_rows

A = ("proj_a", "gpt-4o-mini")
B = ("proj_b", "gpt-4o-mini")
T0 = 1_800_000_000 - 1_800_000_000 % 60  # a minute boundary


def reading(buckets: dict[int, dict], window_start: int = T0 - 3600,
            complete: bool = True) -> Reading:
    return Reading(window_start, buckets, complete)


def added(out) -> float:
    return sum(n for _, _, n in out.increments)


def test_the_same_bucket_read_twice_adds_nothing() -> None:
    marks = KindMarks(1)
    assert added(marks.apply(reading({T0: {A: (100,)}}))) == 100
    out = marks.apply(reading({T0: {A: (100,)}}))
    assert (added(out), out.corrections, out.changed) == (0, 0, set())


def test_a_growing_minute_adds_exactly_its_growth() -> None:
    marks = KindMarks(2)
    marks.apply(reading({T0: {A: (10, 1)}}))
    out = marks.apply(reading({T0: {A: (25, 1)}}))
    assert out.increments == [(A, 0, 15)]
    out = marks.apply(reading({T0: {A: (40, 3)}}))
    assert sorted(out.increments) == [(A, 0, 15), (A, 1, 2)]


def test_late_data_in_a_closed_minute_is_counted() -> None:
    marks = KindMarks(1)
    marks.apply(reading({T0: {A: (50,)}, T0 + 60: {A: (5,)}}))
    # Two minutes later the first minute has grown (late data) and B shows up in it.
    out = marks.apply(reading({T0: {A: (70,), B: (9,)}, T0 + 60: {A: (5,)}}))
    assert sorted(out.increments) == [(A, 0, 20), (B, 0, 9)]


def test_a_bucket_revised_down_adds_nothing_and_counts_one_correction() -> None:
    marks = KindMarks(1)
    marks.apply(reading({T0: {A: (100,)}}))
    out = marks.apply(reading({T0: {A: (60,)}}))
    assert (added(out), out.corrections) == (0, 1)
    # Read again at the revised value: no second correction, nothing added.
    out = marks.apply(reading({T0: {A: (60,)}}))
    assert (added(out), out.corrections) == (0, 0)
    # It grows back past the old high: only what exceeds 100 is new.
    out = marks.apply(reading({T0: {A: (130,)}}))
    assert (added(out), out.corrections) == (30, 0)
    # Down again: a new revision, a new correction.
    assert marks.apply(reading({T0: {A: (120,)}})).corrections == 1


def test_one_field_down_is_a_correction_even_when_another_grows() -> None:
    marks = KindMarks(2)
    marks.apply(reading({T0: {A: (100, 5)}}))
    out = marks.apply(reading({T0: {A: (90, 7)}}))
    assert (out.increments, out.corrections) == ([(A, 1, 2)], 1)


def test_a_row_gone_from_a_complete_read_is_a_revision_to_zero() -> None:
    marks = KindMarks(1)
    marks.apply(reading({T0: {A: (100,), B: (10,)}}))
    out = marks.apply(reading({T0: {B: (10,)}}))
    assert (added(out), out.corrections) == (0, 1)
    # The same absence read again is not a second correction.
    assert marks.apply(reading({T0: {B: (10,)}})).corrections == 0


def test_a_row_missing_from_a_truncated_read_is_not_a_revision() -> None:
    marks = KindMarks(1)
    marks.apply(reading({T0: {A: (100,), B: (10,)}}))
    out = marks.apply(reading({T0: {B: (12,)}}, complete=False))
    assert (out.increments, out.corrections) == ([(B, 0, 2)], 0)


def test_an_optional_field_not_reported_is_left_alone() -> None:
    marks = KindMarks(2)
    marks.apply(reading({T0: {A: (100, 40)}}))
    out = marks.apply(reading({T0: {A: (110, None)}}))
    assert (out.increments, out.corrections) == ([(A, 0, 10)], 0)
    # Reported again later: only its growth counts.
    assert marks.apply(reading({T0: {A: (110, 45)}})).increments == [(A, 1, 5)]


def test_marks_are_evicted_only_past_the_lookback() -> None:
    marks = KindMarks(1)
    marks.apply(reading({T0: {A: (100,)}, T0 + 60: {A: (1,)}}, window_start=T0))
    assert set(marks.buckets) == {T0, T0 + 60}
    # The window moves one minute: the first bucket can no longer be read, its mark goes.
    marks.apply(reading({T0 + 60: {A: (1,)}}, window_start=T0 + 60))
    assert set(marks.buckets) == {T0 + 60}
    # A bucket before the window that still shows up (clock skew) is ignored, not recounted.
    out = marks.apply(reading({T0: {A: (100,)}, T0 + 60: {A: (1,)}}, window_start=T0 + 60))
    assert (added(out), set(marks.buckets)) == (0, {T0 + 60})


def test_a_baseline_counts_nothing_before_start_but_everything_after() -> None:
    marks = KindMarks(1)
    out = marks.apply(reading({T0: {A: (100,)}, T0 + 60: {A: (7,)}}), baseline=True)
    assert (added(out), out.corrections, out.seen) == (0, 0, {A})
    out = marks.apply(reading({T0: {A: (100,)}, T0 + 60: {A: (9,)}, T0 + 120: {B: (4,)}}))
    assert sorted(out.increments) == [(A, 0, 2), (B, 0, 4)]


def test_sum_rows_folds_rows_and_keeps_not_reported() -> None:
    rows = [(A, (1, None)), (A, (2, None)), (B, (5, 1)), (B, (None, 2))]
    assert sum_rows(rows) == {A: (3, None), B: (5, 3)}


def test_one_correction_per_bucket_however_many_rows_went_down() -> None:
    marks = KindMarks(1)
    marks.apply(reading({T0: {A: (100,), B: (50,)}, T0 + 60: {A: (10,)}}))
    out = marks.apply(reading({T0: {A: (90,), B: (40,)}, T0 + 60: {A: (5,)}}))
    assert out.corrections == 2  # two buckets, three rows


def test_rows_share_one_tuple_per_label_set_and_quiet_ones_are_forgotten() -> None:
    marks = KindMarks(1)
    for i in range(100):  # a new label set every minute, each gone a minute later
        dims = (f"proj_{i}", "m")
        marks.apply(reading({T0 + 60 * i: {(f"proj_{i}", "m"): (1,)}},
                            window_start=T0 + 60 * i))
        assert next(iter(marks.buckets[T0 + 60 * i])) is marks._shared(dims)
    assert len(marks) == 1 and len(marks._dims) <= 2 * 1 + 64
    marks.apply(reading({T0 + 6000: {A: (1,)}, T0 + 6060: {(A[0], A[1]): (2,)}},
                        window_start=T0 + 6000))
    keys = [next(iter(rows)) for rows in marks.buckets.values()]
    assert keys[0] is keys[1]  # equal label values from two readings: one tuple

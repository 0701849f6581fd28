"""The usage poller against the fake upstream's admin API, over real sockets, with the
wall clock of both in the test's hand: counts, restarts, paging, costs, projects, caps."""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, timezone

import pytest

from exporter.fake import FakeUpstream
from exporter.fake.org import COST_LINES
from exporter.usage.metrics import OVERFLOW
from tests.usage_helpers import ADMIN_KEY, FIELDS, Clock, rig

INTERVAL = 300.0


@pytest.fixture
def fake():
    with FakeUpstream(admin_key=ADMIN_KEY) as upstream:
        yield upstream


@pytest.mark.parametrize("lag", [0.0, 150.0], ids=["on-time", "late-data"])
def test_counters_add_exactly_what_the_api_showed_between_polls(fake, lag) -> None:
    """Twenty polls five minutes apart (past the 60-minute lookback, so marks are evicted
    too): each counter grew by exactly what became visible, current minute and late data
    included, nothing twice."""
    fake.org.lag_seconds = lag
    clock = Clock()
    r = rig(fake, clock)
    r.poll()  # the baseline: counting starts here
    start = clock.t
    assert all(r.counted(name, kind, tt) == 0 for kind, _, name, tt in FIELDS)
    for _ in range(20):
        clock.advance(INTERVAL)
        r.poll()
    for kind, field, name, token_type in FIELDS:
        want = fake.org.usage_between(kind, field, start, clock.t)
        assert r.counted(name, kind, token_type) == want, (kind, field)
        assert want > 0 or field.endswith("audio_tokens"), (kind, field)
    assert r.shown("openai_usage_tokens_total", "completions", "input_audio") > 0
    assert all(v == 0 for v in r.metrics.corrections.values())
    assert not r.metrics.pending()  # every series existed since the baseline


def test_polls_closer_than_a_minute_count_the_current_minute_as_it_fills(fake) -> None:
    clock = Clock()
    r = rig(fake, clock)
    r.poll()
    start, seen = clock.t, []
    for _ in range(7):
        clock.advance(13)
        r.poll()
        seen.append(r.shown("openai_usage_tokens_total", "completions", "input"))
    assert seen == sorted(seen) and len(set(seen)) > 3  # it grows poll by poll
    assert seen[-1] == fake.org.usage_between("completions", "input_tokens", start, clock.t)


def test_the_same_window_read_again_adds_nothing(fake) -> None:
    clock = Clock()
    r = rig(fake, clock)
    r.poll()
    clock.advance(600)
    r.poll()
    before = {(k, t): r.shown(n, k, t) for k, _, n, t in FIELDS}
    for _ in range(3):
        r.poll()  # same instant: the API shows exactly the same
    assert {(k, t): r.shown(n, k, t) for k, _, n, t in FIELDS} == before


def test_a_revised_bucket_adds_nothing_and_counts_a_correction(fake) -> None:
    clock = Clock()
    r = rig(fake, clock)
    r.poll()
    clock.advance(INTERVAL)
    r.poll()
    counted = r.shown("openai_usage_tokens_total", "completions", "input")
    minute = int(clock.t // 60) * 60 - 120  # closed and counted
    fake.org.revise("completions", minute, 0.5)
    r.poll()
    assert r.value("openai_usage_corrections_total", kind="completions") == 1
    assert r.shown("openai_usage_tokens_total", "completions", "input") == counted
    r.poll()  # still revised: no second correction
    assert r.value("openai_usage_corrections_total", kind="completions") == 1
    fake.org.revise("completions", minute, 1.0)  # restored: below the marks, adds nothing
    r.poll()
    assert r.shown("openai_usage_tokens_total", "completions", "input") == counted
    assert r.value("openai_usage_corrections_total", kind="embeddings") == 0


def test_a_new_series_shows_its_first_increment_one_poll_later(fake) -> None:
    """Prometheus takes the first sample of a series as its start: an increment shown on
    that sample would be lost to increase()."""
    clock = Clock()
    r = rig(fake, clock)
    r.poll()
    series = ("requests", "completions", ("proj_alpha", "gpt-4o-mini-2024-07-18"), "")
    r.metrics._values.pop(series)  # as if this source had never been seen
    r.metrics._born.pop(series, None)
    clock.advance(INTERVAL)
    r.poll()
    labels = dict(kind="completions", project="proj_alpha", model="gpt-4o-mini-2024-07-18")
    held = r.metrics.pending()[series]
    assert held > 0 and r.value("openai_usage_requests_total", **labels) == 0
    r.poll()  # nothing new at the same instant, but the held increment shows now
    assert r.value("openai_usage_requests_total", **labels) == held


def test_a_restart_with_sqlite_neither_recounts_nor_loses(fake, tmp_path) -> None:
    db = str(tmp_path / "data.db")
    clock = Clock()
    first = rig(fake, clock, db=db)
    first.poll()
    start = clock.t
    for _ in range(3):
        clock.advance(INTERVAL)
        first.poll()
    first.poller.store.close()
    clock.advance(1200)  # 20 minutes down, inside the 60-minute lookback
    second = rig(fake, clock, db=db)
    second.poll()  # resumes: counts the downtime, held back on its brand-new series
    assert second.shown("openai_usage_tokens_total", "completions", "input") == 0
    clock.advance(INTERVAL)
    second.poll()
    for kind, field, name, token_type in FIELDS:
        total = first.counted(name, kind, token_type) + second.counted(name, kind, token_type)
        assert total == fake.org.usage_between(kind, field, start, clock.t), (kind, field)
    assert second.poller.status()["counting_since"] == first.poller.status()["counting_since"]


def test_a_restart_in_memory_counts_nothing_from_before_its_start(fake) -> None:
    clock = Clock()
    first = rig(fake, clock)
    first.poll()
    start = clock.t
    clock.advance(INTERVAL)
    first.poll()
    stop = clock.t
    clock.advance(1200)
    second = rig(fake, clock)
    second.poll()  # a fresh start: the lookback (downtime included) is its baseline
    restart = clock.t
    clock.advance(INTERVAL)
    second.poll()
    for kind, field, name, token_type in FIELDS:
        assert first.counted(name, kind, token_type) == fake.org.usage_between(
            kind, field, start, stop)
        assert second.counted(name, kind, token_type) == fake.org.usage_between(
            kind, field, restart, clock.t)


def test_sqlite_marks_are_dropped_when_group_by_changes(fake, tmp_path) -> None:
    db = str(tmp_path / "data.db")
    clock = Clock()
    first = rig(fake, clock, db=db)
    first.poll()
    first.poller.store.close()
    second = rig(fake, clock, db=db, group_by=("project_id", "model", "api_key_id"))
    assert second.poller.marks == {}  # other dimensions: a fresh start, nothing recounted
    second.poll()
    assert second.shown("openai_usage_tokens_total", "completions", "input") == 0
    with sqlite3.connect(db) as conn:
        dims = {d for (d,) in conn.execute("SELECT DISTINCT dims FROM usage_marks")}
    assert any("key_alpha_1" in d for d in dims)


def test_opt_in_group_by_adds_labels(fake) -> None:
    clock = Clock()
    r = rig(fake, clock, group_by=("project_id", "model", "api_key_id", "user_id"))
    r.poll()
    clock.advance(INTERVAL)
    r.poll()
    assert r.value("openai_usage_requests_total", kind="completions", project="proj_beta",
                   model="gpt-4o-audio-preview-2024-12-17", api_key="key_beta_1",
                   user="user-carol") > 0
    query = [q for q in fake.requests if q["path"].endswith("/usage/completions")][-1]
    assert query["query"]["group_by[]"] == "user_id"  # the last of the four


def test_project_only_grouping_leaves_model_empty(fake) -> None:
    clock = Clock()
    r = rig(fake, clock, group_by=("project_id",))
    r.poll()
    clock.advance(INTERVAL)
    r.poll()
    assert r.value("openai_usage_requests_total", kind="completions", project="proj_beta",
                   model="") > 0


def test_a_lookback_of_a_day_pages_through_two_pages(fake) -> None:
    clock = Clock()
    r = rig(fake, clock, lookback_minutes=1440, kinds=("images",))
    r.poll()
    start = clock.t
    clock.advance(INTERVAL)
    r.poll()
    pages = [q for q in fake.requests if q["path"].endswith("/usage/images")]
    assert [("page" in q["query"]) for q in pages] == [False, True, False, True]
    assert r.counted("openai_usage_images_total", "images") == fake.org.usage_between(
        "images", "images", start, clock.t)


def test_costs_are_gauges_of_today_and_this_month(fake) -> None:
    clock = Clock()
    r = rig(fake, clock)
    r.poll()
    now = clock.t
    day = int(now // 86400) * 86400
    month = int(datetime(2027, 1, 1, tzinfo=timezone.utc).timestamp())
    for project, line_item, _ in COST_LINES:
        want_day = fake.org.day_cost(day, project, line_item, now)
        want_month = sum(fake.org.day_cost(d, project, line_item, now)
                         for d in range(month, day + 1, 86400))
        got = {p: r.value("openai_org_cost_usd", project=project, line_item=line_item, period=p)
               for p in ("day", "month")}
        assert got["day"] == pytest.approx(want_day, abs=1e-6)
        assert got["month"] == pytest.approx(want_month, abs=1e-5)
    before = list(r.registry.collect())
    r.poll()  # recomputed, not added to: the same values
    assert [f.samples for f in r.registry.collect() if f.name == "openai_org_cost_usd"] == [
        f.samples for f in before if f.name == "openai_org_cost_usd"]
    other = rig(fake, clock)
    other.poll()  # a second exporter on the same organisation agrees
    assert ([f.samples for f in other.registry.collect() if f.name == "openai_org_cost_usd"]
            == [f.samples for f in before if f.name == "openai_org_cost_usd"])
    assert r.value("openai_usage_last_complete_bucket_timestamp_seconds",
                   endpoint="costs") == day


def test_projects_and_rate_limits(fake) -> None:
    clock = Clock()
    r = rig(fake, clock)
    r.poll()
    assert r.value("openai_project_info", project="proj_alpha", name="Alpha") == 1
    assert r.value("openai_project_info", project="proj_beta", name="Beta") == 1
    assert r.value("openai_project_info", project="proj_gamma", name="Gamma") is None  # archived
    for (project, model, kind), want in {
            ("proj_alpha", "gpt-4o-mini", "rpm"): 500, ("proj_alpha", "gpt-4o-mini", "tpm"): 200000,
            ("proj_alpha", "gpt-4o-mini", "rpd"): 10000,
            ("proj_alpha", "gpt-4o-mini", "batch_tpd"): 2000000,
            ("proj_alpha", "gpt-image-1-mini", "ipm"): 5,
            ("proj_beta", "whisper-1", "audio_mbpm"): 100}.items():
        assert r.value("openai_project_rate_limit", project=project, model=model,
                       kind=kind) == want
    assert r.value("openai_project_rate_limit", project="proj_beta", model="gpt-4o-mini",
                   kind="rpd") is None  # not configured for that project
    clock.advance(INTERVAL)
    r.poll()  # projects change rarely: read again only after an hour
    assert len([q for q in fake.requests if q["path"].endswith("/organization/projects")]) == 1
    clock.advance(3600)
    r.poll()
    assert len([q for q in fake.requests if q["path"].endswith("/organization/projects")]) == 2


def test_a_failed_rate_limit_read_keeps_the_last_values_and_retries(fake) -> None:
    clock = Clock()
    r = rig(fake, clock)
    r.poll()
    fake.set_fault("project_rate_limits", "server_error", count=1)
    clock.advance(3600)
    r.poll()
    assert r.value("openai_usage_poll_success", endpoint="rate_limits") == 0
    assert r.value("openai_usage_poll_success", endpoint="projects") == 1
    assert r.value("openai_project_rate_limit", project="proj_alpha", model="gpt-4o-mini",
                   kind="rpm") == 500
    clock.advance(INTERVAL)
    r.poll()  # not an hour later: retried at once because it failed
    assert r.value("openai_usage_poll_success", endpoint="rate_limits") == 1


def test_the_series_cap_folds_the_rest_into_overflow_and_keeps_sums(fake) -> None:
    clock = Clock()
    r = rig(fake, clock, max_series=2, kinds=("completions",))
    r.poll()
    start = clock.t
    clock.advance(INTERVAL)
    r.poll()
    clock.advance(INTERVAL)
    r.poll()
    label_sets = {(s.labels["project"], s.labels["model"])
                  for f in r.registry.collect() if f.name == "openai_usage_requests"
                  for s in f.samples}
    assert len(label_sets) == 3 and (OVERFLOW, OVERFLOW) in label_sets
    assert r.counted("openai_usage_requests_total", "completions") == \
        fake.org.usage_between("completions", "num_model_requests", start, clock.t)
    assert r.poller.status()["series"]["usage_folded"] == 2  # 4 sources, 2 admitted


def test_the_status_block_writes_times_as_rfc3339(fake) -> None:
    from exporter.web.usage_json import usage_json

    clock = Clock()
    r = rig(fake, clock)
    r.poll()
    doc = usage_json(r.poller.status(), {"budget_usd_per_day": None}, "how")
    assert doc["enabled"] and doc["last_poll"] == "2027-01-15T08:00:17.000Z"
    assert doc["counting_since"]["images"] == "2027-01-15T08:00:17.000Z"
    assert doc["endpoints"]["costs"]["last_success"] == "2027-01-15T08:00:17.000Z"
    assert doc["probe_budget"] == {"budget_usd_per_day": None}
    assert usage_json(None, {}, "how") == {"enabled": False, "reason": "how",
                                           "probe_budget": {}}


def test_a_failed_save_keeps_counting_and_logs_once_a_minute(fake, tmp_path, caplog) -> None:
    db = str(tmp_path / "data.db")
    clock = Clock()
    r = rig(fake, clock, db=db)
    r.poll()
    with sqlite3.connect(db) as conn:  # the table goes away under the running poller
        conn.execute("DROP TABLE usage_marks")
    start = clock.t
    with caplog.at_level(logging.ERROR, logger="exporter.usage"):
        for _ in range(3):
            clock.advance(INTERVAL)
            r.poll()
    errors = [rec for rec in caplog.records if "could not save the marks" in rec.getMessage()]
    assert len(errors) == 1
    assert r.counted("openai_usage_tokens_total", "completions", "input") == \
        fake.org.usage_between("completions", "input_tokens", start, clock.t)


def test_a_clock_stepping_back_does_not_count_evicted_buckets_again(fake) -> None:
    clock = Clock()
    r = rig(fake, clock)
    r.poll()
    start = clock.t
    clock.advance(INTERVAL)
    r.poll()
    counted = r.shown("openai_usage_tokens_total", "completions", "input")
    clock.advance(-150)  # NTP steps the wall clock back 2.5 minutes
    r.poll()
    assert r.shown("openai_usage_tokens_total", "completions", "input") == counted
    clock.advance(150 + INTERVAL)
    r.poll()
    assert r.shown("openai_usage_tokens_total", "completions", "input") == \
        fake.org.usage_between("completions", "input_tokens", start, clock.t)

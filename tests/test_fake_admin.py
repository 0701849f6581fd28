"""The fake upstream's organisation admin API: shapes checked field by field against the
spec's schemas with plain requests, read by the official SDK's admin client with strict
validation, validated like the API, paged, growing, revisable, behind the admin key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
import requests

from exporter.fake import FakeUpstream, mask_key
from exporter.fake.org import SOURCES, Organization
from tests.conftest import ADMIN_CANARY_KEY as ADMIN_KEY
from tests.conftest import Clock

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
NOW = 1_800_000_017.0
MINUTE = int(NOW // 60) * 60

# Required fields and their types, from shared/openai-openapi.yaml.
PAGE = {"object": str, "data": list, "has_more": bool}  # next_page: string or null
BUCKET = {"object": str, "start_time": int, "end_time": int, "results": list}
RESULT = {
    "completions": {"input_tokens": int, "output_tokens": int, "num_model_requests": int},
    "embeddings": {"input_tokens": int, "num_model_requests": int},
    "moderations": {"input_tokens": int, "num_model_requests": int},
    "images": {"images": int, "num_model_requests": int},
    "audio_speeches": {"characters": int, "num_model_requests": int},
    "audio_transcriptions": {"seconds": int, "num_model_requests": int},
}
GROUP_KEYS = ("project_id", "user_id", "api_key_id", "model")
PROJECT = {"id": str, "object": str, "created_at": int}
RATE_LIMIT = {"object": str, "id": str, "model": str, "max_requests_per_1_minute": int,
              "max_tokens_per_1_minute": int}
LIST = {"object": str, "data": list, "has_more": bool}


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(admin_key=ADMIN_KEY) as server:
        server.org.clock = Clock(NOW)
        yield server


def get(fake: FakeUpstream, path: str, params: Any = None, key: str = ADMIN_KEY
        ) -> requests.Response:
    return requests.get(fake.base_url + path, params=params, timeout=5,
                        headers={"Authorization": f"Bearer {key}"})


def has(obj: dict, schema: dict[str, type]) -> None:
    for name, kind in schema.items():
        assert name in obj, name
        assert isinstance(obj[name], kind) and not (kind is int and isinstance(obj[name], bool)), (
            name, obj[name])


def error_of(resp: requests.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    return err


@pytest.mark.parametrize("kind", list(RESULT))
def test_usage_answers_have_the_spec_shape(fake: FakeUpstream, kind: str) -> None:
    resp = get(fake, f"/organization/usage/{kind}", [
        ("start_time", MINUTE - 600), ("bucket_width", "1m"), ("group_by[]", "project_id"),
        ("group_by", "model")])
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    page = resp.json()
    has(page, PAGE)
    assert page["object"] == "page" and page["next_page"] is None and not page["has_more"]
    assert [b["start_time"] for b in page["data"]] == list(range(MINUTE - 600, MINUTE + 60, 60))
    results = 0
    for bucket in page["data"]:
        has(bucket, BUCKET)
        assert bucket["object"] == "bucket" and bucket["end_time"] == bucket["start_time"] + 60
        for result in bucket["results"]:
            results += 1
            has(result, RESULT[kind])
            assert result["object"] == f"organization.usage.{kind}.result"
            assert result["user_id"] is None and result["api_key_id"] is None  # not grouped
            assert isinstance(result["project_id"], str) and isinstance(result["model"], str)
    assert results > 0
    assert any(b["results"] == [] for b in page["data"]) or kind == "completions"


def test_completions_report_the_optional_token_fields(fake: FakeUpstream) -> None:
    page = get(fake, "/organization/usage/completions", {
        "start_time": MINUTE - 3600, "bucket_width": "1h", "group_by": "model"}).json()
    audio = [r for b in page["data"] for r in b["results"]
             if r["model"].startswith("gpt-4o-audio")]
    assert audio and all(r["input_audio_tokens"] > 0 and r["output_audio_tokens"] > 0
                         for r in audio)
    for r in (r for b in page["data"] for r in b["results"]):
        assert r["input_cached_tokens"] <= r["input_tokens"]
        assert r["input_uncached_tokens"] + r["input_cached_tokens"] == r["input_tokens"]


def test_buckets_of_every_width_add_up(fake: FakeUpstream) -> None:
    start = MINUTE - MINUTE % 3600 - 3600  # the previous whole hour
    minutes = get(fake, "/organization/usage/images", {
        "start_time": start, "end_time": start + 3600, "bucket_width": "1m",
        "limit": 60}).json()
    hour = get(fake, "/organization/usage/images", {
        "start_time": start, "end_time": start + 3600, "bucket_width": "1h"}).json()
    total = sum(r["images"] for b in minutes["data"] for r in b["results"])
    assert total > 0 and [r["images"] for r in hour["data"][0]["results"]] == [total]


def test_costs_answers_have_the_spec_shape(fake: FakeUpstream) -> None:
    page = get(fake, "/organization/costs", [("start_time", MINUTE - 3 * 86400),
                                             ("group_by[]", "project_id"),
                                             ("group_by[]", "line_item")]).json()
    has(page, PAGE)
    assert len(page["data"]) == 4  # three whole days and today's
    for bucket in page["data"]:
        has(bucket, BUCKET)
        assert bucket["end_time"] - bucket["start_time"] == 86400
        assert bucket["start_time"] % 86400 == 0
        for result in bucket["results"]:
            assert result["object"] == "organization.costs.result"
            assert isinstance(result["amount"]["value"], float)
            assert result["amount"]["currency"] == "usd"
            for name in ("project_id", "line_item"):
                assert isinstance(result[name], str)
            for name in ("api_key_id", "quantity", "quantity_unit"):
                assert name in result and result[name] is None
    ungrouped = get(fake, "/organization/costs", {"start_time": MINUTE - 86400}).json()
    assert all(len(b["results"]) == 1 and b["results"][0]["project_id"] is None
               for b in ungrouped["data"])


def test_projects_and_rate_limits_have_the_spec_shape(fake: FakeUpstream) -> None:
    page = get(fake, "/organization/projects").json()
    has(page, LIST)
    assert [p["id"] for p in page["data"]] == ["proj_alpha", "proj_beta"]
    for p in page["data"]:
        has(p, PROJECT)
        assert p["object"] == "organization.project" and p["status"] == "active"
    every = get(fake, "/organization/projects", {"include_archived": "true"}).json()
    assert every["data"][-1]["status"] == "archived"
    limits = get(fake, "/organization/projects/proj_alpha/rate_limits").json()
    has(limits, LIST)
    for rl in limits["data"]:
        has(rl, RATE_LIMIT)
        assert rl["object"] == "project.rate_limit"
    err = error_of(get(fake, "/organization/projects/proj_nope/rate_limits"), 404)
    assert "proj_nope" in err["message"]


def test_lists_page_with_limit_and_after(fake: FakeUpstream) -> None:
    first = get(fake, "/organization/projects", {"limit": 1}).json()
    assert [p["id"] for p in first["data"]] == ["proj_alpha"] and first["has_more"]
    second = get(fake, "/organization/projects", {"limit": 1, "after": first["last_id"]}).json()
    assert [p["id"] for p in second["data"]] == ["proj_beta"] and not second["has_more"]


def test_usage_pages_follow_next_page(fake: FakeUpstream) -> None:
    params = [("start_time", MINUTE - 240), ("bucket_width", "1m"), ("limit", 2)]
    whole = get(fake, "/organization/usage/embeddings", params[:2]).json()
    buckets, cursor, pages = [], None, 0
    while True:
        page = get(fake, "/organization/usage/embeddings",
                   params + ([("page", cursor)] if cursor else [])).json()
        pages += 1
        buckets += page["data"]
        if not page["has_more"]:
            assert page["next_page"] is None
            break
        cursor = page["next_page"]
        assert cursor.startswith("page_")
    assert pages == 3 and buckets == whole["data"]


@pytest.mark.parametrize("path,params,param,code", [
    ("usage/completions", {}, "start_time", "missing_required_parameter"),
    ("usage/completions", {"start_time": "soon"}, "start_time", "invalid_type"),
    ("usage/completions", {"start_time": 60, "bucket_width": "5m"}, "bucket_width",
     "invalid_value"),
    ("usage/completions", {"start_time": 60, "bucket_width": "1m", "limit": 1441}, "limit",
     "invalid_value"),
    ("usage/completions", {"start_time": 60, "bucket_width": "1d", "limit": 32}, "limit",
     "invalid_value"),
    ("usage/completions", {"start_time": 60, "bucket_width": "1h", "limit": 0}, "limit",
     "invalid_value"),
    ("usage/embeddings", {"start_time": 60, "group_by": "batch"}, "group_by", "invalid_value"),
    ("usage/completions", {"start_time": 60, "page": "nonsense!"}, "page", "invalid_value"),
    ("usage/completions", {"start_time": 120, "end_time": 60}, "end_time", "invalid_value"),
    ("costs", {"start_time": 60, "bucket_width": "1h"}, "bucket_width", "invalid_value"),
    ("costs", {"start_time": 60, "limit": 181}, "limit", "invalid_value"),
    ("costs", {"start_time": 60, "group_by": "model"}, "group_by", "invalid_value"),
    ("projects", {"limit": 101}, "limit", "invalid_value"),
])
def test_requests_are_validated_like_the_api(fake: FakeUpstream, path: str, params: dict,
                                             param: str, code: str) -> None:
    err = error_of(get(fake, f"/organization/{path}", params), 400)
    assert (err["type"], err["param"], err["code"]) == ("invalid_request_error", param, code)


def test_completions_accept_their_own_group_by_fields(fake: FakeUpstream) -> None:
    assert get(fake, "/organization/usage/completions",
               {"start_time": MINUTE - 60, "group_by": "batch"}).status_code == 200


def test_the_admin_key_is_required(fake: FakeUpstream) -> None:
    params = {"start_time": MINUTE - 60}
    err = error_of(requests.get(fake.base_url + "/organization/costs", params=params,
                                timeout=5), 401)
    assert "didn't provide an API key" in err["message"]
    probe_key = "sk-proj-VKMIsabcdefghijklmnopwjh3"
    err = error_of(get(fake, "/organization/costs", params, key=probe_key), 403)
    assert err["code"] == "insufficient_permissions" and probe_key not in err["message"]
    wrong = "sk-admin-wrongwrongwrongwrong1234"
    err = error_of(get(fake, "/organization/costs", params, key=wrong), 401)
    assert mask_key(wrong) in err["message"] and wrong not in err["message"]
    with FakeUpstream() as open_fake:  # no admin_key: any sk-admin- key, nothing else
        assert get(open_fake, "/organization/projects", key=wrong).status_code == 200
        assert get(open_fake, "/organization/projects", key=probe_key).status_code == 403


def test_admin_requests_are_recorded_with_the_key_redacted(fake: FakeUpstream) -> None:
    get(fake, "/organization/projects")
    record = fake.requests[-1]
    assert record["endpoint"] == "projects" and record["status"] == 200
    assert record["headers"]["authorization"] == "<redacted>"


def test_the_current_minute_grows_and_closed_ones_stay(fake: FakeUpstream) -> None:
    clock = fake.org.clock
    params = {"start_time": MINUTE - 120, "bucket_width": "1m", "group_by": "model"}

    def totals() -> list[int]:
        page = get(fake, "/organization/usage/completions", params).json()
        return [sum(r["input_tokens"] for r in b["results"]) for b in page["data"]]

    before = totals()
    clock.advance(20)
    after = totals()
    assert after[:2] == before[:2] and after[2] > before[2]


def test_late_data_keeps_closed_minutes_growing() -> None:
    src = SOURCES["completions"][0]
    org = Organization(lag_seconds=120)
    minute = next(m for m in range(MINUTE - 6000, MINUTE, 60)
                  if org.visible("completions", m, src, m + 1000))
    seen = [org.visible("completions", minute, src, minute + t)["input_tokens"]
            for t in (30, 60, 120, 180, 600)]
    assert seen == sorted(seen) and seen[1] < seen[3] == seen[4]  # grows past its end


def test_a_revision_lowers_a_past_bucket(fake: FakeUpstream) -> None:
    params = {"start_time": MINUTE - 600, "bucket_width": "1m"}
    page = get(fake, "/organization/usage/embeddings", params).json()
    bucket = next(b for b in page["data"] if b["results"])
    fake.org.revise("embeddings", bucket["start_time"], 0.5)
    again = get(fake, "/organization/usage/embeddings", params).json()
    revised = next(b for b in again["data"] if b["start_time"] == bucket["start_time"])
    assert revised["results"][0]["input_tokens"] == bucket["results"][0]["input_tokens"] // 2


def test_chaos_revises_a_few_closed_minutes_by_itself() -> None:
    calm, chaos = Organization(), Organization(chaos=True)
    src = SOURCES["completions"][0]
    changed = [m for m in range(MINUTE - 86400, MINUTE - 600, 60)
               if calm.visible("completions", m, src, MINUTE)
               != chaos.visible("completions", m, src, MINUTE)]
    assert 0 < len(changed) < 1440 / 5


# ------------------------------------------------------------------ the official SDK


@pytest.fixture
def sdk(fake: FakeUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="sk-proj-unused", admin_api_key=ADMIN_KEY,
                       base_url=fake.base_url, max_retries=0, timeout=5,
                       _strict_response_validation=True) as client:
        yield client


@pytest.mark.parametrize("kind", list(RESULT))
def test_the_sdk_reads_every_usage_kind(sdk: openai.OpenAI, fake: FakeUpstream,
                                        kind: str) -> None:
    method = getattr(sdk.admin.organization.usage, kind)
    page = method(start_time=MINUTE - 300, bucket_width="1m", group_by=["project_id", "model"],
                  limit=3)
    assert page.has_more and page.next_page and len(page.data) == 3
    rest = method(start_time=MINUTE - 300, bucket_width="1m", group_by=["project_id", "model"],
                  limit=3, page=page.next_page)
    assert not rest.has_more and rest.data[-1].start_time == MINUTE
    assert fake.requests[-1]["query"]["group_by[]"] == "model"  # the SDK's array form


def test_the_sdk_reads_costs_projects_and_rate_limits(sdk: openai.OpenAI) -> None:
    costs = sdk.admin.organization.usage.costs(start_time=MINUTE - 86400,
                                               group_by=["project_id", "line_item"])
    assert costs.data[0].results[0].amount.currency == "usd"
    assert [p.id for p in sdk.admin.organization.projects.list()] == ["proj_alpha", "proj_beta"]
    limits = list(sdk.admin.organization.projects.rate_limits.list_rate_limits("proj_beta"))
    assert {rl.model for rl in limits} >= {"gpt-4o-mini", "whisper-1"}


def test_the_sdk_raises_on_a_probe_key(fake: FakeUpstream) -> None:
    with openai.OpenAI(api_key="x", admin_api_key="sk-proj-notadmin", base_url=fake.base_url,
                       max_retries=0) as client, pytest.raises(openai.PermissionDeniedError):
        client.admin.organization.projects.list()

"""The organisation admin API as the spec shapes it: ``/organization/usage/{kind}``,
``/organization/costs``, ``/organization/projects`` and
``/organization/projects/{project_id}/rate_limits``, behind the admin key.

Validation follows the spec (shared/openai-api-facts.md §7): ``start_time`` required,
``bucket_width`` 1m/1h/1d (costs: 1d only) with its ``limit`` bounds, ``group_by`` and the
SDK's ``group_by[]`` both accepted, ``page`` cursors from ``next_page``; an empty bucket
has ``results: []``. The numbers come from org.Organization.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from .errors import ApiError, error, invalid, mask_key, unauthorized
from .exchange import Plan, Request, plan_json
from .org import COST_LINES, PROJECTS, PROJECT_CREATED, RATE_LIMITS, SOURCES
from .tables import Json

ADMIN_KEY_PREFIX = "sk-admin-"
# Bucket widths: seconds, default limit, max limit (costs: 1d only, limit 1-180).
WIDTHS = {"1m": (60, 60, 1440), "1h": (3600, 24, 168), "1d": (86400, 7, 31)}
COSTS_LIMITS = (7, 180)
USAGE_GROUP_BY = ("project_id", "user_id", "api_key_id", "model")
EXTRA_GROUP_BY = {"completions": ("batch", "service_tier"), "images": ("size", "source")}
COSTS_GROUP_BY = ("project_id", "line_item", "api_key_id")
_SOURCE_FIELD = {"project_id": "project", "user_id": "user", "api_key_id": "api_key",
                 "model": "model"}
ADMIN_ENDPOINTS: dict[str, str] = {
    **{f"usage_{kind}": f"/v1/organization/usage/{kind}" for kind in SOURCES},
    "costs": "/v1/organization/costs",
    "projects": "/v1/organization/projects",
    "project_rate_limits": "/v1/organization/projects/{project_id}/rate_limits",
}
"""Fault target name -> path of every admin route (all GET)."""

INSUFFICIENT_PERMISSIONS = (
    "You have insufficient permissions for this operation. This endpoint needs an admin "
    "API key of the organization (sk-admin-...); project and user keys cannot read it.")


def admin_key_auth(req: Request, fake: Any) -> tuple[str, Plan | None]:
    """The admin key: ``fake.admin_key`` when set, else any ``sk-admin-`` key. A probe
    key gets 403 (it is a key, just not an admin one); a wrong admin key 401."""
    key = req.credential
    if not key:
        return key, unauthorized(req, key)
    if fake.admin_key is not None and key == fake.admin_key:
        return key, None
    if fake.admin_key is None and key.startswith(ADMIN_KEY_PREFIX):
        return key, None
    if key.startswith(ADMIN_KEY_PREFIX):
        return key, plan_json(401, error(
            f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
            "https://platform.openai.com/settings/organization/admin-keys.",
            "invalid_request_error", None, "invalid_api_key"))
    return key, plan_json(403, error(INSUFFICIENT_PERMISSIONS, "invalid_request_error", None,
                                     "insufficient_permissions"))


def _values(req: Request, name: str) -> list[str]:
    """Every value of an array parameter, sent as ``name`` or ``name[]``."""
    return list(req.multi.get(name, [])) + list(req.multi.get(name + "[]", []))


def _int(req: Request, name: str, required: bool = False) -> int | None:
    raw = req.query.get(name)
    if raw is None:
        if required:
            raise invalid(f"Missing required parameter: '{name}'.", name,
                          "missing_required_parameter")
        return None
    try:
        return int(raw)
    except ValueError:
        raise invalid(f"Invalid type for '{name}': expected an integer, but got a string "
                      "instead.", name, "invalid_type") from None


def _window(req: Request, widths: dict[str, tuple[int, int, int]]) -> tuple[int, int, int, int]:
    """(first bucket start, end, width seconds, limit) of a usage or costs read."""
    start = _int(req, "start_time", required=True)
    assert start is not None
    end = _int(req, "end_time")
    width_name = req.query.get("bucket_width", "1d")
    if width_name not in widths:
        raise invalid(f"Invalid value for 'bucket_width': '{width_name}'. Supported values "
                      f"are: {', '.join(repr(w) for w in widths)}.", "bucket_width",
                      "invalid_value")
    width, default, most = widths[width_name]
    limit = _int(req, "limit")
    if limit is None:
        limit = default
    if not 1 <= limit <= most:
        raise invalid(f"Invalid 'limit': expected an integer between 1 and {most} for "
                      f"bucket_width={width_name}, but got {limit} instead.", "limit",
                      "invalid_value")
    end = int(req.org.clock()) + 1 if end is None else end  # now, the current second in
    if end <= start:
        raise invalid("'end_time' must be after 'start_time'.", "end_time", "invalid_value")
    return start - start % width, end, width, limit


def _group_by(req: Request, allowed: tuple[str, ...]) -> tuple[str, ...]:
    fields = _values(req, "group_by")
    for name in fields:
        if name not in allowed:
            raise invalid(f"Invalid value for 'group_by': '{name}'. Supported values are: "
                          f"{', '.join(allowed)}.", "group_by", "invalid_value")
    return tuple(dict.fromkeys(fields))


def _page(req: Request, first: int, end: int, width: int, limit: int,
          bucket: Any) -> Json:
    """One page of buckets from the cursor on: ``UsageResponse``."""
    cursor = req.query.get("page")
    if cursor:
        try:
            raw = base64.urlsafe_b64decode(cursor.removeprefix("page_").encode())
            (first,) = struct.unpack(">q", raw)
        except (ValueError, struct.error):
            raise invalid("Invalid 'page': not a cursor this API returned.", "page",
                          "invalid_value") from None
    starts = list(range(first, end, width))
    page, rest = starts[:limit], starts[limit:]
    next_page = ("page_" + base64.urlsafe_b64encode(struct.pack(">q", rest[0])).decode()
                 if rest else None)
    return {"object": "page", "data": [bucket(s, s + width) for s in page],
            "has_more": bool(rest), "next_page": next_page}


def usage(req: Request, variant: str | None) -> tuple[Json, int]:
    """GET /organization/usage/{kind}: buckets of grouped results."""
    kind = req.path.rsplit("/", 1)[1]
    first, end, width, limit = _window(req, WIDTHS)
    group_by = _group_by(req, USAGE_GROUP_BY + EXTRA_GROUP_BY.get(kind, ()))
    projects, models = set(_values(req, "project_ids")), set(_values(req, "models"))
    org = req.org
    now = org.clock()
    sources = [s for s in SOURCES[kind]
               if (not projects or s.project in projects) and (not models or s.model in models)]

    def bucket(start: int, stop: int) -> Json:
        rows: dict[tuple[Any, ...], dict[str, int]] = {}
        for minute in range(start, min(stop, end), 60):
            for src in sources:
                values = org.visible(kind, minute, src, now)
                if not values:
                    continue
                key = tuple(getattr(src, _SOURCE_FIELD[g]) if g in _SOURCE_FIELD and g in
                            group_by else None for g in USAGE_GROUP_BY)
                row = rows.setdefault(key, dict.fromkeys(values, 0))
                for name, value in values.items():
                    row[name] += value
        results = []
        for key, values in rows.items():
            result = {"object": f"organization.usage.{kind}.result", **values,
                      **dict(zip(USAGE_GROUP_BY, key, strict=True))}
            for extra in EXTRA_GROUP_BY.get(kind, ()):
                result[extra] = None  # never grouped by here
            results.append(result)
        return {"object": "bucket", "start_time": start, "end_time": stop, "results": results}

    return _page(req, first, end, width, limit, bucket), 0


def costs(req: Request, variant: str | None) -> tuple[Json, int]:
    """GET /organization/costs: one-day buckets of amounts in USD."""
    first, end, width, limit = _window(req, {"1d": (86400, *COSTS_LIMITS)})
    group_by = _group_by(req, COSTS_GROUP_BY)
    projects = set(_values(req, "project_ids"))
    org = req.org
    now = org.clock()

    def bucket(start: int, stop: int) -> Json:
        rows: dict[tuple[str | None, str | None], float] = {}
        for project, line_item, _ in COST_LINES:
            if projects and project not in projects:
                continue
            usd = org.day_cost(start, project, line_item, min(now, end))
            if usd:
                key = (project if "project_id" in group_by else None,
                       line_item if "line_item" in group_by else None)
                rows[key] = rows.get(key, 0.0) + usd
        return {"object": "bucket", "start_time": start, "end_time": stop, "results": [
            {"object": "organization.costs.result",
             "amount": {"value": round(usd, 6), "currency": "usd"},
             "line_item": line_item, "project_id": project, "api_key_id": None,
             "quantity": None, "quantity_unit": None}
            for (project, line_item), usd in rows.items()]}

    return _page(req, first, end, width, limit, bucket), 0


def _list(req: Request, items: list[Json], most: int, default: int) -> Json:
    """A cursor page of a list endpoint: limit, after, has_more, first/last ids."""
    limit = _int(req, "limit")
    limit = default if limit is None else limit
    if not 1 <= limit <= most:
        raise invalid(f"Invalid 'limit': expected an integer between 1 and {most}, but got "
                      f"{limit} instead.", "limit", "invalid_value")
    after = req.query.get("after")
    if after:
        position = next((i for i, item in enumerate(items) if item["id"] == after), None)
        items = [] if position is None else items[position + 1:]
    page = items[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}


def projects(req: Request, variant: str | None) -> tuple[Json, int]:
    """GET /organization/projects: active ones, archived too with include_archived."""
    archived = req.query.get("include_archived", "false").lower() == "true"
    items = [{"id": pid, "object": "organization.project", "name": name,
              "created_at": PROJECT_CREATED,
              "archived_at": PROJECT_CREATED + 86400 if status == "archived" else None,
              "status": status}
             for pid, name, status in PROJECTS if archived or status == "active"]
    return _list(req, items, 100, 20), 0


def rate_limits(req: Request, variant: str | None) -> tuple[Json, int]:
    """GET /organization/projects/{project_id}/rate_limits."""
    pid = req.path_params.get("project_id", "")
    if pid not in RATE_LIMITS:
        raise ApiError(404, error(f"The project {pid} was not found", "invalid_request_error",
                                  None, "not_found"))
    items = [{"object": "project.rate_limit", "id": f"rl-{limit['model']}", **limit}
             for limit in RATE_LIMITS[pid]]
    return _list(req, items, 100, 100), 0

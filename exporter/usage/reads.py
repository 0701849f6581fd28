"""The admin answers as plain numbers: usage buckets as rows per bucket, costs as day and
month totals, projects and their rate limits as label sets. Every shape check is here; a
wrong shape is an ``invalid_response`` AdminError and nothing of that read is used."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

from .client import AdminError, Json
from .kinds import Kind
from .marks import Dims, Values, sum_rows
from .metrics import OVERFLOW, LabelCap

log = logging.getLogger("exporter.usage")

MAX_LABEL_CHARS = 200
# ProjectRateLimit fields -> the kind label of openai_project_rate_limit.
LIMIT_FIELDS = (
    ("max_requests_per_1_minute", "rpm"), ("max_tokens_per_1_minute", "tpm"),
    ("max_images_per_1_minute", "ipm"), ("max_audio_megabytes_per_1_minute", "audio_mbpm"),
    ("max_requests_per_1_day", "rpd"), ("batch_1_day_max_input_tokens", "batch_tpd"),
)
CostKey = tuple[str, str]  # project, line_item


def usage_rows(kind: Kind, pages: list[Json], dim_fields: list[str],
               cap: LabelCap) -> dict[int, dict[Dims, Values]]:
    """bucket start -> dimensions -> one value per field of the kind (None: not reported).
    Dimensions past the cap are folded into the OVERFLOW set, their rows added up."""
    rows: dict[int, list[tuple[Dims, Values]]] = {}
    for page in pages:
        for bucket in page["data"]:
            target = rows.setdefault(bucket_start(bucket), [])
            for result in bucket["results"]:
                if not isinstance(result, dict) or result.get("object") != kind.result_object:
                    raise AdminError("invalid_response",
                                     f"a {kind.name} bucket holds a result of another kind")
                dims = tuple(label(result.get(g)) for g in dim_fields)
                if not cap.admit((kind.name, *dims)):
                    dims = (OVERFLOW,) * len(dims)
                target.append((dims, tuple(number(result, f.name, f.required)
                                           for f in kind.fields)))
    return {start: sum_rows(r) for start, r in rows.items()}


class Costs:
    """Reads costs pages into the spend gauges; warns once about a currency not USD."""

    def __init__(self, cap: LabelCap) -> None:
        self.cap = cap
        self._warned = False

    def gauges(self, pages: list[Json], day_start: int
               ) -> tuple[dict[tuple[str, str, str], float], dict[str, float]]:
        """(project, line_item, period) -> USD, and the day and month totals."""
        month: dict[CostKey, float] = {}
        day: dict[CostKey, float] = {}
        for page in pages:
            for bucket in page["data"]:
                start = bucket_start(bucket)
                for result in bucket["results"]:
                    key, usd = self._cost(result)
                    if key is None:
                        continue
                    month[key] = month.get(key, 0.0) + usd
                    if start >= day_start:
                        day[key] = day.get(key, 0.0) + usd
        gauges: dict[tuple[str, str, str], float] = {}
        for (project, line_item), usd in month.items():
            gauges[(project, line_item, "month")] = usd
            # 0 rather than absent, so that month - day always has both sides.
            gauges[(project, line_item, "day")] = day.get((project, line_item), 0.0)
        return gauges, {"day": sum(day.values()), "month": sum(month.values())}

    def _cost(self, result: Json) -> tuple[CostKey | None, float]:
        if not isinstance(result, dict) or result.get("object") != "organization.costs.result":
            raise AdminError("invalid_response", "a costs bucket holds another kind of result")
        amount = result.get("amount")
        if not isinstance(amount, dict):
            raise AdminError("invalid_response", "a costs result without amount")
        usd = number(amount, "value", True) or 0.0
        currency = amount.get("currency")
        if not isinstance(currency, str) or currency.lower() != "usd":
            if not self._warned:
                self._warned = True
                log.warning("usage: costs in %r are left out (openai_org_cost_usd is USD)",
                            str(currency)[:20])
            return None, 0.0
        key = (label(result.get("project_id")), label(result.get("line_item")))
        return (key if self.cap.admit(key) else (OVERFLOW, OVERFLOW)), usd


def projects(items: list[Json], cap: LabelCap) -> tuple[dict[tuple[str, str], float],
                                                        list[str]]:
    """(project, name) -> 1 for the projects within the cap, and their ids."""
    info: dict[tuple[str, str], float] = {}
    ids = []
    for p in items:
        if not isinstance(p, dict) or not isinstance(p.get("id"), str):
            raise AdminError("invalid_response", "a project without an id")
        if cap.admit((p["id"],)):
            info[(label(p["id"]), label(p.get("name")))] = 1.0
            ids.append(p["id"])
    return info, ids


def rate_limits(project: str, items: Iterable[Json], cap: LabelCap,
                out: dict[tuple[str, str, str], float]) -> int:
    """Add one project's limits to `out`; returns how many (project, model) the cap left
    out (no overflow set here: a sum of limits means nothing)."""
    dropped = 0
    for rl in items:
        if not isinstance(rl, dict) or not isinstance(rl.get("model"), str):
            raise AdminError("invalid_response", "a rate limit without a model")
        if not cap.admit((project, rl["model"])):
            dropped += 1
            continue
        for name, kind in LIMIT_FIELDS:
            value = rl.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[(label(project), label(rl["model"]), kind)] = float(value)
    return dropped


def bucket_start(bucket: Json) -> int:
    """The start of a UsageTimeBucket that has a results list."""
    if not isinstance(bucket, dict) or not isinstance(bucket.get("results"), list):
        raise AdminError("invalid_response", "a bucket without results")
    start = bucket.get("start_time")
    if isinstance(start, bool) or not isinstance(start, int):
        raise AdminError("invalid_response", "a bucket without an integer start_time")
    return start


def number(obj: dict[str, Any], name: str, required: bool) -> float | None:
    """A count >= 0; None when an optional field is absent."""
    value = obj.get(name)
    if value is None:
        if required:
            raise AdminError("invalid_response", f"a result without {name}")
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value < 0):
        raise AdminError("invalid_response", f"{name} is not a number >= 0")
    return value


def label(value: Any) -> str:
    """A label value from the organisation: None (not grouped) is ""; bounded length."""
    if value is None:
        return ""
    return str(value)[:MAX_LABEL_CHARS]

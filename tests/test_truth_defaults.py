"""Truth at the shipped defaults: the dashboard over a simulated 75-minute timeline.

tests/test_truth.py checks every expression at one instant with the exporter at fast
settings. This one runs the exporter's code at its *shipped* settings (schedule, mode,
endpoints, usage poll interval) on a simulated clock against the fake upstream, healthy and
in the demo's chaos profile (tests/timeline.py), backfills a real Prometheus 2.42 with the
scrapes of the shipped scrape_interval and the recording rules (tests/prom.py), and then
`query_range`s every dashboard panel from minute 15 on, with the variables at "All" and
with each endpoint selected:

- no panel is NaN or empty on more than 5 % of its points (per series and step);
- healthy: no stat panel's last value sits in a warning colour (its thresholds and value
  mappings), no alert fires; chaos: only the stats documented as showing the faults do;
- a stat never shows a non-zero value as zero at its decimals ("$0.00"), and Cost/day
  matches what the simulated probes spent;
- the alerts that fire under chaos are the ones docs/bundle.md lists.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml

from tests import promql
from tests.conftest import clean_env, free_port
from tests.prom import Backfilled, Processes, Prometheus, query_range
from tests.timeline import Timeline, scrape_interval, simulate
from tests.tools import require_tool

ROOT = promql.ROOT
DASHBOARD = ROOT / "grafana" / "dashboards" / "openai-api.json"
BUNDLE_MD = ROOT / "docs" / "bundle.md"
MINUTES = 75  # more than the 1 h window of the cost panels, plus the 15 minutes of warm-up
WARMUP = 15 * 60  # points before this are not judged
MAX_BAD = 0.05  # share of NaN/empty points a panel may have
STEP = 15.0  # Grafana's step for a 1 h view at the datasource's 15 s timeInterval
# What Grafana puts in for that view: $__rate_interval = max($__interval + scrape, 4 x scrape).
RANGE_VALUES = {**promql.GRAFANA_VALUES, "__interval": "15s", "__interval_ms": "15000",
                "__rate_interval": "1m", "__range": "1h", "__range_s": "3600",
                "__range_ms": "3600000"}
OK_COLOURS = {"green", "dark-green", "semi-dark-green", "light-green", "super-light-green",
              "blue", "text", "transparent"}
# Stats that may sit in a warning colour under chaos, because the faults are real there
# (docs/bundle.md, "The demo's chaos profile"): errors, and the admin API failing reads.
CHAOS_WARNING_STATS = {"Error %", "Success per endpoint", "Admin API reads OK"}


@dataclass
class Run:
    profile: str
    prom: Prometheus
    timeline: Timeline
    start: float
    end: float

    @property
    def judged_from(self) -> float:
        return self.start + WARMUP


@pytest.fixture(scope="module", params=["healthy", "chaos"])
def run(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    prometheus, promtool = require_tool("prometheus"), require_tool("promtool")
    profile = request.param
    work = tmp_path_factory.mktemp(f"defaults-{profile}")
    # In the recent past, so the blocks are inside retention and queries see them.
    end = math.floor(time.time() / 60) * 60 - 60
    start = end - MINUTES * 60
    timeline = simulate(profile, start, MINUTES)
    openmetrics = timeline.write_openmetrics(work / "scrapes.om.txt")
    procs = Processes(work, ROOT, clean_env())
    try:
        prom = Backfilled(procs, prometheus, promtool, work, free_port()).build(
            openmetrics, start, end)
        yield Run(profile, prom, timeline, start, end)
    finally:
        procs.stop()


def panels() -> list[dict]:
    d = json.loads(DASHBOARD.read_text())
    return [p for p in promql.iter_panels(d["panels"]) if p.get("targets")
            and (p.get("datasource") or {}).get("type", "prometheus") == "prometheus"]


def endpoints() -> tuple[str, ...]:
    from exporter.settings import load
    return load([], {"OPENAI_API_KEY": "sk-x"}).targets[0].probes


def selections() -> list[tuple[str, dict[str, str]]]:
    """Variable values: every drop-down at "All", then each endpoint alone."""
    return [("All", RANGE_VALUES)] + [
        (f"endpoint={e}", {**RANGE_VALUES, "endpoint": e}) for e in endpoints()]


def _exists(prom: Prometheus, expr: str, endpoint: str, at: float) -> bool:
    """Whether every metric the expression reads has series for the endpoint: a panel
    of token counts has nothing to show for `models`, which takes no tokens."""
    for name in promql.metric_names(expr):
        doc = prom.query(f'group(last_over_time({name}{{endpoint="{endpoint}"}}[1h]))', at)
        if not doc.get("data", {}).get("result"):
            return False
    return True


def bad_points(result: list, steps: int) -> int:
    """NaN or missing points of a matrix, over every series it returned (an empty
    result: every step of one series)."""
    if not result:
        return steps
    bad = 0
    for series in result:
        values = [v for _, v in series["values"]]
        bad += steps - len(values) + sum(1 for v in values if v.lower() == "nan")
    return bad


def _last(series: dict) -> float | None:
    vals = [float(v) for _, v in series["values"] if v.lower() != "nan"]
    return vals[-1] if vals else None


def colour(panel: dict, value: float) -> str:
    """The colour Grafana gives a stat's value: a value mapping's, else the thresholds'."""
    fc = panel.get("fieldConfig", {}).get("defaults", {})
    for m in fc.get("mappings") or []:
        if m.get("type") == "value":
            for key, opt in m["options"].items():
                if float(key) == value and opt.get("color"):
                    return opt["color"]
    picked = "green"
    for step in fc.get("thresholds", {}).get("steps", []):
        if step["value"] is None or value >= step["value"]:
            picked = step["color"]
    return picked


def shown_as_zero(panel: dict, value: float) -> bool:
    """Whether a non-zero value would read as zero at the panel's decimals (without
    `decimals` Grafana picks them from the value's magnitude, which never shows 0)."""
    fc = panel.get("fieldConfig", {}).get("defaults", {})
    decimals = fc.get("decimals")
    if decimals is None or value == 0:
        return False
    shown = value * 100 if fc.get("unit") == "percentunit" else value
    return round(shown, decimals) == 0


def test_no_panel_is_blank_at_the_shipped_defaults(run: Run) -> None:
    steps = int((run.end - run.judged_from) // STEP) + 1
    failures, checked = [], 0
    for panel in panels():
        for target in panel["targets"]:
            expr = target.get("expr")
            if not expr:
                continue
            for label, values in selections():
                if label != "All" and "endpoint" not in expr:
                    continue  # the drop-down does not change this one
                query = promql.substitute(expr, values)
                if label != "All" and not _exists(run.prom, query, values["endpoint"],
                                                  run.end):
                    continue  # nothing of this kind for this endpoint (tokens of `models`)
                checked += 1
                if target.get("instant"):
                    doc = run.prom.query(query, run.end)
                    res = doc["data"]["result"] if doc.get("status") == "success" else []
                    res = [r for r in res if r["value"][1].lower() != "nan"]
                    if not res:
                        failures.append(f"{panel['title']!r} [{label}] instant: no data\n"
                                        f"    {query}")
                    continue
                result = query_range(run.prom, query, run.judged_from, run.end, STEP)
                bad = bad_points(result, steps)
                total = max(1, len(result)) * steps
                if bad / total > MAX_BAD:
                    failures.append(f"{panel['title']!r} [{label}]: {bad} of {total} points "
                                    f"NaN or empty\n    {query}")
    assert checked > 100
    assert not failures, (f"{run.profile}: {len(failures)} panel queries blank on more than "
                          f"{MAX_BAD:.0%} of their points after minute 15:\n"
                          + "\n".join(failures))


def test_stats_are_not_in_a_warning_colour_when_all_is_well(run: Run) -> None:
    problems, zeros = [], []
    for panel in panels():
        if panel["type"] != "stat":
            continue
        for target in panel["targets"]:
            for label, values in selections():
                if label != "All" and "endpoint" not in target["expr"]:
                    continue
                query = promql.substitute(target["expr"], values)
                for series in query_range(run.prom, query, run.judged_from, run.end, STEP):
                    value = _last(series)
                    if value is None:
                        continue
                    c = colour(panel, value)
                    if c not in OK_COLOURS:
                        problems.append((panel["title"], label, series["metric"], value, c))
                    if shown_as_zero(panel, value):
                        zeros.append(f"{panel['title']!r} [{label}]: {value} shows as 0")
    assert not zeros, "\n".join(zeros)
    allowed = set() if run.profile == "healthy" else CHAOS_WARNING_STATS
    unexpected = [p for p in problems if p[0] not in allowed]
    assert not unexpected, f"{run.profile}: stats in a warning colour:\n" + "\n".join(
        f"{t!r} [{lab}] {m}: {v:g} is {c}" for t, lab, m, v, c in unexpected)
    if run.profile == "chaos":  # the faults do show
        assert "Error %" in {p[0] for p in problems}, problems


def test_cost_per_day_is_what_the_probes_spend(run: Run) -> None:
    """The Cost/day stat at the end of the timeline: the last hour's spend x 24 (failed
    probes cost nothing, so chaos shows less)."""
    panel = next(p for p in panels() if p["title"].startswith("Cost/day"))
    query = promql.substitute(panel["targets"][0]["expr"], RANGE_VALUES)
    shown = float(run.prom.result(query, run.end)[0]["value"][1])
    spent = sum(r.cost_usd for t, _, _, r in run.timeline.probes if t > run.end - 3600)
    assert shown == pytest.approx(spent * 24, rel=0.1)
    # A fixed `decimals` of 2 showed this as "$0.00": the panel leaves them to Grafana.
    decimals = panel["fieldConfig"]["defaults"].get("decimals")
    assert decimals is None or round(shown, decimals) == pytest.approx(shown, rel=0.1)


# -- alerts ----------------------------------------------------------------------------------

def _duration(text: str) -> float:
    m = re.fullmatch(r"(\d+)([smh])", text)
    assert m, text
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]


def alerts() -> list[dict]:
    out = []
    for path in promql.RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out += [r for r in group["rules"] if "alert" in r]
    return out


def firing(run: Run) -> dict[str, float]:
    """Alert name -> share of the judged timeline it was firing, for every alert that
    fired at all: its expression held for a label set at every evaluation for `for:`."""
    every = float(scrape_interval())  # the shipped evaluation_interval equals it
    out: dict[str, float] = {}
    for rule in alerts():
        hold = _duration(rule.get("for", "0s"))
        result = query_range(run.prom, rule["expr"], run.start, run.end, every)
        fired: set[float] = set()
        for series in result:
            since = None
            prev = None
            for ts, _ in series["values"]:
                ts = float(ts)
                if prev is None or ts - prev > every * 1.5:
                    since = ts
                prev = ts
                assert since is not None
                if ts - since >= hold and ts >= run.judged_from:
                    fired.add(ts)
        if fired:
            out[rule["alert"]] = len(fired) / ((run.end - run.judged_from) / every + 1)
    return out


def documented_chaos_alerts() -> dict[str, str]:
    """docs/bundle.md's table of what the chaos demo fires: alert -> "for good",
    "at times" or "no"."""
    text = BUNDLE_MD.read_text()
    m = re.search(r"<!-- chaos-alerts -->\n(.*?)<!-- /chaos-alerts -->", text, re.S)
    assert m, "docs/bundle.md has no chaos-alerts table"
    rows = re.findall(r"^\| `(\w+)` \| (for good|at times|no)\b", m.group(1), re.M)
    return dict(rows)


def test_alerts_fire_as_documented(run: Run) -> None:
    fired = firing(run)
    if run.profile == "healthy":
        assert not fired, f"alerts firing against a healthy upstream: {fired}"
        return
    documented = documented_chaos_alerts()
    assert set(documented) == {a["alert"] for a in alerts()}, (
        "docs/bundle.md's chaos table must list every alert")
    seen = {name: ("for good" if share > 0.95 else "at times") for name, share in
            fired.items()}
    expected = {name: state for name, state in documented.items() if state != "no"}
    assert seen == expected, f"under chaos: fired {fired}, documented {documented}"


"""Every PromQL expression the bundle ships, pulled out of the dashboards and rule files.

Used by the dashboard lint (tests/test_bundle.py) and by the truth test
(tests/test_truth.py), which runs each expression against a real Prometheus. Grafana
variables ($__rate_interval, $target, ...) are replaced by concrete values first.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator, Mapping

import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
RULE_FILES = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))

# What Grafana would put in: built-ins as for a short time range, and every query
# variable at "All" (allValue ".*"). Windows stay short enough for a Prometheus that
# has a minute of data.
GRAFANA_VALUES: dict[str, str] = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
    "__auto": "1m",
    "job": ".*",
    "target": ".*",
    "region": ".*",
    "endpoint": ".*",
    "model": ".*",
    "log_status": ".+",
}

# ${var}, ${var:format}, $var and [[var]] (the old syntax). A name starts with a letter or
# "_": "$1" is label_replace()'s first capture group, not a variable.
_VAR = re.compile(r"\$\{([A-Za-z_]\w*)(?::\w+)?\}|\$([A-Za-z_]\w*)|\[\[(\w+)(?::\w+)?\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(.*),)?\s*(\w+)\s*\)\s*$", re.S)


@dataclass(frozen=True)
class Query:
    """One expression and where it lives, for failure messages."""

    where: str  # "panel", "variable", "record" or "alert"
    name: str  # panel title, variable name, recorded series or alert name
    expr: str  # as written in the file
    datasource: str = "prometheus"  # "prometheus" or "loki"
    source: str = ""  # file name

    def describe(self) -> str:
        return f"{self.source}: {self.where} {self.name!r}: {self.expr}"


def substitute(expr: str, values: Mapping[str, str] = GRAFANA_VALUES) -> str:
    """Replace Grafana variables; an unknown variable is an error, not a silent blank."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise KeyError(f"no test value for Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VAR.sub(repl, expr)


def label_values(query: str) -> tuple[str, str] | None:
    """`label_values(metric{...}, label)` -> (series selector, label); else None."""
    m = _LABEL_VALUES.match(query)
    if not m:
        return None
    selector, label = m.group(1), m.group(2)
    return ((selector or f'{{{label}!=""}}').strip(), label)


def _datasource_type(ds: object, default: str) -> str:
    if isinstance(ds, dict) and ds.get("type"):
        return str(ds["type"])
    return default


def iter_panels(panels: list[dict]) -> Iterator[dict]:
    for p in panels:
        yield p
        yield from iter_panels(p.get("panels") or [])  # collapsed rows keep theirs inside


def dashboard_queries(path: Path) -> list[Query]:
    """Panel targets and query variables of one dashboard."""
    d = json.loads(path.read_text())
    out: list[Query] = []
    for p in iter_panels(d.get("panels", [])):
        panel_ds = _datasource_type(p.get("datasource"), "prometheus")
        for t in p.get("targets") or []:
            expr = t.get("expr")
            if expr:
                out.append(Query("panel", p.get("title", ""), expr,
                                 _datasource_type(t.get("datasource"), panel_ds), path.name))
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        expr = q.get("query", "") if isinstance(q, dict) else (q or v.get("definition", ""))
        out.append(Query("variable", v["name"], expr,
                         _datasource_type(v.get("datasource"), "prometheus"), path.name))
    return out


def rule_queries(paths: list[Path] = RULE_FILES) -> list[Query]:
    """Recording and alerting rules, in file order."""
    out: list[Query] = []
    for path in paths:
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    out.append(Query("record", rule["record"], rule["expr"], source=path.name))
                else:
                    out.append(Query("alert", rule["alert"], rule["expr"], source=path.name))
    return out


def recorded_names(paths: list[Path] = RULE_FILES) -> set[str]:
    return {q.name for q in rule_queries(paths) if q.where == "record"}


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
             "or", "unless", "offset", "atan2", "inf", "nan", "Inf", "NaN"}


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads (not functions, labels or keywords)."""
    s = _STRINGS.sub('""', expr)
    s = _BRACES.sub("", s)
    s = _BRACKETS.sub("", s)
    s = _GROUPING.sub("", s)
    names = set()
    for m in _IDENT.finditer(s):
        rest = s[m.end():].lstrip()
        word = m.group(0)
        if rest.startswith("(") or word in _KEYWORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]?", word):
            continue
        names.add(word)
    return names


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)


def doc_queries(lang: str = "promql", paths: list[Path] = DOCS) -> list[Query]:
    """Expressions in ```promql (or ```logql) blocks of the README and docs/.

    Inside a block, `#` lines are comments and name the next expression; an expression
    runs until the next comment or blank line, so multi-line expressions work.
    """
    out: list[Query] = []
    for path in paths:
        for m in _FENCE.finditer(path.read_text()):
            if m.group(1) != lang:
                continue
            title, lines = "", []
            for line in m.group(2).splitlines() + [""]:
                if line.strip() and not line.lstrip().startswith("#"):
                    lines.append(line)
                    continue
                if lines:
                    out.append(Query("doc", title, "\n".join(lines),
                                     "loki" if lang == "logql" else "prometheus", path.name))
                    lines = []
                if line.lstrip().startswith("#"):
                    title = line.lstrip("# ").strip()
    return out

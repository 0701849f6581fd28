"""Mutation check of the Prometheus rules: every mutated expression must fail a promtool test.

Each alerting and recording expression in prometheus/rules/ is mutated one way at a time:
a branch of `or`/`and`/`unless` dropped, `>`/`>=` and `<`/`<=` flipped, a number doubled,
a range window changed, a label matcher broken, a label dropped from `on (...)`. Each
mutant is written to a temporary copy of the rules with the promtool tests next to it
(their rule_files paths are relative), and `promtool test rules` must fail.

To stay fast, a mutant runs only the test groups that can see it (alert tests of the
mutated alert or of an alert reading the mutated series, expression tests reading it),
against only the rules those tests need: the same evaluations the whole suite does for
those tests, without the rest. The groups run one by one, cheapest first (fewest
evaluations), and the first failure kills the mutant. Mutants promtool rejects
(`check rules`) do not count.

    python -m tests.rule_mutations [--limit-per-rule N] [--jobs 2] [--only REGEX] [--list]

EQUIVALENT lists mutants that change nothing a test can see, each with its reason.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "prometheus" / "rules"
TESTS_DIR = ROOT / "prometheus" / "tests"

# (rule name, mutation description) -> why the mutant is equivalent.
EQUIVALENT: dict[tuple[str, str], str] = {}
# Burn-rate and ratio comparisons against a factor: a ratio of two rates divided by
# 1 - 0.99 (0.010000000000000009 in floating point) never equals the factor exactly.
EQUIVALENT_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^flip '[<>]=?' before ' (14\.4|6|3|1)\b"),
     "a burn rate (ratio / (1 - objective)) never equals the factor exactly in floating point"),
    # The description holds only the next 40 characters, so this names the recording
    # rules (the alert's own `< ..._reset_seconds` is not equivalent).
    (re.compile(r"^target_model:openai_rate_limit_\w+_remaining:seconds_to_zero_deriv5m\|"
                r"flip '<' before ' openai_rate_limit_\w+_reset_second"),
     "`x < reset or reset` vs `x <= reset or reset`: at x == reset both give reset, same labels"),
]

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_DURATION = re.compile(r"\[(\d+)([smhdw])\]")
_NUMBER = re.compile(r"(?<![\w.\[:])(\d+(?:\.\d+)?)(?![\w.\]:])")
_COMPARE = re.compile(r"(?<![=!<>~])(>=|<=|>|<)(?!=)")
_SETOP = re.compile(r"\b(or|and|unless)\b")
_ON = re.compile(r"\bon\s*\(([^)]*)\)")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Mutant:
    file: str
    group: int
    index: int
    rule: str  # alert or recorded name
    what: str
    expr: str


def _masked(expr: str) -> str:
    """The expression with strings and {...} selectors blanked (same length)."""
    s = _STRING.sub(lambda m: " " * len(m.group(0)), expr)
    return re.sub(r"\{[^{}]*\}", lambda m: " " * len(m.group(0)), s)


def _operand_end(masked: str, start: int) -> int:
    """End of the operand starting at `start`: next set operator or unmatched ')' at depth 0."""
    depth = 0
    i = start
    while i < len(masked):
        c = masked[i]
        if c == "(":
            depth += 1
        elif c == ")":
            if depth == 0:
                return i
            depth -= 1
        elif depth == 0 and _SETOP.match(masked, i) and (i == 0 or not masked[i - 1].isalnum()):
            return i
        i += 1
    return len(masked)


def _operand_start(masked: str, end: int) -> int:
    depth = 0
    i = end - 1
    while i >= 0:
        c = masked[i]
        if c == ")":
            depth += 1
        elif c == "(":
            if depth == 0:
                return i + 1
            depth -= 1
        elif depth == 0:
            m = _SETOP.match(masked, i)
            if m and (i == 0 or not masked[i - 1].isalnum()) and i + len(m.group(0)) <= end:
                return i + len(m.group(0))
        i -= 1
    return 0


def mutations(expr: str) -> list[tuple[str, str]]:
    """(description, mutated expression) for one expression."""
    out: list[tuple[str, str]] = []
    masked = _masked(expr)
    for m in _SETOP.finditer(masked):
        op = m.group(1)
        right_end = _operand_end(masked, m.end())
        left_start = _operand_start(masked, m.start())
        out.append((f"drop the right operand of '{op}' at {m.start()}",
                    expr[:m.start()] + expr[right_end:]))
        out.append((f"drop the left operand of '{op}' at {m.start()}",
                    expr[:left_start] + expr[m.end():]))
    flips = {">": ">=", ">=": ">", "<": "<=", "<=": "<"}
    for m in _COMPARE.finditer(masked):
        after = expr[m.end():m.end() + 40]
        out.append((f"flip '{m.group(1)}' before '{after}'",
                    expr[:m.start()] + flips[m.group(1)] + expr[m.end():]))
    for m in _NUMBER.finditer(re.sub(r"\[[^\]]*\]", lambda x: " " * len(x.group(0)), masked)):
        value = float(m.group(1))
        new = f"{value * 2:g}"
        out.append((f"double the number {m.group(1)} at {m.start()}",
                     expr[:m.start()] + new + expr[m.end():]))
    for m in _DURATION.finditer(expr):
        n, unit = int(m.group(1)), m.group(2)
        out.append((f"window [{n}{unit}] -> [{n * 2}{unit}] at {m.start()}",
                    expr[:m.start()] + f"[{n * 2}{unit}]" + expr[m.end():]))
    for m in _MATCHER.finditer(expr):
        out.append((f"break the matcher {m.group(0)}",
                    expr[:m.start(3)] + "mutant" + m.group(3) + expr[m.end(3):]))
    for m in _ON.finditer(masked):
        labels = [x.strip() for x in expr[m.start(1):m.end(1)].split(",") if x.strip()]
        for label in labels:
            rest = ", ".join(x for x in labels if x != label)
            out.append((f"drop {label} from on ({', '.join(labels)})",
                        expr[:m.start(1)] + rest + expr[m.end(1):]))
    return out


def _rule_files() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(RULES_DIR.glob("*.yml"))}


def _name(rule: dict) -> str:
    return rule.get("record") or rule["alert"]


def all_mutants() -> list[Mutant]:
    out = []
    for fname, doc in _rule_files().items():
        for gi, group in enumerate(doc["groups"]):
            for ri, rule in enumerate(group["rules"]):
                for what, expr in mutations(rule["expr"]):
                    if expr != rule["expr"]:
                        out.append(Mutant(fname, gi, ri, _name(rule), what, expr))
    return out


def _deps() -> dict[str, set[str]]:
    """Rule name -> names of recorded series its expression reads."""
    docs = _rule_files()
    records = {r["record"] for d in docs.values() for g in d["groups"] for r in g["rules"]
               if "record" in r}
    deps: dict[str, set[str]] = {}
    for d in docs.values():
        for g in d["groups"]:
            for r in g["rules"]:
                words = set(re.findall(r"[a-zA-Z_:][\w:]*", r["expr"]))
                deps.setdefault(_name(r), set()).update(words & records)
    return deps


def _closure(names: set[str], deps: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), list(names)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        todo.extend(deps.get(n, ()))
    return seen


def _test_needs(test: dict, records: set[str]) -> set[str]:
    needs = {c["alertname"] for c in test.get("alert_rule_test", [])}
    for c in test.get("promql_expr_test", []):
        needs |= set(re.findall(r"[a-zA-Z_:][\w:]*", c["expr"])) & records
    return needs


_DUR_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_DUR_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def _seconds(duration: str) -> float:
    return sum(int(n) * _DUR_SECONDS[u] for n, u in _DUR_PART.findall(str(duration)))


def _cost(test: dict, doc: dict) -> float:
    """Evaluations promtool makes for one test group: its last eval_time / the interval."""
    times = [_seconds(c["eval_time"]) for key in ("alert_rule_test", "promql_expr_test")
             for c in test.get(key, [])]
    return max(times, default=0) / _seconds(doc.get("evaluation_interval", "1m"))


def _workdir(mutant: Mutant, tmp: Path) -> list[Path]:
    """Rules (mutated, cut to what the chosen tests need) and one file per test group that
    sees the mutant, cheapest first (run_mutant stops at the first that fails)."""
    docs = _rule_files()
    deps = _deps()
    records = {n for n in deps if ":" in n}
    rules = docs[mutant.file]["groups"][mutant.group]["rules"]
    rules[mutant.index]["expr"] = mutant.expr
    (tmp / "rules").mkdir()
    (tmp / "tests").mkdir()
    needed: set[str] = set()
    groups: list[tuple[float, str, dict]] = []
    for path in sorted(TESTS_DIR.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for i, test in enumerate(doc["tests"]):
            needs = _closure(_test_needs(test, records), deps)
            if mutant.rule in needs:
                needed |= needs
                one = dict(doc, tests=[test])
                groups.append((_cost(test, doc), f"{path.stem}-{i:02d}.yml", one))
    out = []
    for _, name, one in sorted(groups, key=lambda g: (g[0], g[1])):
        (tmp / "tests" / name).write_text(yaml.safe_dump(one, sort_keys=False))
        out.append(tmp / "tests" / name)
    if out:
        for fname, doc in docs.items():
            for g in doc["groups"]:
                g["rules"] = [r for r in g["rules"] if _name(r) in needed]
            (tmp / "rules" / fname).write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def run_mutant(mutant: Mutant, promtool: str) -> str:
    """'killed', 'survived', 'invalid' or 'untested'."""
    tmp = Path(tempfile.mkdtemp(prefix="mutant-"))
    try:
        test_paths = _workdir(mutant, tmp)
        if not test_paths:
            return "untested"
        rule_paths = [str(p) for p in sorted((tmp / "rules").glob("*.yml"))]
        check = subprocess.run([promtool, "check", "rules", *rule_paths],
                               capture_output=True, text=True, timeout=60)
        if check.returncode != 0:
            return "invalid"
        for path in test_paths:
            r = subprocess.run([promtool, "test", "rules", str(path)],
                               capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                return "killed"
        return "survived"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def equivalent_reason(m: Mutant) -> str | None:
    if (m.rule, m.what) in EQUIVALENT:
        return EQUIVALENT[(m.rule, m.what)]
    for pattern, reason in EQUIVALENT_PATTERNS:
        if pattern.search(m.what) or pattern.search(f"{m.rule}|{m.what}"):
            return reason
    return None


def kind(m: Mutant) -> str:
    """The mutation kind: drop-operand, flip, number, window, matcher or on-label."""
    for prefix, k in (("drop the ", "drop-operand"), ("flip ", "flip"), ("double ", "number"),
                      ("window ", "window"), ("break ", "matcher"), ("drop ", "on-label")):
        if m.what.startswith(prefix):
            return k
    raise ValueError(m.what)


def sample(mutants: list[Mutant], per_rule: int) -> list[Mutant]:
    """At most `per_rule` mutants of each rule, picked by a stable hash (every rule covered),
    plus the first by the same hash of each mutation kind the picks miss (every kind covered).
    The hash is of the rule name and the mutation's description, so the sample only moves
    when the rules do."""
    def key(m: Mutant) -> str:
        return hashlib.sha256(f"{m.rule}|{m.what}".encode()).hexdigest()

    by_rule: dict[tuple[str, int, int], list[Mutant]] = {}
    for m in mutants:
        by_rule.setdefault((m.file, m.group, m.index), []).append(m)
    out = []
    for ms in by_rule.values():
        ms = sorted(ms, key=key)
        out.extend(ms[:per_rule] if per_rule > 0 else ms)
    kinds = {kind(m) for m in out}
    for m in sorted(mutants, key=key):
        if kind(m) not in kinds:
            kinds.add(kind(m))
            out.append(m)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit-per-rule", type=int, default=2, help="0: every mutant")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--promtool", default=shutil.which("promtool") or "promtool")
    ap.add_argument("--only", metavar="REGEX",
                    help="run only mutants whose 'rule: description' matches (re.search)")
    ap.add_argument("--list", action="store_true", help="print the chosen mutants, run none")
    args = ap.parse_args(argv)
    everything = all_mutants()
    chosen = sample([m for m in everything if not equivalent_reason(m)], args.limit_per_rule)
    if args.only:
        try:
            only = re.compile(args.only)
        except re.error as e:
            ap.error(f"--only: {e}")
        chosen = [m for m in chosen if only.search(f"{m.rule}: {m.what}")]
    if args.list:
        for m in chosen:
            print(f"{m.file} {m.rule}: {m.what}".replace("\n", " "))
        return 0
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda m: (m, run_mutant(m, args.promtool)), chosen))
    counts: dict[str, int] = {}
    for m, outcome in results:
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome in ("survived", "untested"):
            print(f"{outcome}: {m.file} {m.rule}: {m.what}")
    print(f"mutants: {len(everything)} generated, {len(chosen)} run, "
          + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 1 if counts.get("survived") or counts.get("untested") else 0


if __name__ == "__main__":
    sys.exit(main())

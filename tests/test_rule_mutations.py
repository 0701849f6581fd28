"""The promtool tests catch mutated rules (tests/rule_mutations.py, issue 11 item 6).

The sample: one mutant of every alerting and recording rule, picked by a stable hash of
the rule name and the mutation, plus one of each mutation kind (drop an operand of
`or`/`and`/`unless`, flip a comparison, double a number, double a window, break a
matcher, drop a label from `on (...)`) the per-rule picks miss; EQUIVALENT mutants are
left out. Every mutant run must make `promtool test rules` fail. The full run of every
mutant (`python -m tests.rule_mutations --limit-per-rule 0 --jobs 2`) takes minutes; its
figures are in docs/bundle.md.
"""

from __future__ import annotations

import shutil

import yaml

from tests import rule_mutations
from tests.tools import require_tool


def test_every_sampled_rule_mutant_fails_the_promtool_tests(capsys) -> None:
    promtool = require_tool("promtool")
    code = rule_mutations.main(["--limit-per-rule", "1", "--jobs", "2", "--promtool", promtool])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "survived" not in out and "untested" not in out, out
    assert " killed" in out, out


def test_the_sample_covers_every_rule_and_every_mutation_kind() -> None:
    everything = [m for m in rule_mutations.all_mutants()
                  if not rule_mutations.equivalent_reason(m)]
    chosen = rule_mutations.sample(everything, 1)
    assert {(m.file, m.group, m.index) for m in chosen} == \
        {(m.file, m.group, m.index) for m in everything}
    assert {rule_mutations.kind(m) for m in chosen} == \
        {rule_mutations.kind(m) for m in everything}


def test_a_deleted_test_case_lets_a_mutant_survive(tmp_path, monkeypatch) -> None:
    """The check can fail: without the tokens case of OpenAIRateLimitHeadroomLow, dropping
    the tokens half of the alert goes unnoticed."""
    promtool = require_tool("promtool")
    tests_dir = tmp_path / "tests"
    shutil.copytree(rule_mutations.TESTS_DIR, tests_dir)
    path = tests_dir / "openai-exporter.alerts.test.yml"
    doc = yaml.safe_load(path.read_text())
    doc["tests"] = [t for t in doc["tests"] if "tokens limit" not in t["name"]]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setattr(rule_mutations, "TESTS_DIR", tests_dir)
    mutant = next(m for m in rule_mutations.all_mutants()
                  if m.rule == "OpenAIRateLimitHeadroomLow"
                  and m.what.startswith("drop the right operand of 'or'"))
    assert rule_mutations.run_mutant(mutant, promtool) == "survived"
    monkeypatch.setattr(rule_mutations, "TESTS_DIR", rule_mutations.ROOT / "prometheus" / "tests")
    assert rule_mutations.run_mutant(mutant, promtool) == "killed"

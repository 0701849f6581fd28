"""The README's "what the default probes cost per day" table, recomputed: the default
probes of an openai target against the fake upstream, priced with the shipped table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from exporter.prober import Prober
from exporter.settings import load, shipped_prices

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def sig2(x: float) -> str:
    """Two significant digits, written as the README writes them (0.00093, 0.0036)."""
    return f"{float(f'{x:.2g}'):.10f}".rstrip("0")


def test_the_cost_table_matches_the_defaults(fake):
    settings = load([], {"OPENAI_API_KEY": "sk-readme"})
    target = dataclasses.replace(settings.targets[0], base_url=fake.base_url)
    assert (settings.interval_seconds, settings.mode, len(target.probes)) == (
        30.0, "roundrobin", 10)
    per_day = 86400 / settings.interval_seconds / len(target.probes)  # roundrobin
    assert per_day == 288
    prober = Prober(target, timeout_seconds=5, prices=shipped_prices())
    runs = {e: prober.run(e) for e in target.probes}
    assert all(r.success for r in runs.values()), runs
    for pair in (("chat", "chat_stream"), ("responses", "responses_stream")):
        a, b = (runs[e] for e in pair)
        assert (a.input_tokens, a.output_tokens, a.cost_usd) == (
            b.input_tokens, b.output_tokens, b.cost_usd)  # streaming costs the same
        assert (f"| `{pair[0]}`, `{pair[1]}` | {a.input_tokens} / {a.output_tokens} | "
                f"{a.cost_usd:.8f} | {sig2(a.cost_usd * per_day)} each |") in README
    emb = runs["embeddings"]
    assert (f"| `embeddings` | {emb.input_tokens} / {emb.output_tokens} | "
            f"{emb.cost_usd:.8f} | {sig2(emb.cost_usd * per_day)} |") in README
    free = [e for e, r in runs.items() if r.cost_usd == 0]
    assert "| " + ", ".join(f"`{e}`" for e in free) + " | – | 0 | 0 |" in README
    total = sum(r.cost_usd for r in runs.values()) * per_day
    streams = (runs["chat_stream"].cost_usd + runs["responses_stream"].cost_usd) * per_day
    assert (f"| **all 10 default probes** (2,880 probes a day) | | | **{sig2(total)}** "
            f"({sig2(total * 30)} a month) |") in README
    assert f"half of it ({sig2(streams)} a day)" in README
    assert f"({sig2(total * 10)} a day)" in README  # PROBE_MODE=all

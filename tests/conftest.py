"""Shared fixtures: a fake upstream on 127.0.0.1 and target settings pointing at it."""

from __future__ import annotations

import pytest

from exporter.fake_upstream import FakeUpstream
from exporter.settings import TargetSettings

CANARY_KEY = "sk-proj-CANARY0x7e3b9d1f2a4c6e8b0d2f4a6c8e0b2d4f6a8c"

MODELS = {"chat": "gpt-4o-mini", "embeddings": "text-embedding-3-small",
          "moderation": "omni-moderation-latest", "image": "gpt-image-1-mini"}


@pytest.fixture
def fake():
    with FakeUpstream(seed=7) as upstream:
        yield upstream


def make_target(base_url: str, **kw) -> TargetSettings:
    base = dict(name="openai", provider="openai", base_url=base_url, api_key=CANARY_KEY,
                region="us-west-1", models=dict(MODELS),
                probes=("chat", "responses", "embeddings", "moderations", "models", "files",
                        "fine_tunes", "batches"))
    base.update(kw)
    return TargetSettings(**base)

"""Shared fixtures: a fake upstream on 127.0.0.1 and target settings pointing at it;
helpers for tests that start the exporter as a process."""

from __future__ import annotations

import os
import socket

import pytest

from exporter.fake import FakeUpstream
from exporter.settings import TargetSettings

CANARY_KEY = "sk-proj-CANARY0x7e3b9d1f2a4c6e8b0d2f4a6c8e0b2d4f6a8c"
# The admin key's canary (usage poller, fake admin API): it must show up nowhere either.
ADMIN_CANARY_KEY = "sk-admin-CANARYadmin0x5f1e2d3c4b5a69788796a5b4c3d2e1f0"

MODELS = {"chat": "gpt-4o-mini", "embeddings": "text-embedding-3-small",
          "moderation": "omni-moderation-latest", "image": "gpt-image-1-mini"}


@pytest.fixture
def fake():
    with FakeUpstream(seed=7) as upstream:
        yield upstream


class Clock:
    """A wall clock the test moves (the fake organisation's and the usage poller's)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


def make_target(base_url: str, **kw) -> TargetSettings:
    base = dict(name="openai", provider="openai", base_url=base_url, api_key=CANARY_KEY,
                region="us-west-1", models=dict(MODELS),
                probes=("chat", "responses", "embeddings", "moderations", "models", "files",
                        "fine_tunes", "batches"))
    base.update(kw)
    return TargetSettings(**base)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Settings the exporter reads from the environment: a child process must not inherit
# the developer's.
_EXPORTER_ENV = ("OPENAI_", "PROBE_", "HTTP_TIMEOUT", "LISTEN_", "LOG_", "DEMO", "CONFIG_FILE",
                 "ENABLE_DB", "DB_FILE", "WEB_AUTH", "HISTORY_", "USAGE_", "SHARD_")


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without the exporter's settings, and talking to 127.0.0.1 directly
    whatever *_proxy says; then `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_EXPORTER_ENV)
           and k.lower() not in {"http_proxy", "https_proxy", "all_proxy"}}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env

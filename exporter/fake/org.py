"""The fake organisation behind the admin API: projects, their rate limits, and usage and
costs that are a pure function of time, so a test can compute exactly what the API shows
at any moment (shared/openai-openapi.yaml: UsageResponse, CostsResult, ProjectRateLimit).

Usage: each (kind, minute, project, model) has a final value fixed by a hash. A minute
fills linearly from its start until ``lag_seconds`` after its end (so the current minute
grows between polls, and with a lag closed minutes keep growing: late data). A minute can
be revised: ``revise()`` scales one bucket for good; in chaos profile a few minutes are
revised down by 10 % three minutes after they closed.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .tables import Json


@dataclass(frozen=True)
class Source:
    """Who uses a kind: a project, a model (as the usage API names it: the dated
    snapshot), an API key and a user."""

    project: str
    model: str
    api_key: str
    user: str
    audio: bool = False  # completions of an audio model also spend audio tokens


PROJECTS: tuple[tuple[str, str, str], ...] = (
    ("proj_alpha", "Alpha", "active"),
    ("proj_beta", "Beta", "active"),
    ("proj_gamma", "Gamma", "archived"),
)
PROJECT_CREATED = 1711471533

SOURCES: dict[str, tuple[Source, ...]] = {
    "completions": (
        Source("proj_alpha", "gpt-4o-mini-2024-07-18", "key_alpha_1", "user-alice"),
        Source("proj_alpha", "gpt-4.1-mini-2025-04-14", "key_alpha_2", "user-bob"),
        Source("proj_beta", "gpt-4o-mini-2024-07-18", "key_beta_1", "user-carol"),
        Source("proj_beta", "gpt-4o-audio-preview-2024-12-17", "key_beta_1", "user-carol",
               audio=True),
    ),
    "embeddings": (Source("proj_alpha", "text-embedding-3-small", "key_alpha_1", "user-alice"),),
    "moderations": (
        Source("proj_beta", "omni-moderation-2024-09-26", "key_beta_1", "user-carol"),),
    "images": (Source("proj_alpha", "gpt-image-1-mini", "key_alpha_2", "user-bob"),),
    "audio_speeches": (Source("proj_beta", "tts-1", "key_beta_1", "user-carol"),),
    "audio_transcriptions": (Source("proj_beta", "whisper-1", "key_beta_1", "user-carol"),),
}

# Rate limits per project, by model alias (the Projects API does not use snapshots).
RATE_LIMITS: dict[str, tuple[Json, ...]] = {
    "proj_alpha": (
        {"model": "gpt-4o-mini", "max_requests_per_1_minute": 500,
         "max_tokens_per_1_minute": 200000, "max_requests_per_1_day": 10000,
         "batch_1_day_max_input_tokens": 2000000},
        {"model": "gpt-4.1-mini", "max_requests_per_1_minute": 500,
         "max_tokens_per_1_minute": 200000},
        {"model": "text-embedding-3-small", "max_requests_per_1_minute": 3000,
         "max_tokens_per_1_minute": 1000000},
        {"model": "gpt-image-1-mini", "max_requests_per_1_minute": 50,
         "max_tokens_per_1_minute": 100000, "max_images_per_1_minute": 5},
    ),
    "proj_beta": (
        {"model": "gpt-4o-mini", "max_requests_per_1_minute": 100,
         "max_tokens_per_1_minute": 40000},
        {"model": "gpt-4o-audio-preview", "max_requests_per_1_minute": 50,
         "max_tokens_per_1_minute": 20000},
        {"model": "whisper-1", "max_requests_per_1_minute": 50,
         "max_tokens_per_1_minute": 10000, "max_audio_megabytes_per_1_minute": 100},
        {"model": "tts-1", "max_requests_per_1_minute": 50, "max_tokens_per_1_minute": 10000},
    ),
    "proj_gamma": (),
}

# Costs: (project, line item) -> USD per minute of the day, scaled per day by a hash.
COST_LINES: tuple[tuple[str, str, float], ...] = (
    ("proj_alpha", "gpt-4o-mini-2024-07-18, input", 0.002),
    ("proj_alpha", "gpt-4o-mini-2024-07-18, output", 0.004),
    ("proj_alpha", "text-embedding-3-small", 0.0005),
    ("proj_beta", "gpt-4o-mini-2024-07-18, input", 0.001),
    ("proj_beta", "tts-1", 0.003),
)

CHAOS_REVISION = 0.9  # chaos: some closed minutes drop to 90 % ...
CHAOS_REVISION_AFTER = 180.0  # ... three minutes after they stopped filling


def _hash(*parts: object) -> int:
    text = ":".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def final_values(kind: str, minute: int, src: Source) -> dict[str, int] | None:
    """What (kind, minute, source) reports once complete; None for a minute without use."""
    h = _hash(kind, minute, src.project, src.model)
    if h % 4 == 0:
        return None  # about one minute in four is idle
    requests = 1 + h % 9
    if kind == "completions":
        inp = requests * (50 + (h >> 8) % 400)
        audio_in, audio_out = (requests * 20, requests * 30) if src.audio else (0, 0)
        return {"input_tokens": inp, "output_tokens": requests * (10 + (h >> 24) % 100),
                "input_cached_tokens": inp * ((h >> 16) % 5) // 10,
                "input_audio_tokens": audio_in, "output_audio_tokens": audio_out,
                "num_model_requests": requests}
    if kind in ("embeddings", "moderations"):
        return {"input_tokens": requests * (5 + (h >> 8) % 50), "num_model_requests": requests}
    if kind == "images":
        return {"images": requests, "num_model_requests": requests}
    if kind == "audio_speeches":
        return {"characters": requests * (20 + (h >> 8) % 200), "num_model_requests": requests}
    if kind == "audio_transcriptions":
        return {"seconds": requests * (3 + (h >> 8) % 60), "num_model_requests": requests}
    raise ValueError(f"unknown usage kind {kind!r}")


def _breakdown(c: dict[str, int]) -> dict[str, int]:
    """Every field of a completions result, the details consistent with the totals."""
    inp, cached, out = c["input_tokens"], c["input_cached_tokens"], c["output_tokens"]
    cached = min(cached, inp)
    return {**c, "input_cached_tokens": cached, "input_cache_write_tokens": 0,
            "input_uncached_tokens": inp - cached,
            "input_text_tokens": max(0, inp - cached - c["input_audio_tokens"]),
            "output_text_tokens": max(0, out - c["output_audio_tokens"]),
            "input_cached_text_tokens": cached, "input_cached_audio_tokens": 0,
            "input_image_tokens": 0, "input_cached_image_tokens": 0, "output_image_tokens": 0}


class Organization:
    """The usage, costs, projects and rate limits the admin routes serve; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time, lag_seconds: float = 0.0,
                 chaos: bool = False) -> None:
        self.clock = clock
        self.lag_seconds = lag_seconds
        self.chaos = chaos
        self._revisions: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()

    def revise(self, kind: str, minute_start: int, factor: float) -> None:
        """Scale one minute of one kind from now on (0.5: revised down by half)."""
        if kind not in SOURCES or factor < 0:
            raise ValueError("revise: a known usage kind and a factor >= 0")
        with self._lock:
            self._revisions[(kind, minute_start - minute_start % 60)] = factor

    def visible(self, kind: str, minute: int, src: Source, at: float) -> dict[str, int] | None:
        """What the API shows for one minute of one source at time `at`."""
        final = final_values(kind, minute, src)
        if final is None or at <= minute:
            return None
        share = min(1.0, (at - minute) / (60.0 + self.lag_seconds))
        with self._lock:
            share *= self._revisions.get((kind, minute), 1.0)
        closed_for = at - (minute + 60.0 + self.lag_seconds)
        if (self.chaos and closed_for >= CHAOS_REVISION_AFTER
                and _hash("revise", kind, minute) % 13 == 0):
            share *= CHAOS_REVISION
        shown = {name: int(value * share) for name, value in final.items()}
        return _breakdown(shown) if kind == "completions" else shown

    def usage_between(self, kind: str, field: str, t0: float, t1: float) -> int:
        """How much of `field` became visible between t0 and t1 (what a counter that
        reads everything at t0 and t1 must add), every source together."""
        total = 0
        first = int(t0 // 60) * 60 - int(60 + self.lag_seconds + CHAOS_REVISION_AFTER) // 60 * 60
        for minute in range(first - 60, int(t1 // 60) * 60 + 60, 60):
            for src in SOURCES[kind]:
                a = self.visible(kind, minute, src, t0) or {}
                b = self.visible(kind, minute, src, t1) or {}
                total += b.get(field, 0) - a.get(field, 0)
        return total

    def day_cost(self, day: int, project: str, line_item: str, at: float) -> float:
        """USD of one (project, line item) on the UTC day starting at `day`, as of `at`."""
        for p, li, per_minute in COST_LINES:
            if (p, li) == (project, line_item):
                minutes = min(1440.0, max(0.0, (at - day) / 60.0))
                scale = 0.5 + (_hash("cost", day, p, li) % 100) / 100.0
                return round(per_minute * scale * minutes, 6)
        return 0.0

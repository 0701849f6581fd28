"""A fake OpenAI-compatible upstream: real sockets, spec-shaped answers, injectable faults.

Used by the exporter's tests (over a real socket, so timeouts, resets and stalls are
real), by the key-less demo (``make run`` without a key) and, in ``chaos`` profile, by
the Prometheus "truth" test. It binds to loopback only and never contacts anything.

What it reproduces (see shared/openai-api-facts.md §2, §4, §5, §8, §10):

* the probe endpoints under ``/v1`` (OpenAI style, ``Authorization: Bearer``) and under
  ``/openai`` (Azure style, ``api-key`` header, required ``api-version`` query);
* request validation, masked-key 401s, ``model_not_found`` 404s, ``invalid_beta``;
* per-key request/token counters that count down inside a fixed window and come back
  in the six ``x-ratelimit-*`` headers (reset values as Go durations), 429 when spent;
* streamed answers (SSE) for ``"stream": true`` on chat completions and responses, under
  their own keys ``chat_stream`` and ``responses_stream`` (facts §6);
* the faults in ``FAULTS``, settable per endpoint from Python, from the CLI or over HTTP
  on ``/__fake__/faults``, stream faults among them;
* a seedable ``chaos`` profile mixing latency and failures for lively demos.

It stands on its own: nothing here imports the exporter's catalogue, settings or
prober, so a wrong path or body in the client's table fails against it instead of
being mirrored. One module per job:

``tables``   models, endpoints, list fixtures, canned pages and messages (data only)
``limiter``  the per-key fixed-window rate limiter and ``go_duration``
``faults``   the fault vocabulary, the chaos profile, picking each request's fault
``errors``   error envelopes, 401/404/429 wording, canned fault answers
``answers``  validation and the bodies of every endpoint, list pages, wrong shapes
``streams``  the same bodies as SSE events, and the stream faults shaping them
``routes``   the routing table: path -> builder, renderer, auth
``exchange`` the Request received and the Plan of the answer
``server``   ``FakeUpstream``: lifecycle, faults, records, planning each answer
``wire``     the HTTP server and handler that execute a plan on the socket

Run it alone with ``python -m exporter.fake --port 8099``.
"""

from __future__ import annotations

from .errors import mask_key
from .faults import CHAOS_LATENCY_MS, CHAOS_WEIGHTS, FAULTS
from .limiter import go_duration
from .server import MAX_RECORDED, FakeUpstream
from .tables import ENDPOINTS, MODELS

__all__ = ["CHAOS_LATENCY_MS", "CHAOS_WEIGHTS", "ENDPOINTS", "FAULTS", "MAX_RECORDED", "MODELS",
           "FakeUpstream", "go_duration", "mask_key"]

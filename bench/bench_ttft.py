"""Time to first token: the measured TTFT minus the first-token delay the fake injects.

The fake upstream (slow_first_token) sends the role-only chunk at once and the first
content chunk `--delay-ms` later. The figure is *measured TTFT - delay*: what the probe
adds to the truth (request preparation and sending, the connection, loopback, the fake's
own timer overshoot, reading and parsing the stream). Side by side, interleaved round by
round: a bare ``requests`` call (the library the prober sends with) prepared outside the
window, sent with ``Session.send`` and read the same way; and the floor, http.client
sending the same request and stamping the first read that holds the first content event,
with no SSE parser and no JSON at all, on a new connection (connect inside the window, as
for the probe: a probe stops reading at the stream's terminal event and closes, as the
openai SDK does, so its next probe connects again) and on a warm one (the least any
client can do).

    .venv/bin/python bench/bench_ttft.py [--n 200] [--delay-ms 300]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.catalogue import CATALOGUE  # noqa: E402
from exporter.fake import FakeUpstream  # noqa: E402
from exporter.prober import Prober  # noqa: E402
from exporter.settings import TargetSettings, shipped_prices  # noqa: E402

ENDPOINTS = ("chat_stream", "responses_stream")
# The first content event of each stream, as bytes on the wire.
FIRST_CONTENT = {"chat_stream": b'"delta":{"content":"', "responses_stream":
                 b"event: response.output_text.delta"}


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, -(-int(q * 1000) * len(ordered) // 1000) - 1))]


def requests_ttft(session: requests.Session, base_url: str, endpoint: str) -> float:
    """Seconds from Session.send (the request already prepared, proxies looked up) to the
    first read that holds a content event; the response is then closed unread, so the
    next call connects again, like the probe's."""
    probe = CATALOGUE[endpoint]
    prepared = session.prepare_request(requests.Request(
        "POST", base_url + probe.path, data=json.dumps(probe.body("gpt-4o-mini")).encode(),
        headers={"Authorization": "Bearer sk-bench", "Content-Type": "application/json",
                 "Accept": "text/event-stream"}))
    settings = session.merge_environment_settings(prepared.url, {}, True, None, None)
    t0 = time.perf_counter()
    resp = session.send(prepared, timeout=10, **settings)  # settings: stream=True, ...
    seen = b""
    while FIRST_CONTENT[endpoint] not in seen:
        chunk = resp.raw.read1(16384)
        if not chunk:
            raise RuntimeError("stream ended before its first content")
        seen += chunk
    ttft = time.perf_counter() - t0
    resp.close()
    return ttft


def floor_ttft(base_url: str, endpoint: str, warm: bool) -> float:
    """Seconds from sending the request (connecting first unless `warm`) to the first
    read that holds a content event."""
    probe = CATALOGUE[endpoint]
    url = urlsplit(base_url)
    body = json.dumps(probe.body("gpt-4o-mini")).encode()
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json",
               "Accept": "text/event-stream"}
    if warm:
        conn.connect()
    t0 = time.perf_counter()
    conn.request("POST", url.path + probe.path, body, headers)  # connects if not warm
    resp = conn.getresponse()
    seen = b""
    while True:
        chunk = resp.read1(16384)
        if not chunk:
            raise RuntimeError("stream ended before its first content")
        seen += chunk
        if FIRST_CONTENT[endpoint] in seen:
            ttft = time.perf_counter() - t0
            break
    resp.read()
    conn.close()
    return ttft


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="probes per row (default 200)")
    ap.add_argument("--delay-ms", type=float, default=300.0,
                    help="first-token delay after the role-only chunk (default 300)")
    args = ap.parse_args()
    delay = args.delay_ms / 1000
    with FakeUpstream(seed=1, rpm_limit=10**9, tpm_limit=10**12) as fake:
        fake.set_fault("*", "slow_first_token", delay_ms=args.delay_ms)
        target = TargetSettings(name="bench", provider="openai", base_url=fake.base_url,
                                api_key="sk-bench", models={"chat": "gpt-4o-mini"},
                                probes=ENDPOINTS)
        prober = Prober(target, timeout_seconds=10, prices=shipped_prices())
        session = requests.Session()
        print(f"n={args.n} per row, first token injected {args.delay_ms:g} ms after the "
              "role-only chunk; TTFT error (measured - injected) in ms")
        print(f"{'endpoint':18} {'client':22} {'median':>8} {'p95':>8} {'max':>8}")
        for endpoint in ENDPOINTS:
            ours: list[float] = []
            bare: list[float] = []
            fresh: list[float] = []
            warm: list[float] = []
            for _ in range(args.n):  # interleaved, so machine noise hits all alike
                r = prober.run(endpoint)
                assert r.success and r.ttft_seconds is not None, r
                ours.append((r.ttft_seconds - delay) * 1000)
                bare.append((requests_ttft(session, fake.base_url, endpoint) - delay) * 1000)
                fresh.append((floor_ttft(fake.base_url, endpoint, False) - delay) * 1000)
                warm.append((floor_ttft(fake.base_url, endpoint, True) - delay) * 1000)
            for name, xs in (("exporter", ours), ("requests, prepared", bare),
                             ("floor, new connection", fresh),
                             ("floor, warm connection", warm)):
                print(f"{endpoint:18} {name:22} {statistics.median(xs):8.2f} "
                      f"{pct(xs, 0.95):8.2f} {max(xs):8.2f}")
        prober.close()


if __name__ == "__main__":
    main()

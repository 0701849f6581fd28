"""/metrics scrape time for 10 targets x 10 endpoints, against bare prometheus_client.

Three servers, same series, same Accept-Encoding as Prometheus (gzip): the exporter (its
route table in front of make_wsgi_app, on its bounded server); the same registry served
by prometheus_client's start_wsgi_server (the library's app on the library's
thread-per-connection server: the router's and the server's cost is the difference); and
a static custom collector returning pre-built families on the library's server (the
floor: what the live Counter/Histogram objects cost to render).

    .venv/bin/python bench/bench_scrape.py [--n 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402
from prometheus_client import CollectorRegistry, start_wsgi_server  # noqa: E402

from exporter.catalogue import CATALOGUE  # noqa: E402
from exporter.metrics import ExporterMetrics  # noqa: E402
from exporter.result import ProbeResult, RateLimits  # noqa: E402
from exporter.settings import Settings, TargetSettings  # noqa: E402
from exporter.web import make_app, serve  # noqa: E402

MODELS = {"chat": "gpt-4o-mini", "embeddings": "text-embedding-3-small",
          "moderation": "omni-moderation-latest", "image": "gpt-image-1-mini"}


def build() -> ExporterMetrics:
    targets = tuple(TargetSettings(name=f"t{i}", provider="openai", base_url="http://x",
                                   models=MODELS, probes=tuple(CATALOGUE))
                    for i in range(10))
    metrics = ExporterMetrics()
    metrics.configure(Settings(targets=targets))
    for t in targets:
        for endpoint in t.probes:
            model = t.model_for(endpoint)
            for ok in (True, False):
                metrics.observe(ProbeResult(
                    target=t.name, region=t.region, endpoint=endpoint, model=model,
                    started_at=time.time(), duration_seconds=0.3, success=ok,
                    error_type="none" if ok else "rate_limited", input_tokens=5,
                    output_tokens=3, total_tokens=8, response_bytes=500, cost_usd=1e-6,
                    rate_limits=RateLimits(1, 1, 1, 1, 1, 1)))
    return metrics


def bare_copy(source: CollectorRegistry) -> CollectorRegistry:
    """A registry with exactly the same samples, as the simplest custom collector."""
    families = list(source.collect())

    class Static:
        def collect(self):
            return families

    bare = CollectorRegistry(auto_describe=False)
    bare.register(Static())
    return bare


def timed(url: str, n: int) -> tuple[list[float], int]:
    session = requests.Session()  # sends Accept-Encoding: gzip, as Prometheus does
    size = len(session.get(url, stream=True).raw.read())
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        _ = session.get(url).content
        out.append((time.perf_counter() - t0) * 1000)
    return out, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    metrics = build()
    servers = {
        "exporter": serve(make_app(metrics.registry), "127.0.0.1", 0)[0],
        "bare": start_wsgi_server(0, "127.0.0.1", metrics.registry)[0],
        "static": start_wsgi_server(0, "127.0.0.1", bare_copy(metrics.registry))[0],
    }
    series = sum(len(f.samples) for f in metrics.registry.collect())
    rows: dict[str, tuple[list[float], int]] = {}
    for _ in range(5):  # alternate rounds so machine noise hits all alike
        for name, srv in servers.items():
            xs, size = timed(f"http://127.0.0.1:{srv.server_port}/metrics", args.n // 5)
            rows.setdefault(name, ([], size))[0].extend(xs)
    print(f"{series} samples, n={args.n} scrapes each (gzip); ms per scrape")
    base = statistics.median(rows["bare"][0])
    for name, (xs, size) in rows.items():
        med = statistics.median(xs)
        print(f"{name:9} median {med:7.2f}  p95 {sorted(xs)[int(.95 * len(xs))]:7.2f}  "
              f"{size} bytes gzipped  ratio vs bare {med / base:.2f}")
    for srv in servers.values():
        srv.shutdown()


if __name__ == "__main__":
    main()

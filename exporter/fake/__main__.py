"""Command line: ``python -m exporter.fake --port 8099`` serves a fake upstream until
SIGTERM/SIGINT (the compose ``demo`` profile runs it in its own container)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from .faults import FAULTS, is_target
from .routes import ROUTED_ENDPOINTS
from .server import FakeUpstream


def _fault_arg(text: str) -> tuple[str, str]:
    endpoint, sep, fault = text.partition("=")
    if not sep or not is_target(endpoint, fault, ROUTED_ENDPOINTS):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not ENDPOINT=FAULT (endpoints: {', '.join(ROUTED_ENDPOINTS)}, *; "
            f"faults: {', '.join(FAULTS)})")
    return endpoint, fault


def main(argv: list[str] | None = None) -> int:
    """Serve a fake upstream until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m exporter.fake",
        description="Fake OpenAI-compatible API for tests and the key-less demo.")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port, 0 = any free (default 0)")
    parser.add_argument("--profile", choices=("healthy", "chaos"), default="healthy",
                        help="healthy, or chaos: random latency and failures (default healthy)")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="latency added to every answer (default 0)")
    parser.add_argument("--seed", type=int, default=None, help="chaos random seed")
    parser.add_argument("--api-key", default=None,
                        help="the only accepted key (default: any non-empty key)")
    parser.add_argument("--admin-key", default=None,
                        help="the only accepted admin key (default: any sk-admin- key)")
    parser.add_argument("--rpm-limit", type=int, default=500, help="requests per window")
    parser.add_argument("--tpm-limit", type=int, default=200000, help="tokens per window")
    parser.add_argument("--window-seconds", type=float, default=60.0,
                        help="rate-limit window (default 60)")
    parser.add_argument("--fault", type=_fault_arg, action="append", default=[],
                        metavar="ENDPOINT=FAULT", help="inject a fault; repeatable")
    args = parser.parse_args(argv)
    try:
        fake = FakeUpstream(args.host, args.port, api_key=args.api_key, profile=args.profile,
                            latency_ms=args.latency_ms, seed=args.seed,
                            rpm_limit=args.rpm_limit, tpm_limit=args.tpm_limit,
                            window_seconds=args.window_seconds, admin_key=args.admin_key)
    except (ValueError, OSError) as err:
        parser.error(str(err))
    for endpoint, fault in args.fault:
        fake.set_fault(endpoint, fault)

    done = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    fake.start()
    print(f"fake upstream listening on {fake.base_url}", file=sys.stderr, flush=True)
    while not done.wait(0.5):
        pass
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Entry point: load settings, wire prober -> sinks, serve HTTP, stop cleanly on SIGTERM."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
from typing import TYPE_CHECKING, NoReturn

from prometheus_client import disable_created_metrics

from . import __version__, logs
from .budget import BudgetGuard
from .history import History, MemoryHistory, SchemaVersionError, SQLiteHistory, StoreOpenError
from .liveness import Liveness
from .metrics import ExporterMetrics
from .pricing import PriceTable
from .prober import Prober
from .scheduler import ProbeLoop
from .settings import ConfigError, Settings, describe, load, redacted
from .usage.setup import UsageSetupError, build_usage, off_reason
from .web import history_routes, make_app, serve
from .web.server import listen_family
from .web.usage_json import usage_json

if TYPE_CHECKING:  # the fake is imported only when the demo runs
    from .fake import FakeUpstream

log = logging.getLogger("exporter")

DEMO_KEY = "sk-demo-not-a-real-key"
DEMO_ADMIN_KEY = "sk-admin-demo-not-a-real-key"  # the demo polls the fake's admin API too


def _start_demo(settings: Settings) -> tuple[FakeUpstream, Settings]:
    """Key-less demo: start the bundled fake upstream (chaos profile) on loopback and
    point the single target at it."""
    from .fake import FakeUpstream

    fake = FakeUpstream(profile="chaos").start()
    targets = tuple(
        dataclasses.replace(t, base_url=fake.base_url, api_key=DEMO_KEY, provider="openai",
                            admin_key=DEMO_ADMIN_KEY, admin_key_env="")
        for t in settings.targets)
    # The demo polls the fake's organisation too (on the primary, like any organisation).
    usage_target = targets[0] if targets and settings.primary else None
    return fake, dataclasses.replace(settings, targets=targets, admin_key=DEMO_ADMIN_KEY,
                                     usage_target=usage_target)


def open_history(settings: Settings) -> History:
    """The store the settings ask for: SQLite when enable_db, else memory. Raises
    ConfigError (one line naming DB_FILE) when the database cannot be used."""
    if not settings.enable_db:
        return MemoryHistory(settings.history_max_events, settings.history_retention_hours)
    try:
        return SQLiteHistory(settings.db_file, settings.history_retention_hours)
    except SchemaVersionError as exc:
        raise ConfigError(f"DB_FILE={exc.path}: history schema {exc.found}, this version "
                          f"reads schema {exc.expected}; move the file away") from None
    except StoreOpenError as exc:
        raise ConfigError(f"DB_FILE={exc.path}: {exc.reason}") from None


def db_file_problem(path: str) -> str | None:
    """Why SQLite could not create or open `path` at start, if that shows without opening
    it: a directory, or a directory that is missing or not writable (the WAL files go
    there too). None when it looks usable."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path) and not os.path.isfile(path):
        return "not a regular file"
    if not os.path.isdir(directory):
        return f"its directory {directory} does not exist"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"its directory {directory} is not writable"
    return None


def listen_error(settings: Settings, exc: OSError) -> ConfigError:
    """The one-line error of a listen address the system refuses: a port in use, an
    address not on this host, a host name that does not resolve."""
    host, port = settings.listen_host, settings.listen_port
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    what = "cannot resolve the host" if isinstance(exc, socket.gaierror) else "cannot listen"
    return ConfigError(f"LISTEN_ADDRESS={address}: {what}: {exc.strerror or exc}")


def run(settings: Settings, stop: threading.Event) -> int:
    """Serve until `stop` is set. Raises ConfigError, before probing anything, when the
    history store cannot be opened (DB_FILE not a history database, its directory missing)
    or the listen address cannot be bound."""
    history = open_history(settings)
    fake = None
    if settings.demo:
        fake, settings = _start_demo(settings)
        log.warning("no OPENAI_API_KEY: running the key-less demo against the bundled fake "
                    "upstream at %s (chaos profile; no request leaves this machine)",
                    fake.base_url)
    config = redacted(settings)
    log.info("starting openai-exporter %s", __version__, extra={"config": config})
    shard = describe(settings)  # one line when sharded or not primary; a warning when empty
    if shard:
        log.log(logging.INFO if settings.targets else logging.WARNING, "%s", shard)

    metrics = ExporterMetrics()
    metrics.configure(settings)
    liveness = Liveness(settings.interval_seconds, settings.timeout_seconds)

    def skipped_on_purpose(target: str, endpoint: str, reason: str) -> None:
        metrics.skip(target, endpoint, reason)
        liveness.beat()  # a loop paused by the budget is alive, not dead (/healthz)

    guard = BudgetGuard(settings.probe_budget_usd_per_day, metrics.registry,
                        skipped_on_purpose)
    guard.seed(history)  # with ENABLE_DB, the spend of the last 24 h survived a restart
    try:
        poller = build_usage(settings, metrics.registry)
    except UsageSetupError as exc:
        history.close()
        if fake:
            fake.stop()
        raise ConfigError(f"DB_FILE={settings.db_file}: {exc}") from None
    prices = PriceTable(settings.prices)  # one per process: one warning per unpriced model
    probers = [Prober(t, timeout_seconds=settings.timeout_seconds, prices=prices)
               for t in settings.targets]
    loop = ProbeLoop(settings, probers,
                     [metrics.observe, history.add, logs.log_probe, guard.observe,
                      liveness.observe],
                     gate=guard.allow, on_skip=metrics.skip)

    def usage_status() -> dict:
        return usage_json(poller.status() if poller else None, guard.status(),
                          off_reason(settings))

    app = make_app(metrics.registry, history_routes(history, config, usage_status),
                   settings.web_auth_token,
                   health=liveness.problem if settings.targets else None)  # empty shard
    try:
        httpd, _ = serve(app, settings.listen_host, settings.listen_port)
    except OSError as exc:  # a port in use, a host that does not resolve: a bad setting
        if poller:
            poller.stop()
        history.close()
        if fake:
            fake.stop()
        raise listen_error(settings, exc) from None
    host = settings.listen_host
    log.info("listening on http://%s:%d (page /, /metrics, /status, /traces)",
             f"[{host}]" if ":" in host else host, httpd.server_port)
    loop.start()
    if poller:
        poller.start()
    stop.wait()
    log.info("stopping")
    loop.stop()  # no new probe; those in flight finish and reach the sinks (bounded)
    if poller:
        poller.stop()
    httpd.shutdown()
    httpd.server_close()
    history.close()
    if fake:
        fake.stop()
    return 0


def _exit_config_error(exc: ConfigError) -> NoReturn:
    print(f"openai-exporter: error: {exc}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    """Run the exporter: load settings, serve until SIGTERM/SIGINT; exit 2 on a bad setting."""
    # *_created series would double the series count and no dashboard reads them. The
    # switch is process-wide, so the process's entry point flips it.
    disable_created_metrics()
    try:
        settings = load(argv)
    except ConfigError as exc:
        _exit_config_error(exc)
    if settings.config_check:
        # What start-up would find out, short of binding the port or creating the database.
        try:
            listen_family(settings.listen_host, settings.listen_port)
        except OSError as exc:
            _exit_config_error(listen_error(settings, exc))
        problem = db_file_problem(settings.db_file) if settings.enable_db else None
        if problem:
            _exit_config_error(ConfigError(f"DB_FILE={settings.db_file}: cannot use it: "
                                           f"{problem}"))
        total = len(settings.targets) + settings.targets_on_other_shards
        shard = (f"; shard {settings.shard_index} of {settings.shard_count} probes "
                 f"{len(settings.targets)}" if settings.shard_count > 1 else "")
        print(f"openai-exporter: configuration OK ({total} target(s){shard})")
        sys.exit(0)
    logs.setup(settings.log_level, settings.log_format)

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        code = run(settings, stop)
    except ConfigError as exc:
        _exit_config_error(exc)
    logging.shutdown()
    sys.stdout.flush()
    # The drain waited for the probes in flight up to their timeout + a margin; one still
    # blocked past that (its result is dropped) must not hold up the exit any longer.
    # Everything is flushed and closed by now, so leave at once.
    os._exit(code)


if __name__ == "__main__":
    main()

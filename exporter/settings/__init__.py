"""Settings: defaults < YAML (--config.file) < environment < CLI flags, validated once.

``load()`` is the only way in. A bad value raises ``ConfigError``; its str() is one line
that names the setting the way the user wrote it (env var, flag, or config-file path)
and says what is allowed. ``main()`` prints it as ``openai-exporter: error: <msg>`` and
exits 2. Keys never come from the config file: a target names the environment variable
that holds its key (``api_key_env``), and no error message ever repeats a secret.

The rules (precedence, demo, file targets vs environment) are in docs/configuration.md.
One job per module: ``schema`` (Settings, TargetSettings, ConfigError), ``parsers`` (one
value each), ``sources`` (the table of settings; file, environment and flag layers),
``targets`` (file targets, the environment's target), ``shards`` (which targets this
instance probes), ``redaction`` (the safe view).
The probe vocabulary comes from the catalogue and the price table from exporter.pricing.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any
from collections.abc import Mapping

from ..catalogue import CATALOGUE, MODEL_KINDS, default_probes
from ..pricing import shipped_prices
from .redaction import redacted
from .parsers import INTERVAL, INTERVAL_ENV, MIN_INTERVAL, _bad
from .jobs import check_jobs
from .schema import ConfigError, Settings, TargetSettings
from .secrets import SecretBook
from .shards import MAX_SHARDS, describe, shard_of, select
from .sources import (
    _DEFAULTS, _SPECS, SECRET_ENV, SECRET_KEYS, _cli_layer, _env_layer, _file_layer, _prices,
    _read_config_file, build_parser,
)
from .targets import _env_target, _file_targets, _resolve_file_target, key_envs

__all__ = [
    "ConfigError", "MAX_SHARDS", "MODEL_KINDS", "_SPECS", "Settings", "TargetSettings",
    "build_parser", "default_probes", "describe", "load", "redacted", "shard_of",
    "shipped_prices",
]


def load(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Parse flags, read the config file, read the environment; validate everything once.

    Raises ConfigError (one line, every secret masked) for any bad value or flag, and
    SystemExit only for --help and --version.
    """
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    secrets = SecretBook(environ, SECRET_ENV)
    try:
        return _load(argv, environ, secrets)
    except ConfigError as exc:  # the one place a settings error is worded for the user
        raise ConfigError(secrets.redact(str(exc))) from None


def _load(argv: list[str], environ: Mapping[str, str], secrets: SecretBook) -> Settings:
    args = build_parser().parse_args(argv)

    config_file = (args.config_file if args.config_file is not None
                   else environ.get("CONFIG_FILE", "")).strip()
    doc = _read_config_file(config_file) if config_file else {}
    secrets.add(key_envs(doc))
    environ = secrets.read_files()  # NAME from NAME_FILE, for every secret
    file_layer = _file_layer(doc)
    prices = _prices(doc)
    file_targets = _file_targets(doc)
    layers = (file_layer, _env_layer(environ), _cli_layer(args))
    for layer in layers:  # a key pasted into a setting that is shown: refuse it
        for key, (value, where) in layer.items():
            if key not in SECRET_KEYS:
                secrets.check_not_secret(value, where)
    for i, t in enumerate(file_targets):
        for key, value in t.items():
            if key != "headers":  # never shown; a gateway header may well be a credential
                secrets.check_not_secret(value, f"config file targets[{i}].{key}")

    # defaults < file < environment < flags
    merged: dict[str, Any] = dict(_DEFAULTS)
    sources: dict[str, str] = {}
    for layer in layers:
        for key, (value, where) in layer.items():
            merged[key], sources[key] = value, where

    interval = merged["interval_seconds"]
    if interval < MIN_INTERVAL and not merged["allow_fast"]:
        where = sources["interval_seconds"]
        raise _bad(where, "must be " + (INTERVAL_ENV if where == "PROBE_INTERVAL_SEC"
                                        else INTERVAL), interval)

    env_key = environ.get("OPENAI_API_KEY", "").strip()
    if merged["demo"] is None:
        demo = not file_targets and not env_key and "base_url" not in merged
    else:
        demo = bool(merged["demo"])

    if file_targets:
        resolved = [_resolve_file_target(t, i, merged, sources, environ)
                    for i, t in enumerate(file_targets)]
    else:
        resolved = [_env_target(merged, sources, environ)]

    if not merged["heavy"]:
        for target, probes_from, _ in resolved:
            heavy = [p for p in target.probes if CATALOGUE[p].heavy]
            if heavy:
                raise ConfigError(
                    f"{probes_from}: {heavy[0]!r} costs real money on every probe and is only "
                    "allowed with PROBE_HEAVY=1 (or --probe.heavy, or heavy: true in the "
                    "config file)")
    if not demo:  # the demo probes the bundled fake, which needs no real key
        for _, _, key_error in resolved:
            if key_error:
                raise ConfigError(key_error)

    _check_usage(merged, sources, [t for t, _, _ in resolved])

    # Every target was checked above, so a config is valid or not on every shard alike.
    shard = select([t for t, _, _ in resolved], merged, sources)
    check_jobs(merged["mode"], sources.get("mode", "PROBE_MODE"), shard.targets)
    usage_target = (next((t for t, _, _ in resolved if t.admin_key), None)
                    if shard.primary else None)
    host, port = merged["listen"]
    return Settings(
        targets=shard.targets,
        interval_seconds=merged["interval_seconds"],
        timeout_seconds=merged["timeout_seconds"],
        mode=merged["mode"],
        connection=merged["connection"],
        heavy=merged["heavy"],
        listen_host=host,
        listen_port=port,
        log_level=merged["log_level"],
        log_format=merged["log_format"],
        demo=demo,
        max_workers=merged["max_workers"],
        prices=prices,
        enable_db=merged["enable_db"],
        db_file=merged["db_file"],
        history_retention_hours=merged["history_retention_hours"],
        history_max_events=merged["history_max_events"],
        web_auth_token=merged["web_auth_token"],
        admin_key=merged["admin_key"],
        usage_poll_interval_seconds=merged["usage_poll_interval_seconds"],
        usage_lookback_minutes=merged["usage_lookback_minutes"],
        usage_kinds=merged["usage_kinds"],
        usage_group_by=merged["usage_group_by"],
        usage_max_series=merged["usage_max_series"],
        probe_budget_usd_per_day=merged["probe_budget_usd_per_day"],
        shard_index=shard.index,
        shard_count=shard.count,
        primary=shard.primary,
        targets_on_other_shards=shard.elsewhere,
        usage_target=usage_target,
        config_file=config_file,
        config_check=bool(args.config_check),
    )


def _check_usage(merged: dict[str, Any], sources: dict[str, str],
                 targets: list[TargetSettings]) -> None:
    """The cross-field rules of the usage poller (docs/usage.md)."""
    polled = [(i, t) for i, t in enumerate(targets) if t.admin_key]
    for i, t in polled[1:]:
        j, first = polled[0]
        if t.admin_key != first.admin_key:
            # The usage metrics carry no target label: two organisations would mix.
            raise ConfigError(
                f"targets[{i}] ({t.name}): the admin key in {t.admin_key_env} differs from "
                f"targets[{j}]'s ({first.admin_key_env}); one exporter polls one organisation, "
                "so run one exporter per organisation")
    if merged["admin_key"] and not any(t.provider == "openai" for t in targets):
        raise ConfigError("OPENAI_ADMIN_KEY: set, but no target has provider openai (the Usage "
                          "and Costs APIs are OpenAI's); unset it")
    interval = merged["usage_poll_interval_seconds"]
    lookback = merged["usage_lookback_minutes"]
    if lookback * 60 < 2 * interval:
        # Every minute must be read at least twice: once while it fills, once after.
        if "usage_lookback_minutes" in sources:
            interval_from = sources.get("usage_poll_interval_seconds", "USAGE_POLL_INTERVAL_SEC")
            raise ConfigError(
                f"{sources['usage_lookback_minutes']}: must cover two poll intervals of "
                f"{interval:g} s ({interval_from}) so that every minute is read twice: at least "
                f"{math.ceil(2 * interval / 60)}, got {lookback}")
        raise ConfigError(
            f"{sources['usage_poll_interval_seconds']}: must be at most half the lookback "
            f"(USAGE_LOOKBACK_MIN {lookback} minutes = {lookback * 60} s), so that every "
            f"minute is read twice, got {interval:g}")

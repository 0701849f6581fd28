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

import os
import sys
from typing import Any
from collections.abc import Mapping

from ..catalogue import CATALOGUE, MODEL_KINDS, default_probes
from ..pricing import shipped_prices
from .redaction import redacted
from .parsers import INTERVAL, INTERVAL_ENV, MIN_INTERVAL, _bad
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

    # Every target was checked above, so a config is valid or not on every shard alike.
    shard = select([t for t, _, _ in resolved], merged, sources)
    host, port = merged["listen"]
    return Settings(
        targets=shard.targets,
        interval_seconds=merged["interval_seconds"],
        timeout_seconds=merged["timeout_seconds"],
        mode=merged["mode"],
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
        shard_index=shard.index,
        shard_count=shard.count,
        primary=shard.primary,
        targets_on_other_shards=shard.elsewhere,
        config_file=config_file,
        config_check=bool(args.config_check),
    )

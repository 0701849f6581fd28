"""Settings: defaults < YAML (--config.file) < environment < CLI flags, validated once.

``load()`` is the only way in. A bad value raises ``ConfigError``; its str() is one line
that names the setting the way the user wrote it (env var, flag, or config-file path)
and says what is allowed. ``main()`` prints it as ``openai-exporter: error: <msg>`` and
exits 2. Keys never come from the config file: a target names the environment variable
that holds its key (``api_key_env``), and no error message ever repeats a secret.

The rules (precedence, demo, file targets vs environment) are in docs/configuration.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import yaml

from . import __version__
from .catalogue import (
    CATALOGUE, DEFAULT_MODELS, MODEL_ENV, MODEL_KINDS, PROVIDERS, default_probes,
)
from .durations import parse_duration
from .pricing import PriceError, parse_prices, shipped_prices


class ConfigError(Exception):
    """A bad setting. str(err) is one readable line naming the setting and what is allowed."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split("\n")))


@dataclass(frozen=True)
class TargetSettings:
    name: str  # label value, [a-zA-Z0-9_.-]+
    provider: str  # openai | azure | openai_compatible
    base_url: str  # no trailing slash
    api_key: str = field(default="", repr=False)  # the resolved secret; never printed
    api_key_env: str = "OPENAI_API_KEY"  # "" for an openai_compatible target without a key
    region: str = "us-west-1"
    # model per model_kind in the catalogue: chat, embeddings, moderation, image
    # (for azure: the deployment name)
    models: dict[str, str] = field(default_factory=dict)
    probes: tuple[str, ...] = ()  # enabled probe keys, in catalogue order
    headers: dict[str, str] = field(default_factory=dict)  # extra request headers
    org_id: str = ""
    project_id: str = ""
    api_version: str = ""  # azure only

    def model_for(self, endpoint: str) -> str:
        """The model (azure: deployment) a probe of `endpoint` names; "" for probes that
        take no model (models, files, ...)."""
        kind = CATALOGUE[endpoint].model_kind
        return self.models.get(kind, "") if kind else ""


@dataclass(frozen=True)
class Settings:
    targets: tuple[TargetSettings, ...]
    interval_seconds: float = 60.0
    timeout_seconds: float = 12.0
    mode: str = "roundrobin"  # roundrobin | all
    heavy: bool = False
    listen_host: str = "0.0.0.0"
    listen_port: int = 9188
    log_level: str = "INFO"
    log_format: str = "json"  # json | text
    demo: bool = False  # no key: probe the bundled fake upstream
    max_workers: int = 8
    # USD per 1M tokens: {model: {"input": x, "output": y}}; shipped table merged with YAML
    prices: dict[str, dict[str, float]] = field(default_factory=dict)
    # history (issue 3)
    enable_db: bool = False
    db_file: str = "data.db"
    history_retention_hours: float = 24.0
    history_max_events: int = 100_000
    web_auth_token: str = field(default="", repr=False)
    config_file: str = ""
    config_check: bool = False  # --config.check: main() validates, prints a summary, exits 0


# -- vocabularies -----------------------------------------------------------------------

MODES = ("roundrobin", "all")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("json", "text")
OPENAI_BASE_URL = "https://api.openai.com/v1"
# The variable a target's key is read from when the file does not name one. A target of
# another provider never falls back to OPENAI_API_KEY: that would send the OpenAI key to
# Azure or to a third-party server. openai_compatible servers often need no key at all.
DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "azure": "AZURE_OPENAI_API_KEY",
                   "openai_compatible": ""}

TOP_KEYS = ("interval", "timeout", "mode", "heavy", "region", "listen_address", "log_level",
            "log_format", "max_workers", "prices", "history", "targets")
HISTORY_KEYS = ("enable_db", "db_file", "retention_hours", "max_events")
TARGET_KEYS = ("name", "provider", "base_url", "api_key_env", "region", "models", "probes",
               "headers", "org_id", "project_id", "api_version")

_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REGION = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")
_ID = re.compile(r"[A-Za-z0-9_.-]+")
_DEPLOYMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Field names that look like a place for a secret (api_key, token, openai_api_key, ...).
_SECRETISH = re.compile(
    r"(^|[_-])(api[_-]?key|key|token|secret|password|passwd|authorization|bearer|credentials?)"
    r"($|[_-])", re.I)
# Headers the prober sets from the key; a file must not carry them.
_AUTH_HEADERS = ("authorization", "api-key", "proxy-authorization")

_SECONDS = "a number of seconds > 0 or a duration such as 30s or 1m"


# -- small parsers: each takes the raw value and where it came from -----------------------

def _show(value: Any) -> str:
    """The offending value for an error message: short, one line, typed like YAML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list" if value else "an empty list"
    return type(value).__name__


def _bad(where: str, what: str, value: Any) -> ConfigError:
    return ConfigError(f"{where}: {what}, got {_show(value)}")


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, (int, float)):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw.strip())
        except ValueError:
            return None
    return None


def _positive(what: str, divisor: float = 1.0,
              read: Callable[[Any], float | None] = _number) -> Callable[[Any, str], float]:
    """A parser of finite numbers > 0, divided by `divisor` (1000: milliseconds to seconds)."""
    def parse(raw: Any, where: str) -> float:
        value = read(raw)
        if value is None or not math.isfinite(value) or value <= 0:
            raise _bad(where, f"must be {what}", raw)
        return value / divisor

    return parse


def _number_or_duration(raw: Any) -> float | None:
    value = _number(raw)
    if value is None and isinstance(raw, str):
        value = parse_duration(raw)
    return value


# Environment: a plain number of seconds (the name says _SEC).
_plain_seconds = _positive("a number > 0")
# File and flags: seconds, or a Prometheus-style duration (30s, 1m, 1m30s, 500ms).
_seconds = _positive(_SECONDS, read=_number_or_duration)
_milliseconds = _positive("a number of milliseconds > 0", 1000.0)
_hours = _positive("a number of hours > 0")


def _int_range(lo: int, hi: int | None) -> Callable[[Any, str], int]:
    what = f"must be a whole number {lo}-{hi}" if hi is not None else (
        f"must be a whole number >= {lo}")

    def parse(raw: Any, where: str) -> int:
        value: int | None = None
        if isinstance(raw, int) and not isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str) and re.fullmatch(r"\s*[+-]?\d+\s*", raw):
            value = int(raw)
        if value is None or value < lo or (hi is not None and value > hi):
            raise _bad(where, what, raw)
        return value

    return parse


def _bool(raw: Any, where: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _BOOLS:
        return _BOOLS[raw.strip().lower()]
    raise _bad(where, "must be one of 1, 0, true, false, yes, no", raw)


def _enum(allowed: tuple[str, ...], upper: bool = False) -> Callable[[Any, str], str]:
    def parse(raw: Any, where: str) -> str:
        if isinstance(raw, str):
            value = raw.strip().upper() if upper else raw.strip().lower()
            if value in allowed:
                return value
        raise _bad(where, f"must be one of {', '.join(allowed)}", raw)

    return parse


def _log_level(raw: Any, where: str) -> str:
    if isinstance(raw, str) and raw.strip().upper() == "WARN":  # Prometheus spelling
        return "WARNING"
    return _enum(LOG_LEVELS, upper=True)(raw, where)


def _pattern(regex: re.Pattern[str], what: str) -> Callable[[Any, str], str]:
    def parse(raw: Any, where: str) -> str:
        if isinstance(raw, str) and regex.fullmatch(raw.strip()):
            return raw.strip()
        raise _bad(where, f"must be {what}", raw)

    return parse


_region = _pattern(_REGION, "1-64 letters, digits or - _ . : /")
_identifier = _pattern(_ID, "letters, digits, '-', '_' or '.'")
_target_name = _pattern(_NAME, "letters, digits, '-', '_' or '.'")


def _text(raw: Any, where: str) -> str:
    if isinstance(raw, str) and raw.strip() and raw.isprintable():
        return raw.strip()
    raise _bad(where, "must be a non-empty string", raw)


def _model(raw: Any, where: str) -> str:
    if isinstance(raw, str) and raw.strip() and not re.search(r"[\s\x00-\x1f\x7f]", raw.strip()):
        return raw.strip()
    raise _bad(where, "must be a model name without spaces", raw)


def _deployment(raw: Any, where: str) -> str:
    if isinstance(raw, str) and _DEPLOYMENT.fullmatch(raw.strip()):
        return raw.strip()
    raise _bad(where, "must be an Azure deployment name (letters, digits, '-', '_', '.')", raw)


def _url(raw: Any, where: str) -> str:
    what = "must be an http(s) URL such as https://api.openai.com/v1"
    if not isinstance(raw, str):
        raise _bad(where, what, raw)
    text = raw.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise _bad(where, what, raw) from None
    if parts.username is not None or parts.password is not None:
        # Never echo it: the user:password part is a credential.
        raise ConfigError(f"{where}: must not carry credentials (user:password@); keys come "
                          "from environment variables")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad(where, what, raw)
    if parts.query or parts.fragment:
        raise _bad(where, "must not have a query string or fragment", raw)
    return text.rstrip("/")


def _listen(raw: Any, where: str) -> tuple[str, int]:
    what = "must be host:port, [ipv6]:port or :port with a port 1-65535"
    if not isinstance(raw, str):
        raise _bad(where, what, raw)
    text = raw.strip()
    bracketed = re.fullmatch(r"\[([^\]]+)\]:(\d+)", text)
    if bracketed:
        host, port_text = bracketed.groups()
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            raise _bad(where, what, raw) from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise _bad(where, what, raw)
        if ":" in host:
            raise _bad(where, "must put an IPv6 address in brackets, such as [::]:9188", raw)
        host = host or "0.0.0.0"
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if not _HOSTNAME.fullmatch(host):
                raise _bad(where, what, raw) from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise _bad(where, what, raw)
    return host, int(port_text)


def _probe_list(raw: Any, where: str) -> tuple[str, ...]:
    """A comma list (env, flag) or a YAML list of probe keys, returned in catalogue order."""
    allowed = ", ".join(CATALOGUE)
    if isinstance(raw, str):
        items = [s.strip() for s in raw.split(",") if s.strip()]
    elif isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        items = [s.strip() for s in raw]
    else:
        raise _bad(where, f"must be a list of probe keys ({allowed})", raw)
    if not items:
        raise ConfigError(f"{where}: must name at least one probe (allowed: {allowed})")
    for item in items:
        if item not in CATALOGUE:
            raise ConfigError(f"{where}: unknown probe {item!r} (allowed: {allowed})")
    return tuple(name for name in CATALOGUE if name in items)


def _secret(raw: Any, where: str) -> str:
    return raw.strip() if isinstance(raw, str) else ""


# -- the table of global settings: where each one can be set ------------------------------

@dataclass(frozen=True)
class _Spec:
    key: str  # internal name; mostly the Settings field
    yaml: str | None  # path in the config file ("history.db_file")
    env: str | None
    flag: str | None  # "--probe.interval"; dest is derived from it
    parse: Callable[[Any, str], Any]
    env_parse: Callable[[Any, str], Any] | None = None  # when the env var has its own unit


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace(".", "_").replace("-", "_")


_SPECS: tuple[_Spec, ...] = (
    _Spec("interval_seconds", "interval", "PROBE_INTERVAL_SEC", "--probe.interval", _seconds,
          _plain_seconds),
    _Spec("timeout_seconds", "timeout", "HTTP_TIMEOUT_MS", "--probe.timeout", _seconds,
          _milliseconds),
    _Spec("mode", "mode", "PROBE_MODE", "--probe.mode", _enum(MODES)),
    _Spec("heavy", "heavy", "PROBE_HEAVY", "--probe.heavy", _bool),
    _Spec("region", "region", "PROBE_REGION", None, _region),
    _Spec("listen", "listen_address", "LISTEN_ADDRESS", "--web.listen-address", _listen),
    _Spec("log_level", "log_level", "LOG_LEVEL", "--log.level", _log_level),
    _Spec("log_format", "log_format", "LOG_FORMAT", "--log.format", _enum(LOG_FORMATS)),
    _Spec("max_workers", "max_workers", "PROBE_MAX_WORKERS", None, _int_range(1, 64)),
    _Spec("enable_db", "history.enable_db", "ENABLE_DB", None, _bool),
    _Spec("db_file", "history.db_file", "DB_FILE", None, _text),
    _Spec("history_retention_hours", "history.retention_hours", "HISTORY_RETENTION_HOURS",
          None, _hours),
    _Spec("history_max_events", "history.max_events", "HISTORY_MAX_EVENTS", None,
          _int_range(1, None)),
    _Spec("web_auth_token", None, "WEB_AUTH_TOKEN", None, _secret),
    _Spec("demo", None, "DEMO", "--demo", _bool),
    # The environment's target (see _env_target); they also fill in provider-openai file
    # targets (see _resolve_file_target).
    _Spec("base_url", None, "OPENAI_BASE_URL", None, _url),
    _Spec("org_id", None, "OPENAI_ORG_ID", None, _identifier),
    _Spec("project_id", None, "OPENAI_PROJECT_ID", None, _identifier),
    _Spec("probes", None, "PROBE_ENDPOINTS", "--probe.endpoints", _probe_list),
    *(_Spec(f"model.{kind}", None, env, None, _model) for kind, env in MODEL_ENV.items()),
)

_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(Settings)
    if f.default is not dataclasses.MISSING
}
_DEFAULTS.update(region=TargetSettings.__dataclass_fields__["region"].default,
                 listen=(_DEFAULTS["listen_host"], _DEFAULTS["listen_port"]),
                 demo=None)  # None: decided by the demo rule in load()

# Set by the user somewhere, with where: {key: (value, "PROBE_INTERVAL_SEC")}
_Layer = dict[str, tuple[Any, str]]


# -- command line ---------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """Prometheus-style flags. Every default is None so load() can tell "not given"."""
    parser = argparse.ArgumentParser(
        prog="openai-exporter", allow_abbrev=False,
        description="Prometheus exporter that probes the OpenAI API (and Azure OpenAI or "
                    "OpenAI-compatible servers) on a schedule.",
        epilog="Precedence: defaults < config file < environment < flags. API keys are read "
               "from environment variables only. Every setting: docs/configuration.md.")
    parser.add_argument("--version", action="version", version=f"openai-exporter {__version__}")

    cfg = parser.add_argument_group("configuration")
    cfg.add_argument("--config.file", dest="config_file", metavar="PATH",
                     help="YAML config file (targets, prices, history). Env: CONFIG_FILE. "
                          "Default: none, one target from the OPENAI_* environment.")
    cfg.add_argument("--config.check", dest="config_check", action="store_true",
                     help="Validate the configuration and exit (0 if valid, 2 if not). "
                          "Default: off.")

    web = parser.add_argument_group("web")
    web.add_argument("--web.listen-address", dest="web_listen_address", metavar="HOST:PORT",
                     help="Address for /metrics and /status: host:port, [::]:port or :port. "
                          "Env: LISTEN_ADDRESS. Default: 0.0.0.0:9188.")

    log = parser.add_argument_group("logging")
    log.add_argument("--log.level", dest="log_level", metavar="LEVEL",
                     help="DEBUG, INFO, WARNING or ERROR. Env: LOG_LEVEL. Default: INFO.")
    log.add_argument("--log.format", dest="log_format", metavar="FORMAT",
                     help="json or text. Env: LOG_FORMAT. Default: json.")

    probe = parser.add_argument_group("probing")
    probe.add_argument("--probe.interval", dest="probe_interval", metavar="SECONDS",
                       help="Seconds between probe rounds (or a duration such as 1m). "
                            "Env: PROBE_INTERVAL_SEC. Default: 60.")
    probe.add_argument("--probe.timeout", dest="probe_timeout", metavar="SECONDS",
                       help="Per-probe timeout in seconds (or a duration such as 500ms). "
                            "Env: HTTP_TIMEOUT_MS (milliseconds). Default: 12.")
    probe.add_argument("--probe.mode", dest="probe_mode", metavar="MODE",
                       help="roundrobin (one endpoint per target per interval) or all "
                            "(every endpoint every interval). Env: PROBE_MODE. "
                            "Default: roundrobin.")
    probe.add_argument("--probe.endpoints", dest="probe_endpoints", metavar="LIST",
                       help="Comma list of probe keys (" + ", ".join(CATALOGUE) + "). "
                            "Env: PROBE_ENDPOINTS. Default: every default probe.")
    probe.add_argument("--probe.heavy", dest="probe_heavy",
                       action=argparse.BooleanOptionalAction,
                       help="Allow probes that cost real money (images) and add them to the "
                            "defaults. Env: PROBE_HEAVY. Default: off.")
    probe.add_argument("--demo", dest="demo", action=argparse.BooleanOptionalAction,
                       help="Probe the bundled fake upstream instead of a real API. Env: DEMO. "
                            "Default: on when OPENAI_API_KEY and OPENAI_BASE_URL are both "
                            "unset and the config file lists no targets.")
    return parser


# -- config file ----------------------------------------------------------------------------

class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(key)
        self.key, self.line = key, line


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable: construct_mapping reports it with a line number
            continue
        if duplicate:
            raise _DuplicateKey(key, key_node.start_mark.line + 1)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(text: str, name: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise ConfigError(f"{name}: duplicate key {_show(exc.key)} at line {exc.line}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "cannot parse"
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{name}: invalid YAML{at}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: invalid YAML: {exc}") from None


def _read_config_file(path: str) -> dict[str, Any]:
    name = f"config file {path}"
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: cannot read it: not UTF-8 text") from None
    doc = _parse_yaml(text, name)
    if doc is None:  # an empty file: every default
        return {}
    if not isinstance(doc, dict):
        raise _bad(name, "must be a mapping of settings at top level", doc)
    return doc


def _check_keys(mapping: dict[Any, Any], allowed: tuple[str, ...], where: str,
                in_what: str, secret_hint: str | None) -> None:
    for key in mapping:
        if key in allowed:
            continue
        if secret_hint and isinstance(key, str) and _SECRETISH.search(key):
            raise ConfigError(f"config file {where}{key}: {secret_hint}")
        raise ConfigError(f"config file: unknown key {_show(key)} {in_what} "
                          f"(allowed: {', '.join(allowed)})")


def _file_layer(doc: dict[str, Any]) -> _Layer:
    _check_keys(doc, TOP_KEYS, "", "at top level",
                "secrets never go in the config file; use environment variables "
                "(OPENAI_API_KEY or a target's api_key_env, WEB_AUTH_TOKEN)")
    history = doc.get("history", {})
    if history is None:
        history = {}
    if not isinstance(history, dict):
        raise _bad("config file history", "must be a mapping (" + ", ".join(HISTORY_KEYS) + ")",
                   history)
    _check_keys(history, HISTORY_KEYS, "history.", "in history", None)
    layer: _Layer = {}
    for spec in _SPECS:
        if spec.yaml is None:
            continue
        section, _, key = spec.yaml.rpartition(".")
        mapping = history if section == "history" else doc
        if key in mapping:
            where = f"config file {spec.yaml}"
            layer[spec.key] = (spec.parse(mapping[key], where), where)
    return layer


def _prices(doc: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The shipped price table with the file's `prices:` merged over it, model by model."""
    try:
        prices = shipped_prices()
        prices.update(parse_prices(doc.get("prices"), "config file prices"))
    except PriceError as exc:
        raise ConfigError(exc.describe(_show)) from None
    return prices


# -- environment and flags -----------------------------------------------------------------

def _env_layer(environ: Mapping[str, str]) -> _Layer:
    layer: _Layer = {}
    for spec in _SPECS:
        if spec.env is None:
            continue
        raw = environ.get(spec.env, "")
        if not raw.strip():  # VAR= (as compose writes an unset value) means unset
            continue
        layer[spec.key] = ((spec.env_parse or spec.parse)(raw, spec.env), spec.env)
    return layer


def _cli_layer(args: argparse.Namespace) -> _Layer:
    layer: _Layer = {}
    for spec in _SPECS:
        if spec.flag is None:
            continue
        raw = getattr(args, _dest(spec.flag))
        if raw is None:
            continue
        if isinstance(raw, bool):  # BooleanOptionalAction: --x / --no-x
            flag = spec.flag if raw else "--no-" + spec.flag[2:]
            layer[spec.key] = (raw, flag)
        else:
            layer[spec.key] = (spec.parse(raw, spec.flag), spec.flag)
    return layer


# -- targets -------------------------------------------------------------------------------

def _parse_file_target(raw: Any, i: int) -> dict[str, Any]:
    """Validate one entry of `targets:` on its own; returns the keys it set, parsed."""
    where = f"config file targets[{i}]"
    if not isinstance(raw, dict):
        raise _bad(where, "must be a mapping with at least a name", raw)
    _check_keys(raw, TARGET_KEYS, f"targets[{i}].", f"in targets[{i}]",
                "keys never go in the config file; put the key in an environment variable "
                "and set api_key_env to its name")
    out: dict[str, Any] = {}
    if "name" not in raw:
        raise ConfigError(f"{where}.name: required (letters, digits, '-', '_' or '.')")
    out["name"] = _target_name(raw["name"], f"{where}.name")
    provider = _enum(PROVIDERS)(raw.get("provider", "openai"), f"{where}.provider")
    out["provider"] = provider

    if "base_url" in raw:
        url = _url(raw["base_url"], f"{where}.base_url")
        if provider == "azure" and re.search(r"/openai(/|$)", urlsplit(url).path):
            raise ConfigError(
                f"{where}.base_url: for provider azure give the resource endpoint without "
                "/openai (such as https://NAME.openai.azure.com); the exporter adds the path")
        out["base_url"] = url
    elif provider != "openai":
        raise ConfigError(f"{where}.base_url: required for provider {provider} "
                          "(an http(s) URL)")

    if "api_key_env" in raw:
        value = raw["api_key_env"]
        if not isinstance(value, str) or not _ENV_NAME.fullmatch(value.strip()):
            # Never echo it: people paste the key itself here.
            raise ConfigError(f"{where}.api_key_env: must be the name of an environment "
                              "variable (letters, digits, '_'), not the key itself")
        out["api_key_env"] = value.strip()

    if "region" in raw:
        out["region"] = _region(raw["region"], f"{where}.region")

    if "models" in raw:
        models = raw["models"]
        if not isinstance(models, dict):
            raise _bad(f"{where}.models",
                       f"must be a mapping of model kind to model ({', '.join(MODEL_KINDS)})",
                       models)
        _check_keys(models, MODEL_KINDS, f"targets[{i}].models.", f"in targets[{i}].models",
                    None)
        parse = _deployment if provider == "azure" else _model
        out["models"] = {k: parse(v, f"{where}.models.{k}") for k, v in models.items()}

    if "probes" in raw:
        out["probes"] = _probe_list(raw["probes"], f"{where}.probes")

    if "headers" in raw:
        out["headers"] = _headers(raw["headers"], f"{where}.headers")

    for key in ("org_id", "project_id"):
        if key in raw:
            out[key] = _identifier(raw[key], f"{where}.{key}")

    if "api_version" in raw:
        if provider != "azure":
            raise ConfigError(f"{where}.api_version: only for provider azure")
        out["api_version"] = _identifier(raw["api_version"], f"{where}.api_version")
    elif provider == "azure":
        raise ConfigError(f"{where}.api_version: required for provider azure "
                          "(such as 2024-10-21)")
    return out


def _headers(raw: Any, where: str) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise _bad(where, "must be a mapping of header name to string value", raw)
    headers: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise _bad(where, "header names must be HTTP tokens (letters, digits, '-')", name)
        if name.lower() in _AUTH_HEADERS:
            raise ConfigError(f"{where}: {name!r} is set from the key; put the key in an "
                              "environment variable and set api_key_env to its name")
        # Values are not echoed: a header may well carry a credential for a gateway.
        if not isinstance(value, str):
            raise ConfigError(f"{where}.{name}: must be a string (quote it)")
        if re.search(r"[\r\n\x00]", value):
            raise ConfigError(f"{where}.{name}: must be one line")
        headers[name] = value
    return headers


def _resolve_file_target(
    t: dict[str, Any], i: int, merged: dict[str, Any], sources: dict[str, str],
    environ: Mapping[str, str],
) -> tuple[TargetSettings, str, str]:
    """A file target with every default applied. Also returns where its probe list came
    from, and the error to raise if its key is missing ("" when it is fine).

    For provider openai, the environment's target variables (OPENAI_BASE_URL, OPENAI_ORG_ID,
    OPENAI_PROJECT_ID, OPENAI_*_MODEL, PROBE_ENDPOINTS/--probe.endpoints) fill in what the
    target leaves out. Azure deployments and compatible servers have their own model names
    and URLs, so they never read them.
    """
    where = f"config file targets[{i}]"
    provider = t["provider"]
    fill = provider == "openai"
    heavy = merged["heavy"]

    if "probes" in t:
        probes, probes_from = t["probes"], f"{where}.probes"
    elif fill and "probes" in merged:
        probes, probes_from = merged["probes"], sources["probes"]
    else:
        probes, probes_from = default_probes(provider, heavy), ""

    models: dict[str, str] = {}
    given = t.get("models", {})
    for kind in MODEL_KINDS:
        if kind in given:
            models[kind] = given[kind]
        elif fill:
            models[kind] = merged.get(f"model.{kind}", DEFAULT_MODELS[kind])
    for name in probes:
        kind = CATALOGUE[name].model_kind
        if kind and kind not in models:
            what = ("the deployment name" if provider == "azure"
                    else "the model name the server serves")
            raise ConfigError(f"{where}.models.{kind}: required for provider {provider} by "
                              f"probe {name!r} ({what})")

    base_url = t.get("base_url") or (merged.get("base_url") if fill else None) or OPENAI_BASE_URL
    key_env = t.get("api_key_env", DEFAULT_KEY_ENV[provider])
    api_key = environ.get(key_env, "").strip() if key_env else ""
    key_error = ""
    if key_env and not api_key:
        named = ("named by api_key_env" if "api_key_env" in t
                 else f"(the default api_key_env for provider {provider})")
        key_error = (f"targets[{i}] ({t['name']}): environment variable {key_env} {named} "
                     "is not set")
    target = TargetSettings(
        name=t["name"], provider=provider, base_url=base_url, api_key=api_key,
        api_key_env=key_env, region=t.get("region", merged["region"]), models=models,
        probes=probes, headers=t.get("headers", {}),
        org_id=t.get("org_id", merged.get("org_id", "") if fill else ""),
        project_id=t.get("project_id", merged.get("project_id", "") if fill else ""),
        api_version=t.get("api_version", ""),
    )
    return target, probes_from, key_error


def _env_target(merged: dict[str, Any], sources: dict[str, str],
                environ: Mapping[str, str]) -> tuple[TargetSettings, str, str]:
    """The single target of a configuration without `targets:` in a file."""
    probes = merged.get("probes") or default_probes("openai", merged["heavy"])
    key_error = ""
    if "base_url" in merged:
        key_error = ("OPENAI_API_KEY: not set; export it, or unset OPENAI_BASE_URL to run "
                     "the key-less demo")
    elif merged["demo"] is False:
        how = "drop" if sources["demo"].startswith("--") else "unset"
        key_error = (f"OPENAI_API_KEY: not set; export it, or {how} {sources['demo']} to run "
                     "the key-less demo")
    target = TargetSettings(
        name="openai", provider="openai",
        base_url=merged.get("base_url", OPENAI_BASE_URL),
        api_key=environ.get("OPENAI_API_KEY", "").strip(),
        api_key_env="OPENAI_API_KEY", region=merged["region"],
        models={k: merged.get(f"model.{k}", DEFAULT_MODELS[k]) for k in MODEL_KINDS},
        probes=probes, org_id=merged.get("org_id", ""),
        project_id=merged.get("project_id", ""),
    )
    return target, sources.get("probes", ""), "" if target.api_key else key_error


# -- load -------------------------------------------------------------------------------

def load(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Parse flags, read the config file, read the environment; validate everything once.

    Raises ConfigError (one line) for any bad value, and SystemExit only for what argparse
    itself handles (--help, --version, an unknown flag).
    """
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)

    config_file = (args.config_file if args.config_file is not None
                   else environ.get("CONFIG_FILE", "")).strip()
    doc = _read_config_file(config_file) if config_file else {}
    file_layer = _file_layer(doc)
    prices = _prices(doc)
    raw_targets = doc.get("targets")
    file_targets: list[dict[str, Any]] = []
    if "targets" in doc:
        if not isinstance(raw_targets, list) or not raw_targets:
            raise _bad("config file targets", "must be a non-empty list of targets "
                       "(or leave it out for one target from the environment)", raw_targets)
        seen: dict[str, int] = {}
        for i, raw in enumerate(raw_targets):
            t = _parse_file_target(raw, i)
            if t["name"] in seen:
                raise ConfigError(f"config file targets[{i}].name: duplicate target name "
                                  f"{t['name']!r} (also targets[{seen[t['name']]}])")
            seen[t["name"]] = i
            file_targets.append(t)

    # defaults < file < environment < flags
    merged: dict[str, Any] = dict(_DEFAULTS)
    sources: dict[str, str] = {}
    for layer in (file_layer, _env_layer(environ), _cli_layer(args)):
        for key, (value, where) in layer.items():
            merged[key], sources[key] = value, where

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

    host, port = merged["listen"]
    return Settings(
        targets=tuple(t for t, _, _ in resolved),
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
        config_file=config_file,
        config_check=bool(args.config_check),
    )


# -- the effective configuration, safe to show ----------------------------------------------

MASK = "***"


def _mask(value: str) -> str:
    return MASK if value else ""


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective configuration as a JSON-able dict for the start-up log and /status.

    Every field declared with repr=False (api_key, web_auth_token) shows as "***" when set
    and "" when not; header values show as "***" (a gateway header may be a credential).
    Prices are listed only for the models the targets use (None: no price, no cost).
    """
    def plain(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if not f.repr:
                value = _mask(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = dict(value)
            out[f.name] = value
        return out

    config = plain(settings)
    targets = []
    used: set[str] = set()
    for t in settings.targets:
        entry = plain(t)
        entry["headers"] = {name: MASK for name in t.headers}
        targets.append(entry)
        used.update(filter(None, map(t.model_for, t.probes)))
    config["targets"] = targets
    config["prices"] = {m: (dict(settings.prices[m]) if m in settings.prices else None)
                        for m in sorted(used)}
    return config

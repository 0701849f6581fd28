"""Where settings come from: the table of settings, and the config file, environment and
command-line layers it drives (each layer: {key: (parsed value, where the user set it)})."""

from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass
from typing import Any, NoReturn
from collections.abc import Callable, Mapping

import yaml

from .. import __version__
from ..catalogue import CATALOGUE, MODEL_ENV
from ..pricing import PriceError, parse_prices, shipped_prices
from ..transport import CONNECTION_POLICIES
from .parsers import (
    _bad, _bool, _enum, _group_by, _hours, _identifier, _int_range, _interval, _interval_env,
    _listen, _log_level, _model, _number_in, _number_or_duration, _probe_list, _region,
    _secret, _show, _text, _timeout, _timeout_ms, _url, _usage_kinds,
)
from .schema import ConfigError, Settings, TargetSettings
from .shards import MAX_SHARDS, _shard_count, _shard_index

MODES = ("roundrobin", "all")
LOG_FORMATS = ("json", "text")

TOP_KEYS = ("interval", "timeout", "mode", "connection", "heavy", "region", "listen_address",
            "log_level", "log_format", "max_workers", "probe_budget_usd_per_day", "prices",
            "history", "usage", "shard", "targets")
HISTORY_KEYS = ("enable_db", "db_file", "retention_hours", "max_events")
USAGE_KEYS = ("poll_interval", "lookback_minutes", "kinds", "group_by", "max_series")
SHARD_KEYS = ("index", "count", "primary")
# Mappings of the file that hold settings of their own: section -> its keys.
SECTIONS = {"history": HISTORY_KEYS, "usage": USAGE_KEYS, "shard": SHARD_KEYS}

_SECRETISH = re.compile(
    r"(^|[_-])(api[_-]?key|key|token|secret|password|passwd|authorization|bearer|credentials?)"
    r"($|[_-])", re.I)


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
    _Spec("interval_seconds", "interval", "PROBE_INTERVAL_SEC", "--probe.interval", _interval,
          _interval_env),
    # Lets tests probe more than once a second (see load()); never in a config file.
    _Spec("allow_fast", None, "PROBE_ALLOW_FAST", "--probe.allow-fast", _bool),
    _Spec("timeout_seconds", "timeout", "HTTP_TIMEOUT_MS", "--probe.timeout", _timeout,
          _timeout_ms),
    _Spec("mode", "mode", "PROBE_MODE", "--probe.mode", _enum(MODES)),
    _Spec("connection", "connection", "PROBE_CONNECTION", "--probe.connection",
          _enum(CONNECTION_POLICIES)),
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
    # ~270 bytes an event in memory: the most is ~270 MB.
    _Spec("history_max_events", "history.max_events", "HISTORY_MAX_EVENTS", None,
          _int_range(1, 1_000_000)),
    _Spec("web_auth_token", None, "WEB_AUTH_TOKEN", None, _secret),
    # Organisation usage and spend (docs/usage.md); the admin key is a secret like the
    # others: environment only, masked in /status.
    _Spec("admin_key", None, "OPENAI_ADMIN_KEY", None, _secret),
    _Spec("usage_poll_interval_seconds", "usage.poll_interval", "USAGE_POLL_INTERVAL_SEC",
          None, _number_in("1-86400 seconds or a duration such as 5m", 1, 86400,
                           read=_number_or_duration),
          _number_in("a number of seconds 1-86400", 1, 86400)),
    _Spec("usage_lookback_minutes", "usage.lookback_minutes", "USAGE_LOOKBACK_MIN", None,
          _int_range(1, 1440)),
    _Spec("usage_kinds", "usage.kinds", "USAGE_KINDS", None, _usage_kinds),
    _Spec("usage_group_by", "usage.group_by", "USAGE_GROUP_BY", None, _group_by),
    _Spec("usage_max_series", "usage.max_series", "USAGE_MAX_SERIES", None,
          _int_range(1, 100_000)),
    _Spec("probe_budget_usd_per_day", "probe_budget_usd_per_day", "PROBE_BUDGET_USD_PER_DAY",
          None, _number_in("a number of USD from 0.01 to 1000000", 0.01, 1_000_000)),
    # Scale-out (shards.py): one config file for every instance, each with its own index.
    _Spec("shard_index", "shard.index", "SHARD_INDEX", "--shard.index", _shard_index),
    _Spec("shard_count", "shard.count", "SHARD_COUNT", "--shard.count", _shard_count),
    _Spec("primary", "shard.primary", "SHARD_PRIMARY", "--shard.primary", _bool),
    _Spec("demo", None, "DEMO", "--demo", _bool),
    # The environment's target (see _env_target); they also fill in provider-openai file
    # targets (see _resolve_file_target).
    _Spec("base_url", None, "OPENAI_BASE_URL", None, _url),
    _Spec("org_id", None, "OPENAI_ORG_ID", None, _identifier),
    _Spec("project_id", None, "OPENAI_PROJECT_ID", None, _identifier),
    _Spec("probes", None, "PROBE_ENDPOINTS", "--probe.endpoints", _probe_list),
    *(_Spec(f"model.{kind}", None, env, None, _model) for kind, env in MODEL_ENV.items()),
)
# Settings that hold a secret: their variables also read <NAME>_FILE, and no other setting
# may hold their value (see secrets.py).
SECRET_KEYS = frozenset(s.key for s in _SPECS if s.parse is _secret)
SECRET_ENV = tuple(s.env for s in _SPECS if s.parse is _secret and s.env)

_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(Settings)
    if f.default is not dataclasses.MISSING
}
_DEFAULTS.update(region=TargetSettings.__dataclass_fields__["region"].default,
                 listen=(_DEFAULTS["listen_host"], _DEFAULTS["listen_port"]),
                 allow_fast=False,
                 primary=None,  # None: shard 0 (shards.select)
                 demo=None)  # None: decided by the demo rule in load()

# Set by the user somewhere, with where: {key: (value, "PROBE_INTERVAL_SEC")}
_Layer = dict[str, tuple[Any, str]]


# -- command line ---------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse, with its errors (an unknown flag, a missing value) raised as the one-line
    ConfigError of every other bad setting instead of usage text and exit 2 on the spot."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    """Prometheus-style flags. Every default is None so load() can tell "not given"."""
    parser = _Parser(
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
                       help="Seconds between probe rounds (or a duration such as 1m), "
                            "1-86400. Env: PROBE_INTERVAL_SEC. Default: 30.")
    probe.add_argument("--probe.allow-fast", dest="probe_allow_fast",
                       action=argparse.BooleanOptionalAction,
                       help="Allow --probe.interval below 1 s (down to 0.05 s), for tests: "
                            "every probe is a billed request. Env: PROBE_ALLOW_FAST. "
                            "Default: off.")
    probe.add_argument("--probe.timeout", dest="probe_timeout", metavar="SECONDS",
                       help="Per-probe timeout in seconds (or a duration such as 500ms), "
                            "0.01-300. Env: HTTP_TIMEOUT_MS (milliseconds). Default: 12.")
    probe.add_argument("--probe.mode", dest="probe_mode", metavar="MODE",
                       help="roundrobin (one endpoint per target per interval) or all "
                            "(every endpoint every interval). Env: PROBE_MODE. "
                            "Default: roundrobin.")
    probe.add_argument("--probe.connection", dest="probe_connection", metavar="POLICY",
                       help="fresh (a new TCP and TLS connection every probe, so every "
                            "probe measures the same path) or reuse (the warm pooled "
                            "connection, as an SDK sees it). Env: PROBE_CONNECTION. "
                            "Default: fresh.")
    probe.add_argument("--probe.endpoints", dest="probe_endpoints", metavar="LIST",
                       help="Comma list of probe keys (" + ", ".join(CATALOGUE) + "). "
                            "Env: PROBE_ENDPOINTS. Default: every default probe.")
    probe.add_argument("--probe.heavy", dest="probe_heavy",
                       action=argparse.BooleanOptionalAction,
                       help="Allow probes that cost real money (images) and add them to the "
                            "defaults. Env: PROBE_HEAVY. Default: off.")
    shard = parser.add_argument_group("scale-out (docs/bundle.md#scale-out)")
    shard.add_argument("--shard.index", dest="shard_index", metavar="N",
                       help="This instance's shard, 0 to count-1: it probes the targets whose "
                            "name hashes to it. Env: SHARD_INDEX. Default: 0.")
    shard.add_argument("--shard.count", dest="shard_count", metavar="N",
                       help=f"Number of instances sharing the targets, 1-{MAX_SHARDS}. "
                            "Env: SHARD_COUNT. Default: 1 (every target).")
    shard.add_argument("--shard.primary", dest="shard_primary",
                       action=argparse.BooleanOptionalAction,
                       help="Run the once-per-fleet work (the organisation usage poller). "
                            "Env: SHARD_PRIMARY. Default: on for shard 0 only.")
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


# A config file is a few levels deep and a few KB; these bounds keep a hostile or mistaken
# one (a deep nest, /dev/zero) a one-line error instead of a RecursionError or a hang.
MAX_YAML_DEPTH = 50
MAX_CONFIG_BYTES = 1024 * 1024


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses duplicate keys (PyYAML silently keeps the last one), nesting
    deeper than MAX_YAML_DEPTH, and scalars it cannot build, each with a line number."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


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


def _scalar_or_error(construct: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """A scalar constructor whose ValueError (an int of more than 4300 digits, a date such
    as 2024-13-45) becomes a YAML error at the scalar's line."""
    def build(loader: Any, node: Any) -> Any:
        try:
            return construct(loader, node)
        except ValueError as exc:
            text = str(node.value)
            problem = ("a number with more than 4300 digits" if "digits" in str(exc)
                       else f"cannot read {_show(text)}")
            raise yaml.constructor.ConstructorError(None, None, problem,
                                                    node.start_mark) from None
    return build


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
for _tag, _construct in (("int", yaml.SafeLoader.construct_yaml_int),
                         ("float", yaml.SafeLoader.construct_yaml_float),
                         ("timestamp", yaml.SafeLoader.construct_yaml_timestamp)):
    _StrictLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _scalar_or_error(_construct))


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
    except RecursionError:  # not expected below MAX_YAML_DEPTH; never a traceback though
        raise ConfigError(f"{name}: invalid YAML: nested too deeply") from None


def _read_config_file(path: str) -> dict[str, Any]:
    name = f"config file {path}"
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{name}: cannot read it: larger than 1 MiB")
    try:
        text = data.decode("utf-8")
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
    hint = ("secrets never go in the config file; use environment variables "
            "(OPENAI_API_KEY or a target's api_key_env, WEB_AUTH_TOKEN)")
    _check_keys(doc, TOP_KEYS, "", "at top level", hint)
    sections: dict[str, dict[str, Any]] = {"": doc}
    for name, keys in SECTIONS.items():
        section = doc.get(name, {})
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise _bad(f"config file {name}", "must be a mapping (" + ", ".join(keys) + ")",
                       section)
        _check_keys(section, keys, f"{name}.", f"in {name}", hint)
        sections[name] = section
    layer: _Layer = {}
    for spec in _SPECS:
        if spec.yaml is None:
            continue
        section_name, _, key = spec.yaml.rpartition(".")
        mapping = sections[section_name]
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

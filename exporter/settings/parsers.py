"""Value parsers: each takes the raw value and where it came from, returns it parsed or
raises a one-line ConfigError that names the setting and says what is allowed."""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Any
from collections.abc import Callable
from urllib.parse import urlsplit

from ..catalogue import CATALOGUE
from ..durations import parse_duration
from ..usage.kinds import GROUP_BY_LABELS, KINDS
from .schema import ConfigError
from .secrets import check_secret_text

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_REGION = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")
_ID = re.compile(r"[A-Za-z0-9_.-]+")
_DEPLOYMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Headers the prober sets from the key; a file must not carry them.
_AUTH_HEADERS = ("authorization", "api-key", "proxy-authorization")

# The bounds of every number (docs/configuration.md states them). The interval: a probe is
# a billed request, so never more than one per second and endpoint unless a test asks for
# it (allow_fast), and at least one a day. The timeout: 10 ms to 5 minutes (nothing
# measures below 10 ms; a probe held longer only delays the next one).
MIN_INTERVAL, FAST_MIN_INTERVAL, MAX_INTERVAL = 1.0, 0.05, 86400.0
_FAST = "from 0.05 with --probe.allow-fast or PROBE_ALLOW_FAST=1, for tests"
INTERVAL_ENV = f"a number of seconds from 1 to 86400 ({_FAST})"
INTERVAL = f"a number of seconds from 1 to 86400 or a duration such as 30s or 1m ({_FAST})"
_TIMEOUT_ENV = "a number of milliseconds from 10 to 300000 (5 minutes)"
_TIMEOUT = ("a number of seconds from 0.01 to 300 (5 minutes) or a duration such as 500ms "
            "or 15s")
_RETENTION = "a number of hours from 0.25 to 720 (30 days)"


def _show(value: Any) -> str:
    """The offending value for an error message: short, one line, typed like YAML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing"
    if isinstance(value, (int, float)):
        try:
            text = repr(value)
        except ValueError:  # an int too long to print
            return "a number with more than 4300 digits"
        return text if len(text) <= 60 else text[:57] + "..."
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
        try:
            return float(raw)
        except OverflowError:  # an int beyond any float: out of every range
            return math.inf
    if isinstance(raw, str):
        try:
            return float(raw.strip())
        except ValueError:
            return None
    return None


def _number_in(what: str, lo: float, hi: float, divisor: float = 1.0,
               read: Callable[[Any], float | None] = _number) -> Callable[[Any, str], float]:
    """A parser of numbers from `lo` to `hi` (in the unit the user writes), divided by
    `divisor` (1000: milliseconds to seconds). NaN, infinities and -0 are refused."""
    def parse(raw: Any, where: str) -> float:
        value = read(raw)
        if value is None or not math.isfinite(value) or value <= 0 or not lo <= value <= hi:
            raise _bad(where, f"must be {what}", raw)
        return value / divisor

    return parse


def _number_or_duration(raw: Any) -> float | None:
    value = _number(raw)
    if value is None and isinstance(raw, str):
        value = parse_duration(raw)
    return value


# Environment: a plain number of seconds (the name says _SEC). Down to the floor of
# allow_fast: load() refuses an interval below 1 s without it (a cross-setting rule).
_interval_env = _number_in(INTERVAL_ENV, FAST_MIN_INTERVAL, MAX_INTERVAL)
# File and flags: seconds, or a Prometheus-style duration (30s, 1m, 1m30s, 500ms).
_interval = _number_in(INTERVAL, FAST_MIN_INTERVAL, MAX_INTERVAL, read=_number_or_duration)
_timeout_ms = _number_in(_TIMEOUT_ENV, 10.0, 300_000.0, 1000.0)
_timeout = _number_in(_TIMEOUT, 0.01, 300.0, read=_number_or_duration)
_hours = _number_in(_RETENTION, 0.25, 720.0)


def _int_range(lo: int, hi: int | None) -> Callable[[Any, str], int]:
    what = f"must be a whole number {lo}-{hi}" if hi is not None else (
        f"must be a whole number >= {lo}")

    def parse(raw: Any, where: str) -> int:
        value: int | None = None
        if isinstance(raw, int) and not isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str) and re.fullmatch(r"\s*[+-]?\d{1,18}\s*", raw):
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


def _valid_hostname(host: str) -> bool:
    """RFC 1123: dot-separated labels of 1-63 letters, digits and inner hyphens, 253
    characters at most, and a last label that is not all digits (999.1.1.1 is not a
    name; it is a mistyped IPv4 address)."""
    labels = host.split(".")
    return (len(host) <= 253 and all(_LABEL.fullmatch(label) for label in labels)
            and not labels[-1].isdigit())


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
    if not (port_text.isdigit() and len(port_text) <= 5 and 1 <= int(port_text) <= 65535):
        raise _bad(where, what, raw)
    if not bracketed:
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if not _valid_hostname(host):
                raise _bad(where, "must name an IPv4 address or a valid host name",
                           raw) from None
    return host, int(port_text)


def _name_list(vocabulary: tuple[str, ...], names: str, name: str
               ) -> Callable[[Any, str], tuple[str, ...]]:
    """A comma list (env, flag) or a YAML list of `names` from `vocabulary`, returned in
    the vocabulary's order; `name` is one of them in the messages."""
    allowed = ", ".join(vocabulary)

    def parse(raw: Any, where: str) -> tuple[str, ...]:
        if isinstance(raw, str):
            items = [s.strip() for s in raw.split(",") if s.strip()]
        elif isinstance(raw, list) and all(isinstance(s, str) for s in raw):
            items = [s.strip() for s in raw]
        else:
            raise _bad(where, f"must be a list of {names} ({allowed})", raw)
        if not items:
            raise ConfigError(f"{where}: must name at least one {name} (allowed: {allowed})")
        for item in items:
            if item not in vocabulary:
                raise ConfigError(f"{where}: unknown {name} {item!r} (allowed: {allowed})")
        return tuple(v for v in vocabulary if v in items)

    return parse


_probe_list = _name_list(tuple(CATALOGUE), "probe keys", "probe")
_usage_kinds = _name_list(tuple(KINDS), "usage kinds", "usage kind")
_group_by = _name_list(tuple(GROUP_BY_LABELS), "group_by fields", "group_by field")


def _secret(raw: Any, where: str) -> str:
    """A secret (environment only): also read from <NAME>_FILE, never shown (secrets.py)."""
    return check_secret_text(raw.strip(), where) if isinstance(raw, str) else ""


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

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

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_REGION = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")
_ID = re.compile(r"[A-Za-z0-9_.-]+")
_DEPLOYMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Headers the prober sets from the key; a file must not carry them.
_AUTH_HEADERS = ("authorization", "api-key", "proxy-authorization")

_SECONDS = "a number of seconds > 0 or a duration such as 30s or 1m"


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


def _bounded(what: str, lo: float, hi: float,
             read: Callable[[Any], float | None] = _number) -> Callable[[Any, str], float]:
    """A parser of finite numbers with lo < value <= hi (lo exclusive when 0, else inclusive)."""
    def parse(raw: Any, where: str) -> float:
        value = read(raw)
        if (value is None or not math.isfinite(value) or value > hi
                or (value <= 0 if lo == 0 else value < lo)):
            raise _bad(where, f"must be {what}", raw)
        return value

    return parse


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
    return raw.strip() if isinstance(raw, str) else ""


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

"""Secrets: which environment variables hold one, reading them from files, and keeping
every secret out of the settings that are shown (labels, /status, logs) and out of every
config error.

A secret is OPENAI_API_KEY, the variable each target's ``api_key_env`` names (with the
providers' default names), and every row of ``_SPECS`` whose parser is ``_secret``
(WEB_AUTH_TOKEN): declaring a new secret is one such row. Each also reads
``<NAME>_FILE``, the convention of official container images (Docker secrets, Kubernetes
Secret volumes): the file holds the secret alone; one trailing newline and surrounding
blanks are dropped. ``SecretBook`` gathers the secret values of one ``load()``; with them
it refuses a secret pasted into any other setting (``check_not_secret``) and masks them in
every config error (``redact``), the one place load() words its errors through.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any
from collections.abc import Iterable, Mapping

from .schema import ConfigError

# A key is ~200 bytes; a file far larger is the wrong file.
MAX_SECRET_FILE_BYTES = 64 * 1024
# What a secret may hold: it goes in an HTTP header (Authorization, api-key) or is compared
# with one, so printable ASCII without spaces. Anything else fails on every probe.
_SECRET_TEXT = re.compile(r"[\x21-\x7e]+")

MASK = "***"
# Real OpenAI keys (sk-, sk-proj-, sk-admin-, sk-svcacct-) are 40-200 characters. A value
# holding one is refused; in a message, even a shorter run that starts like one is masked
# (a value cut short keeps its start).
_WHOLE_KEY = re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-]{20,}")
_KEY_RUN = re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-]{8,}")
# A secret shorter than this ("x" in a CI check) is not looked for: it would match
# innocent text. Of a longer one, any run of its first _HEAD characters onwards is masked.
MIN_SECRET = 6
_HEAD = 8


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


class SecretBook:
    """The secret variables of one load() and their values."""

    def __init__(self, environ: Mapping[str, str], names: Iterable[str]) -> None:
        self.environ = environ
        self.names: list[str] = []
        self.add(names)

    def add(self, names: Iterable[str]) -> None:
        """More variables that hold a secret (the api_key_env of the file's targets)."""
        for name in names:
            if name and name not in self.names:
                self.names.append(name)

    def read_files(self) -> dict[str, str]:
        """The environment with each secret NAME taken from the file NAME_FILE names, when
        set; ConfigError (naming the variable, never the content) if that file is no good
        or both are set."""
        environ = dict(self.environ)
        for name in self.names:
            path = self.environ.get(name + "_FILE", "").strip()
            if not path:
                continue
            if self.environ.get(name, "").strip():
                raise ConfigError(f"{name} and {name}_FILE are both set; set only one")
            environ[name] = _read_secret_file(name + "_FILE", path)
        self.environ = environ
        return environ

    def values(self) -> dict[str, str]:
        """{secret value: the variable that holds it}, longest value first."""
        found: dict[str, str] = {}
        for name in self.names:
            value = self.environ.get(name, "").strip()
            if len(value) >= MIN_SECRET:
                found.setdefault(value, name)
        return dict(sorted(found.items(), key=lambda kv: -len(kv[0])))

    def check_not_secret(self, value: Any, where: str) -> None:
        """ConfigError (without the value) when a setting that is shown holds a secret."""
        for text in _strings(value):
            for secret, name in self.values().items():
                if secret in text:
                    raise ConfigError(f"{where}: holds the value of {name} (not shown); a "
                                      "secret goes only in its own variable")
            if _WHOLE_KEY.search(text):
                raise ConfigError(f"{where}: looks like an API key (not shown); keys go only "
                                  "in OPENAI_API_KEY or the variable a target's api_key_env "
                                  "names")

    def redact(self, text: str) -> str:
        """`text` with every secret value, any part of one that starts like it, and
        anything key-shaped masked."""
        for secret in self.values():
            text = text.replace(secret, MASK)
            head = secret[:_HEAD]
            start = text.find(head) if len(secret) > _HEAD else -1
            while start >= 0:
                end = start + _HEAD
                while (end < len(text) and end - start < len(secret)
                       and text[end] == secret[end - start]):
                    end += 1
                text = text[:start] + MASK + text[end:]
                start = text.find(head, start + len(MASK))
        return _KEY_RUN.sub("sk-" + MASK, text)


def check_secret_text(value: str, where: str) -> str:
    """The secret, if it can go in an HTTP header; ConfigError (without it) otherwise."""
    if value and not _SECRET_TEXT.fullmatch(value):
        raise ConfigError(f"{where}: must be printable ASCII without spaces (not shown)")
    return value


def _read_secret_file(var: str, path: str) -> str:
    # Show the path only when it looks like one: someone may have pasted the key itself.
    where = f"{var}={path}" if "/" in path else var
    reading = "cannot read it" if "/" in path else "cannot read the file it names"
    try:
        # Not a FIFO or a device: /dev/zero never ends, a FIFO may block forever.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ConfigError(f"{where}: {reading}: not a regular file")
        with open(path, "rb") as fh:
            data = fh.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: {reading}: {exc.strerror or exc}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ConfigError(f"{where}: {reading}: larger than 64 KiB (it must hold only the "
                          "secret)")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {reading}: not UTF-8 text") from None
    if not text:
        raise ConfigError(f"{where}: the file is empty")
    if not _SECRET_TEXT.fullmatch(text):
        raise ConfigError(f"{where}: must hold only the secret, printable ASCII on one line "
                          "(the content is not shown)")
    return text

"""Keep secrets out of everything the exporter says.

Upstream 401 bodies echo the key (``Incorrect API key provided: sk-VKMIs*****wjh3``),
proxies echo headers, and exception texts can carry URLs with credentials. Every
piece of upstream text passes through ``redact`` before it reaches a log, a metric
or an HTTP answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"

# Key-shaped tokens: OpenAI keys (sk-..., sk-proj-..., sk-admin-...) including the
# masked echo upstream sends back, and bearer credentials in echoed headers.
_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-*…]{3,}"),
    re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9_\-.~+/=*]{8,}"),
    re.compile(r"(?i)\b(api[-_]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]{8,}"),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Replace every given secret and anything key-shaped in `text`."""
    for secret in secrets:
        # Short strings would mask innocent text and are not real keys.
        if secret and len(secret) >= 6:
            text = text.replace(secret, MASK)
    text = _PATTERNS[0].sub("sk-" + MASK, text)
    text = _PATTERNS[1].sub(lambda m: m.group(1) + MASK, text)
    return _PATTERNS[2].sub(lambda m: m.group(1) + MASK, text)

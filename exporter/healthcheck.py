"""Container health check: ``python -m exporter.healthcheck [exporter flags]``.

Asks the exporter's /healthz at the address its own settings give (LISTEN_ADDRESS, the
config file's listen_address, --web.listen-address: the same load() and precedence the
exporter uses), so the Dockerfile's HEALTHCHECK follows a changed port. Exit 0 on 200,
1 otherwise, with one line on stdout (Docker keeps it in `docker inspect`). The slim image
has no curl or wget; the interpreter is there already.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from .settings import ConfigError, load

TIMEOUT_SECONDS = 4.0  # under the HEALTHCHECK's --timeout=5s


def health_url(host: str, port: int) -> str:
    """The URL of /healthz for a listen address: a wildcard (0.0.0.0, ::) is asked on
    loopback, which it also serves."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/healthz"


def check(url: str) -> tuple[bool, str]:
    """(healthy, the one-line answer or failure)."""
    # No proxy: the exporter is on this host; HTTP(S)_PROXY in the container must not
    # catch the check.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT_SECONDS) as resp:
            return resp.status == 200, resp.read(1024).decode("utf-8", "replace").strip()
    except urllib.error.HTTPError as exc:  # 503: the reason is the body
        return False, f"{exc.code} {exc.read(1024).decode('utf-8', 'replace').strip()}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, str(getattr(reason, "strerror", None) or reason)


def main(argv: list[str] | None = None) -> int:
    """Check once; the exit code is the health check's verdict."""
    try:
        settings = load(argv)
    except ConfigError as exc:
        print(f"configuration: {exc}")
        return 1
    url = health_url(settings.listen_host, settings.listen_port)
    ok, text = check(url)
    print(f"{url}: {' '.join(text.split())}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

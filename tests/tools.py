"""System tools some tests need (promtool, prometheus, docker-compose, chromium).

On a laptop without them those tests skip with a reason; in CI (.ci/run sets
REQUIRE_TOOLS=1) a missing tool is a failure, so a green CI means they ran.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(*names: str) -> str:
    """Return the path of the first of `names` on PATH, else skip (or fail in CI)."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    msg = f"needs {' or '.join(names)} on PATH (Debian package; .ci/run installs it)"
    if os.environ.get("REQUIRE_TOOLS") == "1":
        pytest.fail(msg + " and REQUIRE_TOOLS=1")
    pytest.skip(msg)

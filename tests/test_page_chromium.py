"""The built-in page in a real browser: headless Chromium renders the table from /status,
works with no network beyond this origin, and opens behind WEB_AUTH_TOKEN."""

from __future__ import annotations

import json
import math
import random
import subprocess
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser

import pytest
from prometheus_client import CollectorRegistry

from exporter.history import MemoryHistory
from exporter.result import ProbeResult
from exporter.web import history_routes, make_app, serve
from tests.tools import require_tool

TOKEN = "page-token-5f1c2e"
XSS = '<img src=x onerror="document.body.dataset.pwned=1">'


def _fill(history: MemoryHistory) -> None:
    rng = random.Random(11)
    now = time.time()
    plans = [("openai", "chat", "gpt-4o-mini", 0.6, 1.0), ("openai", "embeddings",
             "text-embedding-3-small", 0.15, 0.97), ("openai", "models", "", 0.08, 1.0),
             ("azure", "chat", "gpt-4o", 0.9, 0.7),
             ("openai", "chat_stream", "gpt-4o-mini", 0.7, 0.99)]
    results = []
    for i in range(720):  # two hours, one probe per endpoint every 10 s
        for target, endpoint, model, mu, ok_rate in plans:
            ok = rng.random() < ok_rate
            ttft = rng.lognormvariate(0, 0.3) * mu / 2 if endpoint == "chat_stream" and ok \
                else None
            results.append(ProbeResult(
                target=target, region="eastus" if target == "azure" else "us-west-1",
                endpoint=endpoint, model=model, started_at=now - 7200 + i * 10,
                duration_seconds=rng.lognormvariate(0, 0.4) * mu, success=ok,
                error_type="none" if ok else "provider_unavailable",
                http_status=200 if ok else 503, error_message="" if ok else XSS,
                input_tokens=8 if model else 0, total_tokens=8 if model else 0,
                response_bytes=512, ttft_seconds=ttft))
    history.add_many(results)


@pytest.fixture(scope="module")
def chromium():
    return require_tool("chromium", "chromium-browser")


@pytest.fixture(scope="module")
def server():
    """Two apps on 127.0.0.1: one open, one behind a token, same history."""
    history = MemoryHistory()
    _fill(history)
    config = {"interval_seconds": 10, "mode": "all"}
    open_srv, _ = serve(make_app(CollectorRegistry(), history_routes(history, config)),
                        "127.0.0.1", 0)
    auth_srv, _ = serve(make_app(CollectorRegistry(), history_routes(history, config), TOKEN),
                        "127.0.0.1", 0)
    yield (f"http://127.0.0.1:{open_srv.server_port}",
           f"http://127.0.0.1:{auth_srv.server_port}")
    open_srv.shutdown()
    auth_srv.shutdown()
    history.close()


def dump_dom(chromium: str, url: str, tmp_path) -> str:
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=5000", "--dump-dom", url],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


class PageParser(HTMLParser):
    """Collects body attributes, overall tiles and the endpoint rows' cells."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.ids: dict[str, str] = {}
        self.rows: list[dict] = []
        self.images_in_rows = 0
        self._cell: str | None = None
        self._id: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if tag == "tr" and "data-endpoint" in a:
            self.rows.append({"attrs": a, "cells": {}, "cell_attrs": {}, "dot": None})
        if self.rows and tag == "td" and "data-col" in a:
            self._cell = a["data-col"]
            self.rows[-1]["cells"][self._cell] = ""
            self.rows[-1]["cell_attrs"][self._cell] = a
        if self.rows and tag == "span" and "dot" in (a.get("class") or ""):
            self.rows[-1]["dot"] = a["class"]
        if self.rows and tag == "img":
            self.images_in_rows += 1
        if a.get("id", "").startswith("ov-"):
            self._id = a["id"]
            self.ids[self._id] = ""

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None
        if tag == "div":
            self._id = None

    def handle_data(self, data):
        if self._cell:
            self.rows[-1]["cells"][self._cell] += data
        if self._id:
            self.ids[self._id] += data


def number(text: str) -> float:
    return float(text.replace("ms", "").replace("%", "").strip())


def check_ms(shown: str, value: float) -> None:
    # The page shows integers from 100 ms, one decimal from 10, two below.
    assert shown.endswith(" ms")
    assert abs(number(shown) - value) <= 0.5 + 1e-9, (shown, value)


def check_pct(shown: str, rate: float) -> None:
    if rate == 1:
        assert shown == "100 %"
    else:  # floored to 0.1 %, so 99.96 % never reads as 100
        assert number(shown) == math.floor(rate * 1000) / 10, (shown, rate)


def get_status(base: str, window: int) -> dict:
    with urllib.request.urlopen(f"{base}/status?window={window}", timeout=10) as resp:
        return json.load(resp)


def test_table_matches_status(chromium, server, tmp_path):
    base, _ = server
    parsed = PageParser()
    parsed.feed(dump_dom(chromium, base + "/#window=360", tmp_path))
    status = get_status(base, 360)

    assert parsed.body.get("data-state") == "ready", parsed.body
    assert parsed.body.get("data-window") == "360"
    assert "data-pwned" not in parsed.body and parsed.images_in_rows == 0  # text, not HTML
    want = {(r["target"], r["endpoint"]): r for r in status["endpoints"]}
    got = {(r["attrs"]["data-target"], r["attrs"]["data-endpoint"]): r for r in parsed.rows}
    assert set(got) == set(want) and len(parsed.rows) == len(want) == 5
    for key, row in want.items():
        cells = got[key]["cells"]
        assert cells["target"] == row["target"] and cells["endpoint"] == row["endpoint"]
        assert int(cells["count"]) == row["count"]
        check_pct(cells["success"], row["success_rate"])
        for q in ("p50", "p95", "p99"):
            check_ms(cells[q], row[f"{q}_ms"])
        # Time to first token: shown for the streaming endpoint, blank for the others.
        for q in ("p50", "p95"):
            if row["endpoint"] == "chat_stream":
                check_ms(cells[f"ttft-{q}"], row[f"ttft_{q}_ms"])
            else:
                assert f"ttft_{q}_ms" not in row and cells[f"ttft-{q}"] == ""
        assert got[key]["cell_attrs"]["last"]["data-at"] == row["last_at"]
        assert row["last_status"] in got[key]["dot"]
        level = ("ok" if row["success_rate"] >= 0.99 else
                 "warn" if row["success_rate"] >= 0.95 else "bad")
        assert got[key]["attrs"]["data-level"] == level
        failure = row["last_failure"]
        assert got[key]["cell_attrs"]["error"]["data-error-type"] == (
            failure["error_type"] if failure else "")
        if failure:
            assert XSS in cells["error"]  # shown as text
    levels = {k: r["attrs"]["data-level"] for k, r in got.items()}
    assert levels[("openai", "models")] == "ok" and levels[("azure", "chat")] == "bad"

    overall = status["overall"]
    assert int(parsed.ids["ov-count"]) == overall["count"]
    check_pct(parsed.ids["ov-success"], overall["success_rate"])
    check_ms(parsed.ids["ov-p95"], overall["p95_ms"])


def test_range_selector_and_chart(chromium, server, tmp_path):
    base, _ = server
    dom = dump_dom(chromium, base + "/#window=15", tmp_path)
    assert 'data-window="15"' in dom and 'data-state="ready"' in dom
    assert 'data-window="15" aria-pressed="true"' in dom
    # One chart series per endpoint row, drawn as inline SVG.
    assert dom.count('class="series"') == 5
    assert dom.count("<polyline") == 5


def test_page_behind_token(chromium, server, tmp_path):
    _, base = server
    # Without credentials the page itself is refused (headless Chromium cannot answer
    # the Basic prompt, so it renders nothing) ...
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(base + "/", timeout=10)
    assert refused.value.code == 401
    assert 'data-state="ready"' not in dump_dom(chromium, base + "/", tmp_path)
    # ... with the token as Basic password (what the browser prompt sends) it loads, and
    # its own /status request carries the same credentials.
    host = base.removeprefix("http://")
    dom = dump_dom(chromium, f"http://viewer:{TOKEN}@{host}/", tmp_path)
    assert 'data-state="ready"' in dom
    assert dom.count("data-endpoint=") >= 4

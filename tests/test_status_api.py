"""The routes over WSGI: the history's parameters, formats, pagination, errors and auth;
/metrics and /healthz beside them in the same table."""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import re
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from prometheus_client import CollectorRegistry, Counter

from exporter.history import History, MemoryHistory, TraceFilter
from exporter.settings import Settings, redacted
from exporter.web import history_routes, make_app
from tests.test_history import NOW, Clock, events, probe, status_doc, synthetic

CONFIG = {"interval_seconds": 60.0, "mode": "roundrobin",
          "targets": [{"name": "openai", "probes": ["chat", "models"]}]}
TOKEN = "tok-0123456789abcdef"


class Response:
    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.code = int(status.split()[0])
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        assert self.header("Content-Type") == "application/json"
        return json.loads(self.body)


def call(app, path: str, method: str = "GET", auth: str | None = None,
         headers: dict[str, str] | None = None) -> Response:
    path, _, query = path.partition("?")
    environ: dict[str, Any] = {"PATH_INFO": path, "QUERY_STRING": query,
                               "REQUEST_METHOD": method}
    if auth:
        environ["HTTP_AUTHORIZATION"] = auth
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    setup_testing_defaults(environ)
    seen: dict[str, Any] = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = status, headers

    body = b"".join(app(environ, start_response))
    resp = Response(seen["status"], seen["headers"], body)
    length = resp.header("Content-Length")
    assert length is None or length == str(len(body)) or method == "HEAD"
    return resp


def registry() -> CollectorRegistry:
    """A registry with one sample, so /metrics has a body."""
    reg = CollectorRegistry()
    Counter("probe_things", "Things.", registry=reg).inc()
    return reg


def make(history: History, token: str = "", config: dict | None = None):
    """The exporter's app (the same table __main__ serves) over this history."""
    return make_app(registry(), history_routes(history, CONFIG if config is None else config),
                    token)


@pytest.fixture
def history():
    store = MemoryHistory(clock=Clock())
    store.add_many(synthetic(1500))
    yield store
    store.close()


@pytest.fixture
def app(history):
    return make(history)


def test_status_default_window_and_config(app, history):
    resp = call(app, "/status")
    assert resp.code == 200 and resp.header("Cache-Control") == "no-store"
    doc = resp.json()
    assert doc["window_minutes"] == 60
    assert doc["config"] == CONFIG
    expected = status_doc(history, 60)
    expected["config"] = CONFIG
    assert doc == json.loads(json.dumps(expected))
    assert {"overall", "endpoints", "store"} <= set(doc)
    row = doc["endpoints"][0]
    for key in ("count", "successes", "success_rate", "p50_ms", "p95_ms", "p99_ms",
                "last_status", "last_error_type", "last_error_message", "last_at",
                "tokens", "response_bytes"):
        assert key in row
    assert 0 <= row["success_rate"] <= 1
    series = call(app, "/status?window=1440&series=1").json()
    assert len(series["endpoints"][0]["series"]["points"]) in (96, 97)


@pytest.mark.parametrize("query,needle", [
    ("window=0", "window"), ("window=1441", "window"), ("window=abc", "window"),
    ("window=1.5", "window"), ("window=", "window"), ("window=-5", "window"),
    ("window=60&window=15", "twice"), ("windw=60", "unknown parameter"),
    ("series=maybe", "series"),
])
def test_status_bad_parameters_are_400_json(app, query, needle):
    resp = call(app, "/status?" + query)
    assert resp.code == 400
    assert needle in resp.json()["error"]


def test_traces_json_and_pagination(app, history):
    first = call(app, "/traces?endpoint=chat&limit=100")
    doc = first.json()
    assert doc["count"] == 100 and doc["next_cursor"]
    assert first.header("X-Next-Cursor") == doc["next_cursor"]
    assert first.header("Link").startswith("<traces?endpoint=chat&limit=100&cursor=")
    ids = [e["id"] for e in doc["events"]]
    history.add(probe(NOW, endpoint="chat"))  # a new probe between pages
    cursor = doc["next_cursor"]
    while cursor:
        page = call(app, f"/traces?endpoint=chat&limit=100&cursor={cursor}").json()
        ids += [e["id"] for e in page["events"]]
        cursor = page["next_cursor"]
    everything = history.traces(TraceFilter(endpoint="chat"), limit=1000)
    rest = history.traces(TraceFilter(endpoint="chat"), limit=1000, cursor=everything.next_cursor)
    want = [e["id"] for e in events(everything) + events(rest)]
    assert len(want) > 1000 and rest.next_cursor is None
    assert ids == want[1:]  # all of them, once, minus the one added after page 1
    assert call(app, "/traces?endpoint=models&limit=100&cursor=" + doc["next_cursor"]).code == 400


def test_traces_csv_and_ndjson_match_json(app):
    query = "/traces?status=error&limit=50"
    events = call(app, query).json()["events"]
    nd = call(app, query + "&format=ndjson")
    assert nd.header("Content-Type") == "application/x-ndjson"
    assert re.fullmatch(r'attachment; filename="traces-\d{8}T\d{6}Z\.ndjson"',
                        nd.header("Content-Disposition"))
    assert [json.loads(line) for line in nd.body.decode().splitlines()] == events
    c = call(app, query + "&format=csv")
    assert c.header("Content-Type").startswith("text/csv")
    assert c.header("Content-Disposition").endswith('.csv"')
    rows = list(csv.DictReader(io.StringIO(c.body.decode())))
    assert [int(r["id"]) for r in rows] == [e["id"] for e in events]
    assert [r["error_message"] for r in rows] == [e["error_message"] for e in events]
    assert rows[0]["status"] == "error" and rows[0]["http_status"] == "429"
    empty = call(app, "/traces?target=nobody&format=csv")
    assert empty.code == 200 and empty.body.decode().startswith("id,time,ts,target")


def test_csv_neutralises_formulas(history):
    history.add(probe(NOW, error_type="bad_request", message="=HYPERLINK(\"http://x\")",
                      http_status=400))
    app = make(history)
    body = call(app, "/traces?limit=1&format=csv").body.decode()
    assert "'=HYPERLINK" in body
    assert call(app, "/traces?limit=1").json()["events"][0]["error_message"].startswith("=")


def test_traces_time_filters(app, history):
    since, until = NOW - 3600, NOW - 1800
    by_unix = call(app, f"/traces?since={since:.0f}&until={until:.0f}&limit=1000").json()
    iso = call(app, "/traces?since=2027-01-15T07:00:30Z&until=2027-01-15T08:30:30%2B01:00"
                    "&limit=1000").json()
    want = events(history.traces(TraceFilter(since=since, until=until), limit=1000))
    assert by_unix["events"] == iso["events"] == want and want
    assert all(since <= e["ts"] < until for e in want)


@pytest.mark.parametrize("query,needle", [
    ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=ten", "limit"),
    ("format=xml", "format"), ("status=ok", "status"), ("error_type=teapot", "error_type"),
    ("since=yesterday", "since"), ("since=2026-01-01", "since"),
    ("since=2026-01-01T00:00:00", "offset"), ("until=2026-02-30T00:00:00Z", "until"),
    ("since=2000&until=1000", "since"), ("cursor=bogus", "cursor"), ("foo=1", "unknown"),
])
def test_traces_bad_parameters_are_400_json(app, query, needle):
    resp = call(app, "/traces?" + query)
    assert resp.code == 400, resp.body
    assert needle in resp.json()["error"]


def test_latency_histogram_route(app, history):
    doc = call(app, "/latency_histogram?endpoint=chat&window=60").json()
    status = status_doc(history, 60)
    chat = sum(r["count"] for r in status["endpoints"] if r["endpoint"] == "chat")
    assert doc["count"] == chat and sum(b["count"] for b in doc["buckets"]) == chat
    assert [b["le"] for b in doc["buckets"]][:3] == ["0.05", "0.1", "0.25"]
    everything = call(app, "/latency_histogram").json()
    assert everything["endpoint"] is None and everything["count"] == status["overall"]["count"]
    assert call(app, "/latency_histogram?window=0").code == 400
    assert call(app, "/latency_histogram?endpoint=chat&bins=5").code == 400


def test_page_is_self_contained(app):
    resp = call(app, "/")
    assert resp.code == 200 and resp.header("Content-Type") == "text/html; charset=utf-8"
    csp = resp.header("Content-Security-Policy")
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    html = resp.body.decode()
    # Nothing fetched from elsewhere: no absolute URL in src/href/url()/import. (The SVG
    # namespace string is an identifier, not a request.)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "url(" not in html and "@import" not in html
    assert set(re.findall(r"https?://[^\s\"']+", html)) <= {"http://www.w3.org/2000/svg"}
    assert call(app, "/?anything=1").code == 200


def test_unknown_path_method_and_head(app):
    resp = call(app, "/nope")
    assert resp.code == 404 and "error" in resp.json()
    post = call(app, "/status", method="POST")
    assert post.code == 405 and post.header("Allow") == "GET, HEAD"
    assert "error" in post.json()
    head = call(app, "/status", method="HEAD")
    assert head.code == 200 and head.body == b"" and int(head.header("Content-Length")) > 0


def test_internal_errors_are_500_without_traceback(history, caplog):
    class Broken(MemoryHistory):
        def status(self, *a, **kw):
            raise RuntimeError("secret internals at /srv/x.py line 3")

    app = make(Broken(clock=Clock()))
    resp = call(app, "/status")
    assert resp.code == 500 and resp.json() == {"error": "internal error"}
    assert b"Traceback" not in resp.body and b"secret" not in resp.body
    assert "secret internals" in caplog.text  # the log keeps the details


@pytest.mark.parametrize("path", ["/", "/status", "/traces", "/latency_histogram", "/nope"])
def test_token_protects_every_history_route(history, path):
    app = make(history, TOKEN)
    for auth in (None, "Bearer wrong", f"Bearer {TOKEN}x", "Token " + TOKEN,
                 "Basic " + base64.b64encode(b"u:wrong").decode(), "Basic !!!"):
        resp = call(app, path, auth=auth)
        assert resp.code == 401, auth
        assert resp.json()["error"].startswith("missing or wrong credentials")
        assert TOKEN not in resp.body.decode()
        challenges = resp.all("WWW-Authenticate")
        assert any(c.startswith("Bearer") for c in challenges)
        assert any(c.startswith("Basic") for c in challenges)
    want = 404 if path == "/nope" else 200
    assert call(app, path, auth=f"Bearer {TOKEN}").code == want
    basic = "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    assert call(app, path, auth=basic).code == want


def test_metrics_and_healthz_stay_open_with_a_token(history):
    app = make(history, TOKEN)
    assert call(app, "/metrics").code == 200
    assert call(app, "/healthz").code == 200
    assert call(app, "/status").code == 401


def test_status_config_never_shows_the_token(history):
    settings = Settings(targets=(), web_auth_token=TOKEN)
    app = make(history, settings.web_auth_token, redacted(settings))
    body = call(app, "/status", auth=f"Bearer {TOKEN}").body.decode()
    assert TOKEN not in body and TOKEN[:8] not in body
    assert json.loads(body)["config"]["web_auth_token"] == "***"


GET_ROUTES = ("/", "/status", "/traces", "/latency_histogram", "/metrics", "/healthz",
              "/-/healthy")


@pytest.mark.parametrize("path", GET_ROUTES)
def test_head_answers_every_get_route_with_its_status_and_headers_and_no_body(app, path):
    get = call(app, path)
    head = call(app, path, method="HEAD")
    assert get.code == head.code == 200 and get.body
    assert head.headers == get.headers and head.body == b""
    assert head.header("Content-Length") == str(len(get.body))


@pytest.mark.parametrize("path", GET_ROUTES)
def test_every_route_answers_other_methods_405_json_with_allow(app, path):
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        resp = call(app, path, method=method)
        assert resp.code == 405 and resp.header("Allow") == "GET, HEAD", (path, method)
        assert resp.json() == {"error": "method not allowed; use GET"}


@pytest.mark.parametrize("path", GET_ROUTES + ("/nope",))
def test_every_answer_carries_the_security_headers(app, path):
    resp = call(app, path)
    assert resp.header("X-Content-Type-Options") == "nosniff"
    assert resp.header("Referrer-Policy") == "no-referrer"
    assert resp.header("Cache-Control") == "no-store"


def test_metrics_keeps_the_librarys_content_negotiation(app):
    plain = call(app, "/metrics")
    assert plain.header("Content-Type").startswith("text/plain")
    assert b"probe_things_total 1.0" in plain.body
    om = call(app, "/metrics", headers={"Accept": "application/openmetrics-text"})
    assert om.header("Content-Type").startswith("application/openmetrics-text")
    assert om.body.endswith(b"# EOF\n")
    gz = call(app, "/metrics", headers={"Accept-Encoding": "gzip"})
    assert gz.header("Content-Encoding") == "gzip" and gzip.decompress(gz.body) == plain.body
    only = call(app, "/metrics?name[]=probe_things_total")
    assert b"probe_things_total" in only.body and b"python_info" not in only.body
    head = call(app, "/metrics", method="HEAD", headers={"Accept-Encoding": "gzip"})
    assert head.code == 200 and head.body == b"" and head.header("Content-Encoding") == "gzip"

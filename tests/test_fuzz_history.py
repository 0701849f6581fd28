"""No 5xx from the history routes, whatever the query: forged cursors, absurd numbers and
times, junk and unknown parameters; every error is JSON ``{"error": "<one line>"}``.

Cases tried (issue 10, item 4), so the next audit can re-run them: the issue's forged
cursor (id field ``\\xff`` x 8, epoch and filters valid) and 7 more forged id values on
each backend; then hypothesis, derandomized (the same examples on every run), over `/`,
`/status`, `/traces` with every parameter and `/latency_histogram`, GET and HEAD, on the
memory and the SQLite store: FUZZ_EXAMPLES queries per backend. The queries mix integers
up to 2**70 either sign, floats with NaN and infinities, RFC 3339-shaped times with
out-of-range fields, cursors carrying this store's epoch and the query's filter digest with
any 64-bit id (and truncated or bit-flipped ones), arbitrary Unicode, percent-encoded
bytes, raw junk query strings and unknown or repeated parameters.

Why hypothesis (a test dependency): it biases generation towards the edges that break
parsers (0, -1, 2**63, empty strings, the limits of each strategy), shrinks a failure to
the smallest query that still fails and prints it, and `derandomize` keeps the run
reproducible without a seed to carry around; a hand-written random loop would have to
re-invent all three.
"""

from __future__ import annotations

import base64
import json
import struct
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.history import MemoryHistory, SQLiteHistory, TraceFilter
from tests.test_history import Clock, synthetic
from tests.test_status_api import call, make

FUZZ_EXAMPLES = 400
TRACE_PARAMS = ("target", "endpoint", "model", "status", "error_type", "since", "until",
                "limit", "cursor", "format")
ROUTES = {
    "/": (),
    "/status": ("window", "series"),
    "/traces": TRACE_PARAMS,
    "/latency_histogram": ("endpoint", "target", "window"),
}
FILTERS = ("target", "endpoint", "model", "status", "error_type")


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def store(request, tmp_path_factory):
    clock = Clock()
    if request.param == "memory":
        history = MemoryHistory(clock=clock)
    else:
        history = SQLiteHistory(str(tmp_path_factory.mktemp("fuzz") / "h.db"), clock=clock)
    history.add_many(synthetic(300))
    yield history
    history.close()


def assert_answer_is_sane(resp, method: str = "GET") -> None:
    assert resp.code < 500, (resp.code, resp.body[:300])
    if resp.code >= 400:
        assert resp.header("Content-Type") == "application/json", resp.headers
        if method == "HEAD":  # the GET's headers, no body
            assert resp.body == b""
            return
        doc = json.loads(resp.body)
        assert set(doc) == {"error"} and isinstance(doc["error"], str), doc
        assert doc["error"] and "\n" not in doc["error"], doc


# -- the forged cursor, spelled out --------------------------------------------------

def forged(store, last_id: bytes, filters: TraceFilter | None = None) -> str:
    """A cursor with this store's epoch and the filters' digest, and any 8-byte id."""
    raw = last_id + store.epoch + (filters or TraceFilter()).digest()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("last_id", [
    b"\xff" * 8, struct.pack("<Q", 2**63), struct.pack("<Q", 2**63 - 1), b"\x00" * 8,
    struct.pack("<Q", 2**64 - 2), struct.pack("<Q", 10**12), b"\x80" + b"\x00" * 7,
    b"\x00" * 7 + b"\x80",
], ids=lambda b: b.hex())
def test_forged_cursor_ids_are_400_not_500(store, last_id):
    app = make(store)
    resp = call(app, "/traces?cursor=" + forged(store, last_id))
    assert_answer_is_sane(resp)
    (value,) = struct.unpack("<Q", last_id)
    if not 1 <= value < 2**63:
        assert resp.code == 400 and resp.json() == {"error": "cursor is not valid"}


def test_a_real_cursor_still_pages(store):
    app = make(store)
    first = call(app, "/traces?limit=5").json()
    second = call(app, "/traces?limit=5&cursor=" + first["next_cursor"]).json()
    assert second["events"][0]["id"] < first["events"][-1]["id"]


# -- hypothesis over every route and parameter ------------------------------------------------

_texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
_values = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}"
                  r"(\.[0-9]{1,12})?([Zz]|[+-][0-9]{2}:[0-9]{2})\Z"),
    st.from_regex(r"\A[0-9]{1,14}(\.[0-9]{0,12})?\Z"),
    st.sampled_from(["", "0", "1", "-1", "true", "json", "csv", "ndjson", "chat", "openai",
                     "error", "success", "timeout", "none", "1440", "1441", "1000", "1001"]),
    _texts,
)


@st.composite
def _cursor(draw, store, filters: TraceFilter) -> str:
    last_id = draw(st.one_of(
        st.integers(0, 2**64 - 1).map(lambda i: struct.pack("<Q", i)),
        st.sampled_from([0, 1, 2**31, 2**63 - 1, 2**63, 2**64 - 1]).map(
            lambda i: struct.pack("<Q", i)),
        st.binary(min_size=8, max_size=8)))
    cursor = forged(store, last_id, filters)
    how = draw(st.sampled_from(["as is"] * 3 + ["truncated", "flipped", "padded"]))
    if how == "truncated":
        cursor = cursor[:draw(st.integers(0, len(cursor)))]
    elif how == "flipped":
        i = draw(st.integers(0, len(cursor) - 1))
        cursor = cursor[:i] + draw(st.sampled_from("A_-/+=!")) + cursor[i + 1:]
    elif how == "padded":
        cursor += draw(st.sampled_from(["=", "==", "A", "AAAA"]))
    return cursor


def _encode(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


@st.composite
def requests_for(draw, store):
    """(method, path?query) for one route, mostly with its own parameters."""
    path = draw(st.sampled_from(sorted(ROUTES) + ["/traces"]))
    names = ROUTES[path] or ("window",)
    pairs = draw(st.lists(st.tuples(st.sampled_from(names), _values), max_size=5,
                          unique_by=lambda kv: kv[0]))
    forge = path == "/traces" and draw(st.booleans())
    if forge:
        # A cursor that passes the epoch and filter checks: only its id is forged. The
        # filters are ones the route accepts, so the cursor is what gets checked.
        pairs = [(k, v) for k, v in pairs if k in ("target", "endpoint", "model")]
        pairs.append(("cursor", draw(_cursor(store, TraceFilter(
            **{k: v or None for k, v in pairs})))))
    query = _encode(pairs)
    extra = draw(st.sampled_from(["none"] * (6 if forge else 1)
                                 + ["unknown", "junk", "repeat"]))
    if extra == "unknown":
        query += "&" + _encode([(draw(_texts), draw(_values))])
    elif extra == "junk":
        query = draw(st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60))
    elif extra == "repeat" and pairs:
        query += "&" + _encode(pairs[:1])
    method = draw(st.sampled_from(["GET", "GET", "HEAD"]))
    return method, f"{path}?{query}" if query else path


def test_fuzz_history_routes_never_answer_5xx(store):
    app = make(store)

    @settings(max_examples=FUZZ_EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def check(data):
        method, path = data.draw(requests_for(store))
        assert_answer_is_sane(call(app, path, method=method), method)

    check()

"""The official openai SDK reads every answer of the fake upstream (a house rule).

Each test talks to a real FakeUpstream on 127.0.0.1 through the SDK with max_retries=0
and a short timeout. The SDK is strict where it can be (``_strict_response_validation``
validates each body against the SDK's typed models), so a missing required field or a
wrong type in the fake fails here. Where the SDK cannot read what the fake sends, the
fake is wrong, not the test.
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types import (
    Batch,
    CreateEmbeddingResponse,
    FileObject,
    ImagesResponse,
    Model,
    ModerationCreateResponse,
)
from openai.types.beta import Assistant
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam
from openai.types.fine_tuning import FineTuningJob
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseTextDeltaEvent,
)

from exporter.fake import ENDPOINTS, MODELS, FakeUpstream
from exporter.fake.tables import LISTS

KEY = "sk-proj-SDKreader000000000000wxyz"
TIMEOUT = 5.0
REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")
PING: list[ChatCompletionMessageParam] = [{"role": "user", "content": "ping"}]
AZURE_VERSION = "2024-10-21"


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key=KEY) as server:
        yield server


def sdk(fake: FakeUpstream, *, strict: bool = True, key: str = KEY,
        timeout: float = TIMEOUT) -> openai.OpenAI:
    """An SDK client on the fake that never retries (one request = one answer)."""
    return openai.OpenAI(api_key=key, base_url=fake.base_url, max_retries=0, timeout=timeout,
                         _strict_response_validation=strict)


def azure(fake: FakeUpstream, *, key: str = KEY) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint=fake.root_url, api_version=AZURE_VERSION,
                              api_key=key, max_retries=0, timeout=TIMEOUT,
                              _strict_response_validation=True)


@pytest.fixture
def client(fake: FakeUpstream) -> Iterator[openai.OpenAI]:
    with sdk(fake) as c:
        yield c


def chat(c: openai.OpenAI, model: str = "gpt-4o-mini") -> ChatCompletion:
    return c.chat.completions.create(model=model, messages=PING, max_completion_tokens=16)


def float32(b64: str) -> list[float]:
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


# ------------------------------------------------------------------ typed answers


def test_chat_completion(client: openai.OpenAI, fake: FakeUpstream) -> None:
    resp = chat(client)
    assert isinstance(resp, ChatCompletion)
    assert resp.id.startswith("chatcmpl-") and resp.object == "chat.completion"
    assert resp.model == "gpt-4o-mini-2024-07-18" and resp.created > 0
    choice = resp.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert choice.message.content
    usage = resp.usage
    assert usage is not None
    assert usage.prompt_tokens + usage.completion_tokens == usage.total_tokens > 0
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0
    assert REQUEST_ID.match(resp._request_id or "")
    assert fake.requests[-1]["json"]["max_completion_tokens"] == 16


def test_responses_create(client: openai.OpenAI, fake: FakeUpstream) -> None:
    resp = client.responses.create(model="gpt-4o-mini", input="ping", store=False,
                                   max_output_tokens=16)
    assert isinstance(resp, Response)
    assert resp.id.startswith("resp_") and resp.object == "response"
    assert resp.status == "completed" and resp.error is None
    assert resp.output_text == "Pong! How can I help you today?"
    usage = resp.usage
    assert usage is not None
    assert usage.input_tokens + usage.output_tokens == usage.total_tokens > 0
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert fake.requests[-1]["json"]["store"] is False


def test_responses_on_a_reasoning_model_end_incomplete(client: openai.OpenAI) -> None:
    resp = client.responses.create(model="gpt-5-mini", input="ping", store=False,
                                   max_output_tokens=16)
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"
    assert resp.output[0].type == "reasoning"
    assert resp.usage is not None and resp.usage.output_tokens_details.reasoning_tokens == 16


def test_embeddings_float(client: openai.OpenAI) -> None:
    resp = client.embeddings.create(model="text-embedding-3-small", input=["ping", "pong"],
                                    encoding_format="float")
    assert isinstance(resp, CreateEmbeddingResponse)
    assert resp.object == "list" and resp.model == "text-embedding-3-small"
    assert [e.index for e in resp.data] == [0, 1]
    assert all(len(e.embedding) == 1536 for e in resp.data)
    assert resp.usage.prompt_tokens == resp.usage.total_tokens > 0


def test_embeddings_base64(fake: FakeUpstream) -> None:
    # Strict validation types `embedding` as a list of floats, which a base64 answer
    # (the real API's too) is not: read these with the SDK's default, lenient parsing.
    with sdk(fake) as strict, sdk(fake, strict=False) as c:
        floats = strict.embeddings.create(model="text-embedding-3-small", input="ping",
                                          encoding_format="float").data[0].embedding
        explicit = c.embeddings.create(model="text-embedding-3-small", input="ping",
                                       encoding_format="base64").data[0].embedding
        assert isinstance(explicit, str)  # asked for base64: the SDK hands it over as is
        assert float32(explicit) == pytest.approx(floats, abs=1e-7)
        # Without encoding_format the SDK asks for base64 itself and decodes it.
        decoded = c.embeddings.create(model="text-embedding-3-small", input="ping")
        assert fake.requests[-1]["json"]["encoding_format"] == "base64"
        assert decoded.data[0].embedding == pytest.approx(floats, abs=1e-7)


def test_moderations(client: openai.OpenAI) -> None:
    resp = client.moderations.create(input=["ping", "pong"])
    assert isinstance(resp, ModerationCreateResponse)
    assert resp.id.startswith("modr-") and resp.model == "omni-moderation-2024-09-26"
    assert len(resp.results) == 2
    first = resp.results[0]
    assert first.flagged is False and first.categories.harassment_threatening is False
    assert 0 <= first.category_scores.violence < 1
    assert first.category_applied_input_types.self_harm_intent == ["text"]


def test_models_list(client: openai.OpenAI) -> None:
    models = list(client.models.list())
    assert all(isinstance(m, Model) and m.object == "model" for m in models)
    assert [m.id for m in models] == list(MODELS)
    # A typed field in newer SDKs, an extra attribute in older ones.
    shutdown = {m.id: getattr(m, "shutdown_date", "missing") for m in models}
    assert shutdown["gpt-image-1-mini"] == "2026-12-01" and shutdown["gpt-4o-mini"] is None


def test_images_dall_e_2_urls(client: openai.OpenAI) -> None:
    resp = client.images.generate(model="dall-e-2", prompt="a dot", n=2)
    assert isinstance(resp, ImagesResponse) and resp.created > 0
    assert resp.data is not None and len(resp.data) == 2
    assert all(i.url and not i.b64_json for i in resp.data)
    assert resp.usage is None  # dall-e models report no usage


def test_images_gpt_image_base64_and_usage(client: openai.OpenAI) -> None:
    resp = client.images.generate(model="gpt-image-1-mini", prompt="a dot", quality="low",
                                  size="1024x1024")
    assert resp.data is not None and resp.data[0].b64_json
    assert base64.b64decode(resp.data[0].b64_json).startswith(b"\x89PNG")
    assert (resp.quality, resp.size, resp.output_format) == ("low", "1024x1024", "png")
    usage = resp.usage
    assert usage is not None
    assert usage.input_tokens + usage.output_tokens == usage.total_tokens
    assert usage.output_tokens == 272
    assert usage.input_tokens_details.text_tokens == usage.input_tokens


# ----------------------------------------------------------------------- paging


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the Assistants API is sunset
@pytest.mark.parametrize("endpoint, lister, item_type", [
    ("files", lambda c: c.files.list(limit=1), FileObject),
    ("fine_tunes", lambda c: c.fine_tuning.jobs.list(limit=1), FineTuningJob),
    ("batches", lambda c: c.batches.list(limit=1), Batch),
    ("assistants", lambda c: c.beta.assistants.list(limit=1), Assistant),
])
def test_lists_auto_paginate_through_every_item(client: openai.OpenAI, fake: FakeUpstream,
                                                endpoint: str, lister: Any,
                                                item_type: type) -> None:
    expected = [item["id"] for item in LISTS[endpoint][0]]
    items = list(lister(client))
    assert all(isinstance(i, item_type) for i in items)
    assert [i.id for i in items] == expected and len(expected) >= 2
    calls = fake.requests
    assert {(r["method"], r["path"]) for r in calls} == {ENDPOINTS[endpoint]}
    # One page per item, each after the last id of the page before; has_more ends it.
    assert [r["query"].get("after") for r in calls] == [None, *expected[:-1]]
    assert all(r["query"]["limit"] == "1" for r in calls)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_assistants_list_sends_the_beta_header(client: openai.OpenAI, fake: FakeUpstream) -> None:
    page = client.beta.assistants.list(limit=3)
    assert [a.object for a in page.data] == ["assistant"] * 3
    assert fake.requests[-1]["headers"]["openai-beta"] == "assistants=v2"


# ----------------------------------------------------------------------- errors

# fault -> (SDK exception, HTTP status, error.type, error.code) the SDK reads off the body
STATUS_FAULTS: dict[str, tuple[type[openai.APIStatusError], int, Any, Any]] = {
    "bad_request": (openai.BadRequestError, 400, "invalid_request_error",
                    "unsupported_parameter"),
    "unauthorized": (openai.AuthenticationError, 401, "invalid_request_error",
                     "invalid_api_key"),
    "forbidden": (openai.PermissionDeniedError, 403, "request_forbidden",
                  "unsupported_country_region_territory"),
    "not_found": (openai.NotFoundError, 404, "invalid_request_error", "model_not_found"),
    "rate_limited": (openai.RateLimitError, 429, "requests", "rate_limit_exceeded"),
    "rate_limited_tokens": (openai.RateLimitError, 429, "tokens", "rate_limit_exceeded"),
    "quota": (openai.RateLimitError, 429, "insufficient_quota", "insufficient_quota"),
    "quota_legacy": (openai.RateLimitError, 429, "insufficient_quota", None),
    "billing": (openai.RateLimitError, 429, "insufficient_quota", "credit_balance_exhausted"),
    "server_error": (openai.InternalServerError, 500, "server_error", None),
    # Cloudflare's integer code: SDK 2.x hands it over as is, 3.x as a string.
    "bad_gateway_json": (openai.InternalServerError, 502, "cf_bad_gateway", "502"),
    "overloaded": (openai.InternalServerError, 503, "service_unavailable_error",
                   "server_is_overloaded"),
    # Proxy pages: no JSON envelope, so nothing to read but the status and the text.
    "bad_gateway_html": (openai.InternalServerError, 502, None, None),
    "gateway_timeout": (openai.InternalServerError, 504, None, None),
}


@pytest.mark.parametrize("fault", STATUS_FAULTS)
def test_status_faults_raise_the_sdk_exception(client: openai.OpenAI, fake: FakeUpstream,
                                               fault: str) -> None:
    exc_type, status, type_, code = STATUS_FAULTS[fault]
    fake.set_fault("chat", fault)
    with pytest.raises(exc_type) as caught:
        chat(client)
    err = caught.value
    assert err.status_code == status
    assert (err.type, None if err.code is None else str(err.code)) == (type_, code)
    assert err.request_id == err.response.headers["x-request-id"]
    assert REQUEST_ID.match(err.request_id or "")
    if type_ is None:  # an HTML page: the SDK keeps the text as the body
        assert isinstance(err.body, str) and str(status) in err.body
    else:
        assert isinstance(err.body, dict) and err.body["message"] in err.message
    assert len(fake.requests) == 1  # max_retries=0: one request, one answer


@pytest.mark.parametrize("call, exc_type, param, code", [
    (lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=[]),
     openai.BadRequestError, "messages", "empty_array"),
    (lambda c: c.responses.create(model="gpt-4o-mini", input="ping", max_output_tokens=1),
     openai.BadRequestError, "max_output_tokens", "integer_below_min_value"),
    (lambda c: c.chat.completions.create(model="gpt-nope", messages=PING),
     openai.NotFoundError, None, "model_not_found"),
    (lambda c: c.models.retrieve("gpt-4o-mini"),  # a route the fake does not have
     openai.NotFoundError, None, None),
])
def test_rejected_requests_raise_with_param_and_code(client: openai.OpenAI, call: Any,
                                                     exc_type: type[openai.APIStatusError],
                                                     param: str | None,
                                                     code: str | None) -> None:
    with pytest.raises(exc_type) as caught:
        call(client)
    assert (caught.value.type, caught.value.param, caught.value.code) == (
        "invalid_request_error", param, code)


def test_rate_limit_errors_carry_retry_after_and_quota_does_not(client: openai.OpenAI,
                                                                fake: FakeUpstream) -> None:
    fake.set_fault("chat", "rate_limited", count=1)
    with pytest.raises(openai.RateLimitError) as limited:
        chat(client)
    assert limited.value.response.headers["retry-after"] == "20"
    assert limited.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    fake.set_fault("chat", "quota", count=1)
    with pytest.raises(openai.RateLimitError) as quota:
        chat(client)
    assert "retry-after" not in quota.value.response.headers


def test_a_spent_request_limit_is_a_rate_limit_error() -> None:
    with FakeUpstream(api_key=KEY, rpm_limit=1) as fake, sdk(fake) as c:
        chat(c)
        with pytest.raises(openai.RateLimitError) as caught:
            chat(c)
    assert (caught.value.type, caught.value.code) == ("requests", "rate_limit_exceeded")
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_a_wrong_key_is_an_authentication_error_that_masks_it(fake: FakeUpstream) -> None:
    wrong = "sk-proj-WRONGwrongWRONGwrong0000abcd"
    with sdk(fake, key=wrong) as c, pytest.raises(openai.AuthenticationError) as caught:
        c.models.list()
    assert caught.value.code == "invalid_api_key"
    assert "sk-proj-*****abcd" in caught.value.message
    assert wrong not in str(caught.value) and wrong not in caught.value.response.text


def test_html_200_is_a_response_validation_error(client: openai.OpenAI,
                                                 fake: FakeUpstream) -> None:
    fake.set_fault("chat", "html_200")
    with pytest.raises(openai.APIResponseValidationError, match="text/html"):
        chat(client)


@pytest.mark.parametrize("fault", ["malformed", "empty_body"])
def test_unparseable_json_raises_json_decode_error(client: openai.OpenAI, fake: FakeUpstream,
                                                   fault: str) -> None:
    # The SDK lets the JSON error through as is: it is not an openai.APIError.
    fake.set_fault("chat", fault)
    with pytest.raises(ValueError) as caught:
        chat(client)
    assert type(caught.value).__name__ == "JSONDecodeError"
    assert not isinstance(caught.value, openai.OpenAIError)


def test_wrong_shape_fails_strict_validation(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.set_fault("embeddings", "wrong_shape")  # data is an object, not a list
    with pytest.raises(openai.APIResponseValidationError):
        client.embeddings.create(model="text-embedding-3-small", input="ping",
                                 encoding_format="float")
    # A chat completion without usage and with no choices fits the SDK's types (usage
    # is optional there): only the exporter's own checks call it invalid.
    fake.set_fault("chat", "wrong_shape")
    resp = chat(client)
    assert resp.choices == [] and resp.usage is None


def test_in_body_failures_parse(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.set_fault("responses", "response_failed", count=1)
    failed = client.responses.create(model="gpt-4o-mini", input="ping", store=False,
                                     max_output_tokens=16)
    assert failed.status == "failed" and failed.usage is None
    assert failed.error is not None and failed.error.code == "server_error"
    fake.set_fault("responses", "response_incomplete", count=1)
    cut = client.responses.create(model="gpt-4o-mini", input="ping", store=False,
                                  max_output_tokens=16)
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    fake.set_fault("chat", "response_incomplete", count=1)
    assert chat(client).choices[0].finish_reason == "length"


@pytest.mark.parametrize("fault, delay_ms, exc_type", [
    ("reset", None, openai.APIConnectionError),
    ("reset_mid_body", None, openai.APIConnectionError),
    ("hang", None, openai.APITimeoutError),
    ("slow_body", None, openai.APITimeoutError),  # headers, a few bytes, then nothing
])
def test_transport_faults_raise_connection_errors(fake: FakeUpstream, fault: str,
                                                  delay_ms: float | None,
                                                  exc_type: type[Exception]) -> None:
    fake.set_fault("chat", fault, delay_ms=delay_ms)
    with sdk(fake, timeout=0.5) as c, pytest.raises(exc_type) as caught:
        chat(c)
    if exc_type is openai.APIConnectionError:  # not a timeout in disguise
        assert not isinstance(caught.value, openai.APITimeoutError)


@pytest.mark.parametrize("fault, delay_ms", [("delay", 50), ("trickle_body", 1)])
def test_slow_but_whole_answers_parse(client: openai.OpenAI, fake: FakeUpstream, fault: str,
                                      delay_ms: float) -> None:
    fake.set_fault("chat", fault, delay_ms=delay_ms)
    assert chat(client).usage is not None


# ---------------------------------------------------------------------- headers


def test_rate_limit_headers_through_with_raw_response(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=PING,
                                                           max_completion_tokens=16)
    headers = raw.headers
    assert headers["x-ratelimit-limit-requests"] == "500"
    assert headers["x-ratelimit-remaining-requests"] == "499"
    assert headers["x-ratelimit-reset-requests"] == "1m0s"  # the request opened the window
    spent = raw.parse().usage
    assert spent is not None
    assert int(headers["x-ratelimit-remaining-tokens"]) == 200000 - spent.total_tokens
    assert headers["openai-processing-ms"].isdigit()
    assert REQUEST_ID.match(headers["x-request-id"])


# ------------------------------------------------------------------------ azure


def test_azure_chat_embeddings_and_models(fake: FakeUpstream) -> None:
    with azure(fake) as c:
        resp = c.chat.completions.create(model="gpt-4o", messages=PING)
        assert resp.model == "gpt-4o-2024-08-06"  # the deployment decides
        assert resp.usage is not None and resp.usage.total_tokens > 0
        emb = c.embeddings.create(model="text-embedding-3-small", input="ping",
                                  encoding_format="float")
        assert len(emb.data[0].embedding) == 1536
        assert [m.id for m in c.models.list()] == list(MODELS)
    paths = [(r["path"], r["query"]) for r in fake.requests]
    assert paths == [("/openai/deployments/gpt-4o/chat/completions",
                      {"api-version": AZURE_VERSION}),
                     ("/openai/deployments/text-embedding-3-small/embeddings",
                      {"api-version": AZURE_VERSION}),
                     ("/openai/models", {"api-version": AZURE_VERSION})]
    assert all(r["headers"]["api-key"] == "<redacted>" for r in fake.requests)


def test_azure_error_shapes(fake: FakeUpstream) -> None:
    with azure(fake, key="not-the-key") as c, pytest.raises(openai.AuthenticationError) as bad:
        c.chat.completions.create(model="gpt-4o", messages=PING)
    assert (bad.value.code, bad.value.type) == ("401", None)  # a string code, no type
    assert bad.value.message.startswith("Error code: 401")
    assert isinstance(bad.value.body, dict) and bad.value.body["message"].startswith(
        "Access denied due to invalid subscription key")
    with FakeUpstream(api_key=KEY, rpm_limit=1) as limited, azure(limited) as c:
        c.chat.completions.create(model="gpt-4o", messages=PING)
        with pytest.raises(openai.RateLimitError) as caught:
            c.chat.completions.create(model="gpt-4o", messages=PING)
    err = caught.value
    assert err.code == "429" and "ChatCompletions_Create" in err.message
    assert int(err.response.headers["retry-after"]) >= 1
    assert int(err.response.headers["retry-after-ms"]) > 0
    assert "x-ratelimit-limit-requests" not in err.response.headers  # Azure: remaining only


def test_azure_responses_images_and_lists(fake: FakeUpstream) -> None:
    with azure(fake) as c:
        resp = c.responses.create(model="gpt-4o-mini", input="ping", store=False,
                                  max_output_tokens=16)
        assert resp.status == "completed" and resp.usage is not None
        image = c.images.generate(model="gpt-image-1-mini", prompt="a dot", quality="low")
        assert image.usage is not None and image.usage.output_tokens == 272
        assert [f.id for f in c.files.list(limit=1)] == [f["id"] for f in LISTS["files"][0]]
        assert len(list(c.batches.list(limit=1))) == len(LISTS["batches"][0])
        assert len(list(c.fine_tuning.jobs.list(limit=1))) == len(LISTS["fine_tunes"][0])
    assert {r["path"] for r in fake.requests} == {
        "/openai/responses", "/openai/deployments/gpt-image-1-mini/images/generations",
        "/openai/files", "/openai/batches", "/openai/fine_tuning/jobs"}


# ---------------------------------------------------------------------- streams


def test_chat_stream_yields_chunks_then_usage(client: openai.OpenAI, fake: FakeUpstream) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=PING, max_completion_tokens=16, stream=True,
        stream_options={"include_usage": True, "include_obfuscation": False})
    chunks = list(stream)
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    first, *middle, finish, usage_chunk = chunks
    # The role-only first chunk: role and an empty content, no token yet.
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    text = "".join(c.choices[0].delta.content or "" for c in middle)
    assert text == "Pong! How can I help you today?"
    assert finish.choices[0].finish_reason == "stop" and finish.usage is None
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    usage = usage_chunk.usage
    assert usage.prompt_tokens + usage.completion_tokens == usage.total_tokens
    assert usage.completion_tokens == len(middle)  # one token per content chunk
    assert all(c.obfuscation is None for c in chunks)  # include_obfuscation: false
    assert fake.requests[-1]["json"]["stream"] is True


def test_chat_stream_without_options_has_no_usage_and_is_obfuscated(
        client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=PING,
                                                 stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None and c.choices for c in chunks)  # no usage chunk
    assert all(c.obfuscation for c in chunks)  # on by default


def test_responses_stream_yields_typed_events_ending_completed(
        client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="gpt-4o-mini", input="ping", store=False,
                                          max_output_tokens=16, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e for e in events if isinstance(e, ResponseTextDeltaEvent)]
    assert "".join(d.delta for d in deltas) == "Pong! How can I help you today?"
    done = events[-1]
    assert isinstance(done, ResponseCompletedEvent)
    assert done.response.output_text == "Pong! How can I help you today?"
    usage = done.response.usage
    assert usage is not None and usage.output_tokens == len(deltas)
    assert usage.input_tokens + usage.output_tokens == usage.total_tokens


def test_the_sdk_raises_on_a_chat_error_mid_stream(client: openai.OpenAI,
                                                    fake: FakeUpstream) -> None:
    fake.set_fault("chat_stream", "stream_error")
    seen: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIError) as caught:
        seen.extend(client.chat.completions.create(model="gpt-4o-mini", messages=PING,
                                                   stream=True))
    assert caught.value.message == "Our servers are currently overloaded. Please try again later."
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "server_is_overloaded"
    assert seen and seen[-1].choices[0].delta.content  # some content came first


def test_a_responses_error_mid_stream_is_an_error_event_then_failed(
        client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.set_fault("responses_stream", "stream_error")
    events = list(client.responses.create(model="gpt-4o-mini", input="ping", store=False,
                                          max_output_tokens=16, stream=True))
    error, failed = events[-2:]
    assert isinstance(error, ResponseErrorEvent) and error.code == "server_is_overloaded"
    assert isinstance(failed, ResponseFailedEvent) and failed.response.status == "failed"
    assert failed.response.error is not None and failed.response.error.code == "server_error"
    assert [e.sequence_number for e in events] == list(range(len(events)))


@pytest.mark.parametrize("fault", ["cut_stream", "reset_mid_body"])
def test_a_cut_stream_raises_a_connection_error(client: openai.OpenAI, fake: FakeUpstream,
                                                fault: str) -> None:
    fake.set_fault("chat_stream", fault)
    with pytest.raises(openai.APIConnectionError):
        list(client.chat.completions.create(model="gpt-4o-mini", messages=PING, stream=True))


def test_a_stalled_stream_times_out(fake: FakeUpstream) -> None:
    fake.set_fault("responses_stream", "stall_stream")
    with sdk(fake, timeout=0.5) as c, pytest.raises(openai.APITimeoutError):
        list(c.responses.create(model="gpt-4o-mini", input="ping", max_output_tokens=16,
                                stream=True))


def test_azure_streams_chat_on_the_deployment_path(fake: FakeUpstream) -> None:
    with azure(fake) as c:
        chunks = list(c.chat.completions.create(
            model="gpt-4o", messages=PING, stream=True,
            stream_options={"include_usage": True}))
        events = list(c.responses.create(model="gpt-4o-mini", input="ping", stream=True))
    assert chunks[-1].usage is not None and chunks[0].model == "gpt-4o-2024-08-06"
    assert events[-1].type == "response.completed"
    assert [r["path"] for r in fake.requests] == [
        "/openai/deployments/gpt-4o/chat/completions", "/openai/responses"]

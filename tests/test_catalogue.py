"""The catalogue: its vocabulary is checked when a Probe is built, not when it first runs."""

from __future__ import annotations

import pytest

from exporter.catalogue import CATALOGUE, DEFAULT_MODELS, MODEL_ENV, MODEL_KINDS, Probe


def _check(body):
    return (0, 0, 0)


@pytest.mark.parametrize("kw,message", [
    (dict(providers=("openai", "bedrock")), "probe 'x': unknown provider 'bedrock'"),
    (dict(model_kind="audio"), "probe 'x': unknown model kind 'audio'"),
    (dict(azure_deployment=True), "probe 'x': azure_deployment without provider azure"),
    (dict(reader="sse"), "probe 'x': reader 'sse' goes with a stream dialect"),
    (dict(stream="chat"), "probe 'x': reader 'sse' goes with a stream dialect"),
    (dict(reader="sse", stream="grpc"), "probe 'x': unknown stream dialect 'grpc'"),
])
def test_a_probe_naming_unknown_vocabulary_is_refused(kw, message):
    with pytest.raises(ValueError) as info:
        Probe("x", "GET", "/x", _check, **kw)
    assert str(info.value) == message


def test_every_model_kind_has_a_default_model_and_a_variable():
    assert set(DEFAULT_MODELS) == set(MODEL_ENV) == set(MODEL_KINDS)
    used = {p.model_kind for p in CATALOGUE.values() if p.model_kind}
    assert used == set(MODEL_KINDS)


def test_azure_offers_the_deployment_probes_and_models():
    offered = [name for name, p in CATALOGUE.items() if "azure" in p.providers]
    assert offered == ["chat", "chat_stream", "embeddings", "models", "images"]
    assert [n for n in offered if CATALOGUE[n].azure_deployment] == [
        "chat", "chat_stream", "embeddings", "images"]


def test_the_streaming_probes_send_what_the_issue_asks():
    chat, responses = CATALOGUE["chat_stream"], CATALOGUE["responses_stream"]
    assert (chat.method, chat.path, chat.reader, chat.stream) == (
        "POST", "/chat/completions", "sse", "chat")
    assert chat.body("m") == {
        "model": "m", "messages": [{"role": "user", "content": "ping"}],
        "max_completion_tokens": 16, "stream": True,
        "stream_options": {"include_usage": True, "include_obfuscation": False}}
    assert (responses.method, responses.path, responses.reader, responses.stream) == (
        "POST", "/responses", "sse", "responses")
    assert responses.body("m") == {"model": "m", "input": "ping", "max_output_tokens": 16,
                                   "store": False, "stream": True}
    assert chat.default and responses.default and not chat.heavy
    assert responses.providers == ("openai", "openai_compatible")

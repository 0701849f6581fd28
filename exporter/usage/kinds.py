"""The vocabulary of the organisation Usage API: which kinds the exporter reads, what each
kind reports (shared/openai-openapi.yaml, ``Usage*Result``) and which counter each field
feeds. Plain data with no imports from the exporter, so settings can read it."""

from __future__ import annotations

from typing import NamedTuple


class Field(NamedTuple):
    """One number of a usage result and the counter it feeds."""

    name: str  # the result's field: input_tokens, num_model_requests, images, ...
    family: str  # tokens | requests | images | characters | seconds (see FAMILIES)
    token_type: str  # the token_type label of `tokens`; "" for the other families
    required: bool  # required by the spec; an optional field may be absent (not reported)


class Kind(NamedTuple):
    """One ``/organization/usage/{name}`` endpoint."""

    name: str
    result_object: str  # the `object` of its results (the spec's discriminator)
    fields: tuple[Field, ...]


_REQUESTS = Field("num_model_requests", "requests", "", True)

KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("completions", "organization.usage.completions.result", (
        Field("input_tokens", "tokens", "input", True),
        Field("output_tokens", "tokens", "output", True),
        # Optional in the spec: reported by the API, absent from older answers.
        Field("input_cached_tokens", "tokens", "input_cached", False),
        Field("input_audio_tokens", "tokens", "input_audio", False),
        Field("output_audio_tokens", "tokens", "output_audio", False),
        _REQUESTS)),
    Kind("embeddings", "organization.usage.embeddings.result", (
        Field("input_tokens", "tokens", "input", True), _REQUESTS)),
    Kind("moderations", "organization.usage.moderations.result", (
        Field("input_tokens", "tokens", "input", True), _REQUESTS)),
    Kind("images", "organization.usage.images.result", (
        Field("images", "images", "", True), _REQUESTS)),
    Kind("audio_speeches", "organization.usage.audio_speeches.result", (
        Field("characters", "characters", "", True), _REQUESTS)),
    Kind("audio_transcriptions", "organization.usage.audio_transcriptions.result", (
        Field("seconds", "seconds", "", True), _REQUESTS)),
)}
"""The kinds the exporter can count, in the order of USAGE_KINDS' default. The others of
the API (vector_stores: a storage level, not a flow; code_interpreter_sessions,
file_search_calls, web_search_calls: tool calls without a model) are not read."""

DEFAULT_KINDS: tuple[str, ...] = tuple(KINDS)

# group_by values the exporter offers, and the label each one fills. project_id and model
# are the default; api_key_id and user_id multiply the series and are opt-in.
GROUP_BY_LABELS: dict[str, str] = {
    "project_id": "project", "model": "model", "api_key_id": "api_key", "user_id": "user"}
DEFAULT_GROUP_BY: tuple[str, ...] = ("project_id", "model")

# Counter families: name suffix and HELP text (the unit is in the name).
FAMILIES: dict[str, tuple[str, str]] = {
    "tokens": ("openai_usage_tokens", "Tokens the organisation used, by token_type"),
    "requests": ("openai_usage_requests", "Model requests the organisation made"),
    "images": ("openai_usage_images", "Images the organisation generated or edited"),
    "characters": ("openai_usage_characters",
                   "Characters the organisation sent to text-to-speech"),
    "seconds": ("openai_usage_seconds", "Seconds of audio the organisation transcribed"),
}

"""Settings: precedence, every validation message (exact), demo rule, keys, redaction.

Table-driven like blackbox_exporter's config tests: one YAML fixture per failure mode in
tests/testdata/config/invalid-<case>.yaml, each mapped to the exact message the user sees.
Environments are explicit dicts: load() never reads os.environ when given one.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from exporter.catalogue import CATALOGUE
from exporter.settings import (
    MODEL_KINDS, ConfigError, Settings, _SPECS, build_parser, default_probes, load, redacted,
    shipped_prices,
)
from tests.conftest import ADMIN_CANARY_KEY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTDATA = os.path.join("tests", "testdata", "config")
CANARY = "sk-proj-CANARY0x7e3b9d1f2a4c6e8b0d2f4a6c8e0b2d4f6a8c"
KEY = {"OPENAI_API_KEY": "sk-test"}
PROBES = ", ".join(CATALOGUE)
USAGE_KINDS = ("completions, embeddings, moderations, images, audio_speeches, "
               "audio_transcriptions")
# What a provider-openai target probes when it names no probes (spelled out: the
# expectation must not be computed by the code under test).
DEFAULT_PROBES = ("chat", "chat_stream", "responses", "responses_stream", "embeddings",
                  "moderations", "models", "files", "fine_tunes", "batches")
# The bounds of interval and timeout, spelled out (docs/configuration.md states them).
FAST = "from 0.05 with --probe.allow-fast or PROBE_ALLOW_FAST=1, for tests"
INTERVAL_ENV = f"must be a number of seconds from 1 to 86400 ({FAST})"
INTERVAL = ("must be a number of seconds from 1 to 86400 or a duration such as 30s or 1m "
            f"({FAST})")
TIMEOUT = ("must be a number of seconds from 0.01 to 300 (5 minutes) or a duration such as "
           "500ms or 15s")
HEAVY = ("costs real money on every probe and is only allowed with PROBE_HEAVY=1 (or "
         "--probe.heavy, or heavy: true in the config file)")


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # fixture paths in messages are relative to the repo


def fixture(name: str) -> str:
    return os.path.join(TESTDATA, name)


def error_of(argv: list[str], environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load(argv, environ)
    return str(info.value)


def assert_no_canary(text: str) -> None:
    for fragment in (CANARY, CANARY[:12], CANARY[-12:]):
        assert fragment not in text


# -- config file: one fixture per failure mode ------------------------------------------

INVALID_FILES = [
    ("invalid-yaml.yaml",
     "config file {path}: invalid YAML at line 4: expected <block end>, but found "
     "'<block mapping start>'"),
    ("invalid-duplicate-key.yaml", "config file {path}: duplicate key 'interval' at line 3"),
    ("invalid-not-mapping.yaml",
     "config file {path}: must be a mapping of settings at top level, got a list"),
    ("invalid-unknown-key.yaml",
     "config file: unknown key 'intervall' at top level (allowed: interval, timeout, mode, "
     "connection, heavy, region, listen_address, log_level, log_format, max_workers, "
     "probe_budget_usd_per_day, prices, history, usage, shard, targets)"),
    ("invalid-interval.yaml", f"config file interval: {INTERVAL}, got 0"),
    ("invalid-timeout.yaml", f"config file timeout: {TIMEOUT}, got 'soon'"),
    ("invalid-mode.yaml", "config file mode: must be one of roundrobin, all, got 'sometimes'"),
    ("invalid-connection.yaml",
     "config file connection: must be one of fresh, reuse, got 'pooled'"),
    ("invalid-heavy.yaml",
     "config file heavy: must be one of 1, 0, true, false, yes, no, got 'maybe'"),
    ("invalid-listen-address.yaml",
     "config file listen_address: must be host:port, [ipv6]:port or :port with a port "
     "1-65535, got 'nowhere:99999'"),
    ("invalid-listen-address-ipv6.yaml",
     "config file listen_address: must put an IPv6 address in brackets, such as [::]:9188, "
     "got '::1:9188'"),
    ("invalid-log-level.yaml",
     "config file log_level: must be one of DEBUG, INFO, WARNING, ERROR, got 'verbose'"),
    ("invalid-log-format.yaml", "config file log_format: must be one of json, text, got 'logfmt'"),
    ("invalid-max-workers.yaml", "config file max_workers: must be a whole number 1-64, got 65"),
    ("invalid-region.yaml",
     "config file region: must be 1-64 letters, digits or - _ . : /, got 'us west'"),
    ("invalid-secret-top-level.yaml",
     "config file api_key: secrets never go in the config file; use environment variables "
     "(OPENAI_API_KEY or a target's api_key_env, WEB_AUTH_TOKEN)"),
    ("invalid-web-auth-token.yaml",
     "config file web_auth_token: secrets never go in the config file; use environment "
     "variables (OPENAI_API_KEY or a target's api_key_env, WEB_AUTH_TOKEN)"),
    ("invalid-history-not-mapping.yaml",
     "config file history: must be a mapping (enable_db, db_file, retention_hours, "
     "max_events), got true"),
    ("invalid-history-unknown-key.yaml",
     "config file: unknown key 'retention' in history (allowed: enable_db, db_file, "
     "retention_hours, max_events)"),
    ("invalid-history-enable-db.yaml",
     "config file history.enable_db: must be one of 1, 0, true, false, yes, no, "
     "got 'sometimes'"),
    ("invalid-history-retention.yaml",
     "config file history.retention_hours: must be a number of hours from 0.25 to 720 (30 "
     "days), got 0"),
    ("invalid-history-max-events.yaml",
     "config file history.max_events: must be a whole number 1-1000000, got 0"),
    ("invalid-history-db-file.yaml",
     "config file history.db_file: must be a non-empty string, got ''"),
    # Scale-out (more cases, through every source: tests/test_shards.py).
    ("invalid-shard-index.yaml", "config file shard.index: must be a whole number 0-999 "
     "(this instance's shard, below the shard count), got 1.5"),
    ("invalid-shard-count.yaml", "config file shard.count: must be a whole number 1-1000, got 0"),
    ("invalid-shard-index-beyond-count.yaml",
     "config file shard.index: must be below the shard count 3 (config file shard.count), "
     "got 3"),
    ("invalid-shard-primary.yaml",
     "config file shard.primary: must be one of 1, 0, true, false, yes, no, got 'sometimes'"),
    ("invalid-shard-not-mapping.yaml",
     "config file shard: must be a mapping (index, count, primary), got 2"),
    ("invalid-shard-unknown-key.yaml",
     "config file: unknown key 'replicas' in shard (allowed: index, count, primary)"),
    ("invalid-prices-negative.yaml",
     "config file prices.gpt-4o-mini.input: must be a number 0-100000 (USD per 1M tokens), "
     "got -0.15"),
    ("invalid-prices-missing-output.yaml",
     "config file prices.my-model: must set both input and output (USD per 1M tokens)"),
    ("invalid-prices-unknown-key.yaml",
     "config file: unknown key 'cached_input' in prices.gpt-4o-mini (allowed: input, output)"),
    ("invalid-prices-not-number.yaml",
     "config file prices.gpt-4o-mini.input: must be a number 0-100000 (USD per 1M tokens), "
     "got 'cheap'"),
    ("invalid-prices-not-mapping.yaml",
     "config file prices: must be a mapping of model: {input: usd_per_1m, output: "
     "usd_per_1m}, got a list"),
    ("invalid-targets-empty.yaml",
     "config file targets: must be a non-empty list of targets (or leave it out for one "
     "target from the environment), got an empty list"),
    ("invalid-targets-null.yaml",
     "config file targets: must be a non-empty list of targets (or leave it out for one "
     "target from the environment), got nothing"),
    ("invalid-target-not-mapping.yaml",
     "config file targets[0]: must be a mapping with at least a name, got 'openai'"),
    ("invalid-target-unknown-key.yaml",
     "config file: unknown key 'bas_url' in targets[0] (allowed: name, provider, base_url, "
     "api_key_env, admin_key_env, region, models, probes, headers, org_id, project_id, "
     "api_version, connection)"),
    ("invalid-target-api-key.yaml",
     "config file targets[0].api_key: keys never go in the config file; put the key in an "
     "environment variable and set api_key_env to its name"),
    ("invalid-target-api-key-env-is-a-key.yaml",
     "config file targets[0].api_key_env: must be the name of an environment variable "
     "(letters, digits, '_'), not the key itself"),
    ("invalid-target-no-name.yaml",
     "config file targets[0].name: required (letters, digits, '-', '_' or '.')"),
    ("invalid-target-bad-name.yaml",
     "config file targets[0].name: must be letters, digits, '-', '_' or '.', got 'my target'"),
    ("invalid-target-duplicate-name.yaml",
     "config file targets[2].name: duplicate target name 'openai' (also targets[0])"),
    ("invalid-target-connection.yaml",
     "config file targets[0].connection: must be one of fresh, reuse, got 'keepalive'"),
    ("invalid-target-provider.yaml",
     "config file targets[0].provider: must be one of openai, azure, openai_compatible, "
     "got 'anthropic'"),
    ("invalid-target-base-url.yaml",
     "config file targets[0].base_url: must be an http(s) URL such as "
     "https://api.openai.com/v1, got 'ftp://api.openai.com/v1'"),
    ("invalid-target-base-url-credentials.yaml",
     "config file targets[0].base_url: must not carry credentials (user:password@); keys "
     "come from environment variables"),
    ("invalid-target-base-url-required.yaml",
     "config file targets[0].base_url: required for provider openai_compatible (an http(s) "
     "URL)"),
    ("invalid-target-azure-api-version.yaml",
     "config file targets[0].api_version: required for provider azure (such as 2024-10-21)"),
    ("invalid-target-azure-base-url-path.yaml",
     "config file targets[0].base_url: for provider azure give the resource endpoint without "
     "/openai (such as https://NAME.openai.azure.com); the exporter adds the path"),
    ("invalid-target-api-version-not-azure.yaml",
     "config file targets[0].api_version: only for provider azure"),
    ("invalid-target-probes-unknown.yaml",
     f"config file targets[1].probes: unknown probe 'chatt' (allowed: {PROBES})"),
    ("invalid-target-probes-empty.yaml",
     f"config file targets[0].probes: must name at least one probe (allowed: {PROBES})"),
    ("invalid-target-probes-not-list.yaml",
     f"config file targets[0].probes: must be a list of probe keys ({PROBES}), got a mapping"),
    ("invalid-target-images-without-heavy.yaml",
     f"config file targets[0].probes: 'images' {HEAVY}"),
    ("invalid-target-models-unknown-kind.yaml",
     "config file: unknown key 'completion' in targets[0].models (allowed: chat, embeddings, "
     "moderation, image)"),
    ("invalid-target-models-not-mapping.yaml",
     "config file targets[0].models: must be a mapping of model kind to model (chat, "
     "embeddings, moderation, image), got 'gpt-4o-mini'"),
    ("invalid-target-model-name.yaml",
     "config file targets[0].models.chat: must be a model name without spaces, got 'gpt 4o'"),
    ("invalid-target-azure-deployment-name.yaml",
     "config file targets[0].models.chat: must be an Azure deployment name (letters, digits, "
     "'-', '_', '.'), got '../../admin'"),
    ("invalid-target-azure-missing-deployment.yaml",
     "config file targets[0].models.embeddings: required for provider azure by probe "
     "'embeddings' (the deployment name)"),
    ("invalid-target-compatible-missing-model.yaml",
     "config file targets[0].models.chat: required for provider openai_compatible by probe "
     "'chat' (the model name the server serves)"),
    ("invalid-target-headers-authorization.yaml",
     "config file targets[0].headers: 'Authorization' is set from the key; put the key in an "
     "environment variable and set api_key_env to its name"),
    ("invalid-target-headers-api-key.yaml",
     "config file targets[0].headers: 'API-Key' is set from the key; put the key in an "
     "environment variable and set api_key_env to its name"),
    ("invalid-target-headers-not-string.yaml",
     "config file targets[0].headers.X-Team-Id: must be a string (quote it)"),
    ("invalid-target-headers-bad-name.yaml",
     "config file targets[0].headers: header names must be HTTP tokens (letters, digits, "
     "'-'), got 'X Team'"),
    ("invalid-target-region.yaml",
     "config file targets[0].region: must be 1-64 letters, digits or - _ . : /, got ''"),
    ("invalid-target-org-id.yaml",
     "config file targets[0].org_id: must be letters, digits, '-', '_' or '.', got 'org 1'"),
    ("invalid-target-admin-key-env.yaml",
     "config file targets[0].admin_key_env: must be the name of an environment variable "
     "(letters, digits, '_'), not the key itself"),
    ("invalid-target-admin-key-env-azure.yaml",
     "config file targets[0].admin_key_env: only for provider openai (the Usage and Costs "
     "APIs are OpenAI's)"),
    ("invalid-usage-not-mapping.yaml",
     "config file usage: must be a mapping (poll_interval, lookback_minutes, kinds, group_by, "
     "max_series), got true"),
    ("invalid-usage-unknown-key.yaml",
     "config file: unknown key 'interval' in usage (allowed: poll_interval, lookback_minutes, "
     "kinds, group_by, max_series)"),
    ("invalid-usage-admin-key.yaml",
     "config file usage.admin_key: secrets never go in the config file; use environment "
     "variables (OPENAI_API_KEY or a target's api_key_env, WEB_AUTH_TOKEN)"),
    ("invalid-usage-poll-interval.yaml",
     "config file usage.poll_interval: must be 1-86400 seconds or a duration such as 5m, "
     "got 0.5"),
    ("invalid-usage-kinds.yaml",
     f"config file usage.kinds: unknown usage kind 'vector_stores' (allowed: {USAGE_KINDS})"),
    ("invalid-usage-group-by.yaml",
     "config file usage.group_by: unknown group_by field 'batch' (allowed: project_id, model, "
     "api_key_id, user_id)"),
    ("invalid-usage-lookback.yaml",
     "config file usage.lookback_minutes: must be a whole number 1-1440, got 2000"),
    ("invalid-usage-lookback-short.yaml",
     "config file usage.lookback_minutes: must cover two poll intervals of 600 s (config "
     "file usage.poll_interval) so that every minute is read twice: at least 20, got 15"),
    ("invalid-usage-max-series.yaml",
     "config file usage.max_series: must be a whole number 1-100000, got 0"),
    ("invalid-probe-budget.yaml",
     "config file probe_budget_usd_per_day: must be a number of USD from 0.01 to 1000000, "
     "got -1"),
]


@pytest.mark.parametrize("name,want", INVALID_FILES, ids=[c[0] for c in INVALID_FILES])
def test_invalid_config_file(name, want):
    path = fixture(name)
    got = error_of(["--config.file", path], dict(KEY))
    assert got == want.replace("{path}", path)
    assert "\n" not in got
    assert_no_canary(got)


def test_every_invalid_fixture_has_a_case():
    on_disk = {f for f in os.listdir(TESTDATA) if f.startswith("invalid-")}
    assert on_disk == {name for name, _ in INVALID_FILES}


def test_unreadable_config_file(tmp_path):
    assert error_of(["--config.file", "/nonexistent/x.yaml"], KEY) == (
        "config file /nonexistent/x.yaml: cannot read it: No such file or directory")
    assert error_of(["--config.file", str(tmp_path)], KEY) == (
        f"config file {tmp_path}: cannot read it: Is a directory")
    binary = tmp_path / "latin1.yaml"
    binary.write_bytes(b"region: z\xfcrich\n")
    assert error_of(["--config.file", str(binary)], KEY) == (
        f"config file {binary}: cannot read it: not UTF-8 text")


@pytest.mark.parametrize("name", ["valid-multi.yaml", "valid-settings-only.yaml",
                                  "valid-empty.yaml"])
def test_valid_config_files_load(name):
    settings = load(["--config.file", fixture(name)],
                    {"OPENAI_API_KEY": "sk-a", "AZURE_EASTUS_KEY": "az-b"})
    assert settings.config_file == fixture(name)
    assert not settings.demo


def test_valid_multi_targets():
    s = load(["--config.file", fixture("valid-multi.yaml")],
             {"OPENAI_API_KEY": "sk-a", "AZURE_EASTUS_KEY": "az-b"})
    openai, azure, vllm = s.targets
    assert (s.interval_seconds, s.timeout_seconds, s.mode, s.max_workers) == (60, 15, "all", 12)
    assert (s.listen_host, s.listen_port, s.log_level) == ("127.0.0.1", 9188, "INFO")
    assert (s.enable_db, s.db_file, s.history_retention_hours, s.history_max_events) == (
        True, "/var/lib/openai-exporter/data.db", 48, 50000)

    assert openai.base_url == "https://api.openai.com/v1"
    assert (openai.api_key, openai.api_key_env, openai.region) == ("sk-a", "OPENAI_API_KEY",
                                                                   "us-west-1")
    assert openai.models["chat"] == "gpt-4.1-mini"
    assert openai.models["embeddings"] == "text-embedding-3-small"
    assert openai.probes == DEFAULT_PROBES
    assert openai.project_id == "proj_exporter"

    assert (azure.provider, azure.api_key, azure.api_version, azure.region) == (
        "azure", "az-b", "2024-10-21", "eastus")
    assert azure.models == {"chat": "gpt-4o-mini-prod", "embeddings": "embed-small"}
    assert azure.probes == ("chat", "chat_stream", "embeddings", "models")

    assert (vllm.api_key, vllm.api_key_env, vllm.region) == ("", "", "onprem")
    assert vllm.probes == ("chat", "models")  # catalogue order, not file order
    assert vllm.headers == {"X-Team": "platform"}
    assert s.prices["llama-3.1-8b-instruct"] == {"input": 0, "output": 0}
    assert (openai.connection, azure.connection, vllm.connection) == ("fresh", "fresh", "reuse")


def test_a_target_connection_overrides_the_global_one(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("connection: reuse\ntargets:\n  - {name: a}\n"
                    "  - {name: b, connection: fresh}\n")
    a, b = load(["--config.file", str(path)], KEY).targets
    assert (a.connection, b.connection) == ("reuse", "fresh")
    # environment and flags set the default of targets that set none, not theirs
    a, b = load(["--config.file", str(path), "--probe.connection", "fresh"],
                {**KEY, "PROBE_CONNECTION": "reuse"}).targets
    assert (a.connection, b.connection) == ("fresh", "fresh")
    a, b = load(["--config.file", str(path)], {**KEY, "PROBE_CONNECTION": "fresh"}).targets
    assert (a.connection, b.connection) == ("fresh", "fresh")
    (env_target,) = load([], {**KEY, "PROBE_CONNECTION": "reuse"}).targets
    assert env_target.connection == "reuse"


# -- environment and flags -------------------------------------------------------------

ENV_CASES = [
    ({"PROBE_INTERVAL_SEC": "0"}, f"PROBE_INTERVAL_SEC: {INTERVAL_ENV}, got '0'"),
    ({"PROBE_INTERVAL_SEC": "1m"}, f"PROBE_INTERVAL_SEC: {INTERVAL_ENV}, got '1m'"),
    ({"PROBE_INTERVAL_SEC": "nan"}, f"PROBE_INTERVAL_SEC: {INTERVAL_ENV}, got 'nan'"),
    ({"HTTP_TIMEOUT_MS": "-5"},
     "HTTP_TIMEOUT_MS: must be a number of milliseconds from 10 to 300000 (5 minutes), "
     "got '-5'"),
    ({"PROBE_MODE": "sometimes"}, "PROBE_MODE: must be one of roundrobin, all, got 'sometimes'"),
    ({"PROBE_CONNECTION": "pool"}, "PROBE_CONNECTION: must be one of fresh, reuse, got 'pool'"),
    ({"PROBE_HEAVY": "maybe"},
     "PROBE_HEAVY: must be one of 1, 0, true, false, yes, no, got 'maybe'"),
    ({"PROBE_ENDPOINTS": "chat,chatt"},
     f"PROBE_ENDPOINTS: unknown probe 'chatt' (allowed: {PROBES})"),
    ({"PROBE_ENDPOINTS": " , "},
     f"PROBE_ENDPOINTS: must name at least one probe (allowed: {PROBES})"),
    ({"PROBE_ENDPOINTS": "chat,images"}, f"PROBE_ENDPOINTS: 'images' {HEAVY}"),
    ({"PROBE_REGION": "us west"},
     "PROBE_REGION: must be 1-64 letters, digits or - _ . : /, got 'us west'"),
    ({"LOG_LEVEL": "verbose"},
     "LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, got 'verbose'"),
    ({"LOG_FORMAT": "logfmt"}, "LOG_FORMAT: must be one of json, text, got 'logfmt'"),
    ({"LISTEN_ADDRESS": "nowhere:99999"},
     "LISTEN_ADDRESS: must be host:port, [ipv6]:port or :port with a port 1-65535, "
     "got 'nowhere:99999'"),
    ({"LISTEN_ADDRESS": "9188"},
     "LISTEN_ADDRESS: must be host:port, [ipv6]:port or :port with a port 1-65535, "
     "got '9188'"),
    ({"LISTEN_ADDRESS": "[nope]:9188"},
     "LISTEN_ADDRESS: must be host:port, [ipv6]:port or :port with a port 1-65535, "
     "got '[nope]:9188'"),
    ({"LISTEN_ADDRESS": ":0"},
     "LISTEN_ADDRESS: must be host:port, [ipv6]:port or :port with a port 1-65535, got ':0'"),
    ({"PROBE_MAX_WORKERS": "0"}, "PROBE_MAX_WORKERS: must be a whole number 1-64, got '0'"),
    ({"PROBE_MAX_WORKERS": "8.5"},
     "PROBE_MAX_WORKERS: must be a whole number 1-64, got '8.5'"),
    ({"DEMO": "please"}, "DEMO: must be one of 1, 0, true, false, yes, no, got 'please'"),
    ({"ENABLE_DB": "sometimes"},
     "ENABLE_DB: must be one of 1, 0, true, false, yes, no, got 'sometimes'"),
    ({"HISTORY_RETENTION_HOURS": "0"},
     "HISTORY_RETENTION_HOURS: must be a number of hours from 0.25 to 720 (30 days), got '0'"),
    ({"HISTORY_MAX_EVENTS": "-1"},
     "HISTORY_MAX_EVENTS: must be a whole number 1-1000000, got '-1'"),
    ({"OPENAI_BASE_URL": "api.openai.com/v1"},
     "OPENAI_BASE_URL: must be an http(s) URL such as https://api.openai.com/v1, "
     "got 'api.openai.com/v1'"),
    ({"OPENAI_BASE_URL": "https://api.openai.com/v1?x=1"},
     "OPENAI_BASE_URL: must not have a query string or fragment, "
     "got 'https://api.openai.com/v1?x=1'"),
    ({"OPENAI_BASE_URL": "https://api.openai.com:99999/v1"},
     "OPENAI_BASE_URL: must be an http(s) URL such as https://api.openai.com/v1, "
     "got 'https://api.openai.com:99999/v1'"),
    ({"OPENAI_BASE_URL": f"https://me:{CANARY}@proxy.example/v1"},
     "OPENAI_BASE_URL: must not carry credentials (user:password@); keys come from "
     "environment variables"),
    ({"OPENAI_MODEL": "gpt 4o"}, "OPENAI_MODEL: must be a model name without spaces, "
                                 "got 'gpt 4o'"),
    ({"OPENAI_ORG_ID": "org 1"},
     "OPENAI_ORG_ID: must be letters, digits, '-', '_' or '.', got 'org 1'"),
    ({"CONFIG_FILE": "/nonexistent/env.yaml"},
     "config file /nonexistent/env.yaml: cannot read it: No such file or directory"),
    ({"USAGE_POLL_INTERVAL_SEC": "0.5"},
     "USAGE_POLL_INTERVAL_SEC: must be a number of seconds 1-86400, got '0.5'"),
    ({"USAGE_POLL_INTERVAL_SEC": "5m"},
     "USAGE_POLL_INTERVAL_SEC: must be a number of seconds 1-86400, got '5m'"),
    ({"USAGE_POLL_INTERVAL_SEC": "86401"},
     "USAGE_POLL_INTERVAL_SEC: must be a number of seconds 1-86400, got '86401'"),
    ({"USAGE_POLL_INTERVAL_SEC": "3600"},
     "USAGE_POLL_INTERVAL_SEC: must be at most half the lookback (USAGE_LOOKBACK_MIN 60 "
     "minutes = 3600 s), so that every minute is read twice, got 3600"),
    ({"USAGE_LOOKBACK_MIN": "0"}, "USAGE_LOOKBACK_MIN: must be a whole number 1-1440, got '0'"),
    ({"USAGE_LOOKBACK_MIN": "5"},
     "USAGE_LOOKBACK_MIN: must cover two poll intervals of 300 s (USAGE_POLL_INTERVAL_SEC) so "
     "that every minute is read twice: at least 10, got 5"),
    ({"USAGE_KINDS": "completions,chat"},
     f"USAGE_KINDS: unknown usage kind 'chat' (allowed: {USAGE_KINDS})"),
    ({"USAGE_KINDS": ","},
     f"USAGE_KINDS: must name at least one usage kind (allowed: {USAGE_KINDS})"),
    ({"USAGE_GROUP_BY": "model,batch"},
     "USAGE_GROUP_BY: unknown group_by field 'batch' (allowed: project_id, model, api_key_id, "
     "user_id)"),
    ({"USAGE_MAX_SERIES": "100001"},
     "USAGE_MAX_SERIES: must be a whole number 1-100000, got '100001'"),
    ({"PROBE_BUDGET_USD_PER_DAY": "0"},
     "PROBE_BUDGET_USD_PER_DAY: must be a number of USD from 0.01 to 1000000, got '0'"),
    ({"PROBE_BUDGET_USD_PER_DAY": "nan"},
     "PROBE_BUDGET_USD_PER_DAY: must be a number of USD from 0.01 to 1000000, got 'nan'"),
    ({"PROBE_BUDGET_USD_PER_DAY": "5 USD"},
     "PROBE_BUDGET_USD_PER_DAY: must be a number of USD from 0.01 to 1000000, got '5 USD'"),
    ({"PROBE_BUDGET_USD_PER_DAY": "1000001"},
     "PROBE_BUDGET_USD_PER_DAY: must be a number of USD from 0.01 to 1000000, got '1000001'"),
    ({"PROBE_BUDGET_USD_PER_DAY": "0.001"},
     "PROBE_BUDGET_USD_PER_DAY: must be a number of USD from 0.01 to 1000000, got '0.001'"),
]


@pytest.mark.parametrize("env,want", ENV_CASES, ids=[next(iter(c[0])) for c in ENV_CASES])
def test_invalid_environment(env, want):
    got = error_of([], {**KEY, **env})
    assert got == want
    assert_no_canary(got)


CLI_CASES = [
    (["--probe.interval", "0"], f"--probe.interval: {INTERVAL}, got '0'"),
    (["--probe.interval", "soon"], f"--probe.interval: {INTERVAL}, got 'soon'"),
    (["--probe.timeout", "-1"], f"--probe.timeout: {TIMEOUT}, got '-1'"),
    (["--probe.timeout", "inf"], f"--probe.timeout: {TIMEOUT}, got 'inf'"),
    (["--probe.mode", "often"], "--probe.mode: must be one of roundrobin, all, got 'often'"),
    (["--probe.connection", "1"], "--probe.connection: must be one of fresh, reuse, got '1'"),
    (["--probe.endpoints", "chatt"],
     f"--probe.endpoints: unknown probe 'chatt' (allowed: {PROBES})"),
    (["--probe.endpoints", "images"], f"--probe.endpoints: 'images' {HEAVY}"),
    (["--log.level", "trace"],
     "--log.level: must be one of DEBUG, INFO, WARNING, ERROR, got 'trace'"),
    (["--log.format", "xml"], "--log.format: must be one of json, text, got 'xml'"),
    (["--web.listen-address", "localhost"],
     "--web.listen-address: must be host:port, [ipv6]:port or :port with a port 1-65535, "
     "got 'localhost'"),
]


@pytest.mark.parametrize("argv,want", CLI_CASES, ids=[c[0][0] for c in CLI_CASES])
def test_invalid_flags(argv, want):
    assert error_of(argv, dict(KEY)) == want


def test_unknown_flag_is_one_line_exit_2(capsys, monkeypatch):
    # argparse's errors are config errors like any other: one line, secrets masked, exit 2
    # (argparse printed its usage text before the line).
    from exporter.__main__ import main
    monkeypatch.setattr(os, "environ", dict(KEY))
    with pytest.raises(SystemExit) as info:
        main(["--probe.intervall", "5"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --probe.intervall" in err
    assert err == "openai-exporter: error: unrecognized arguments: --probe.intervall 5\n"


def test_version_flag(capsys):
    from exporter import __version__
    with pytest.raises(SystemExit) as info:
        load(["--version"], {})
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"openai-exporter {__version__}"


def test_every_flag_help_names_its_default_and_env_var():
    for action in build_parser()._actions:
        flag = action.option_strings[0] if action.option_strings else ""
        if flag in ("-h", "--version"):
            continue
        assert "Default" in action.help, flag
        spec = next((s for s in _SPECS if s.flag == flag), None)
        if spec is not None:
            assert spec.env in action.help, flag
    assert "CONFIG_FILE" in build_parser()._option_string_actions["--config.file"].help


def test_config_error_is_one_line():
    assert str(ConfigError("a\nb")) == "a b"


# -- precedence: defaults < file < environment < flags --------------------------------------

PRECEDENCE = [
    # attribute, file line, env, flags, default, file value, env value, flag value
    ("interval_seconds", "interval: 40", {"PROBE_INTERVAL_SEC": "20"},
     ["--probe.interval", "10"], 30.0, 40.0, 20.0, 10.0),
    ("timeout_seconds", "timeout: 5s", {"HTTP_TIMEOUT_MS": "4000"},
     ["--probe.timeout", "1500ms"], 12.0, 5.0, 4.0, 1.5),
    ("mode", "mode: all", {"PROBE_MODE": "RoundRobin"}, ["--probe.mode", "all"],
     "roundrobin", "all", "roundrobin", "all"),
    ("connection", "connection: reuse", {"PROBE_CONNECTION": "Fresh"},
     ["--probe.connection", "reuse"], "fresh", "reuse", "fresh", "reuse"),
    ("heavy", "heavy: true", {"PROBE_HEAVY": "no"}, ["--probe.heavy"], False, True, False, True),
    ("log_level", "log_level: debug", {"LOG_LEVEL": "warn"}, ["--log.level", "error"],
     "INFO", "DEBUG", "WARNING", "ERROR"),
    ("log_format", "log_format: text", {"LOG_FORMAT": "JSON"}, ["--log.format", "text"],
     "json", "text", "json", "text"),
    ("listen_port", "listen_address: '127.0.0.1:9001'", {"LISTEN_ADDRESS": "[::1]:9002"},
     ["--web.listen-address", ":9003"], 9188, 9001, 9002, 9003),
]


@pytest.mark.parametrize("attr,line,env,flags,default,in_file,in_env,in_flag", PRECEDENCE,
                         ids=[c[0] for c in PRECEDENCE])
def test_precedence(tmp_path, attr, line, env, flags, default, in_file, in_env, in_flag):
    path = tmp_path / "c.yaml"
    path.write_text(line + "\n")
    file_arg = ["--config.file", str(path)]
    assert getattr(load([], KEY), attr) == default
    assert getattr(load(file_arg, KEY), attr) == in_file
    assert getattr(load(file_arg, {**KEY, **env}), attr) == in_env
    assert getattr(load(file_arg + flags, {**KEY, **env}), attr) == in_flag


@pytest.mark.parametrize("attr,line,env,default,in_file,in_env", [
    ("max_workers", "max_workers: 4", {"PROBE_MAX_WORKERS": "16"}, 8, 4, 16),
    ("enable_db", "history: {enable_db: true}", {"ENABLE_DB": "0"}, False, True, False),
    ("db_file", "history: {db_file: a.db}", {"DB_FILE": "b.db"}, "data.db", "a.db", "b.db"),
    ("history_retention_hours", "history: {retention_hours: 2}",
     {"HISTORY_RETENTION_HOURS": "0.5"}, 24.0, 2.0, 0.5),
    ("history_max_events", "history: {max_events: 10}", {"HISTORY_MAX_EVENTS": "20"},
     100_000, 10, 20),
])
def test_precedence_without_flags(tmp_path, attr, line, env, default, in_file, in_env):
    path = tmp_path / "c.yaml"
    path.write_text(line + "\n")
    assert getattr(load([], KEY), attr) == default
    assert getattr(load(["--config.file", str(path)], KEY), attr) == in_file
    assert getattr(load(["--config.file", str(path)], {**KEY, **env}), attr) == in_env


@pytest.mark.parametrize("attr,line,env,default,in_file,in_env", [
    ("usage_poll_interval_seconds", "usage: {poll_interval: 2m}",
     {"USAGE_POLL_INTERVAL_SEC": "60"}, 300.0, 120.0, 60.0),
    ("usage_lookback_minutes", "usage: {lookback_minutes: 30}", {"USAGE_LOOKBACK_MIN": "90"},
     60, 30, 90),
    ("usage_kinds", "usage: {kinds: [images, completions]}", {"USAGE_KINDS": "embeddings"},
     ("completions", "embeddings", "moderations", "images", "audio_speeches",
      "audio_transcriptions"), ("completions", "images"), ("embeddings",)),
    ("usage_group_by", "usage: {group_by: [model]}", {"USAGE_GROUP_BY": "user_id,project_id"},
     ("project_id", "model"), ("model",), ("project_id", "user_id")),
    ("usage_max_series", "usage: {max_series: 50}", {"USAGE_MAX_SERIES": "7"}, 1000, 50, 7),
    ("probe_budget_usd_per_day", "probe_budget_usd_per_day: 2.5",
     {"PROBE_BUDGET_USD_PER_DAY": "0.75"}, None, 2.5, 0.75),
])
def test_usage_settings_precedence(tmp_path, attr, line, env, default, in_file, in_env):
    path = tmp_path / "c.yaml"
    path.write_text(line + "\n")
    assert getattr(load([], KEY), attr) == default
    assert getattr(load(["--config.file", str(path)], KEY), attr) == in_file
    assert getattr(load(["--config.file", str(path)], {**KEY, **env}), attr) == in_env


ADMIN = ADMIN_CANARY_KEY


def test_the_admin_key_of_the_environment_target():
    s = load([], {**KEY, "OPENAI_ADMIN_KEY": f" {ADMIN}\n"})
    assert (s.admin_key, s.targets[0].admin_key) == (ADMIN, ADMIN)
    assert s.targets[0].admin_key_env == "OPENAI_ADMIN_KEY"
    assert load([], KEY).targets[0].admin_key == ""
    assert ADMIN not in repr(s)
    view = redacted(s)
    assert view["admin_key"] == "***" and view["targets"][0]["admin_key"] == "***"
    assert view["targets"][0]["admin_key_env"] == "OPENAI_ADMIN_KEY"


def test_admin_keys_of_file_targets(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "targets:\n  - {name: a}\n  - {name: b, admin_key_env: ORG_ADMIN}\n"
        "  - {name: az, provider: azure, base_url: 'https://x.openai.azure.com', "
        "api_version: '2024-10-21', models: {chat: c, embeddings: e}}\n")
    env = {**KEY, "AZURE_OPENAI_API_KEY": "az", "ORG_ADMIN": ADMIN}
    a, b, az = load(["--config.file", str(path)], {**env, "OPENAI_ADMIN_KEY": ADMIN}).targets
    assert (a.admin_key, a.admin_key_env) == (ADMIN, "OPENAI_ADMIN_KEY")  # the default
    assert (b.admin_key, b.admin_key_env) == (ADMIN, "ORG_ADMIN")
    assert (az.admin_key, az.admin_key_env) == ("", "")  # never another provider's
    a, b, _ = load(["--config.file", str(path)], env).targets
    assert (a.admin_key, b.admin_key) == ("", ADMIN)
    # A second organisation: one exporter polls one.
    got = error_of(["--config.file", str(path)], {**env, "OPENAI_ADMIN_KEY": ADMIN + "x"})
    assert got == ("targets[1] (b): the admin key in ORG_ADMIN differs from targets[0]'s "
                   "(OPENAI_ADMIN_KEY); one exporter polls one organisation, so run one "
                   "exporter per organisation")
    assert ADMIN not in got and ADMIN[-12:] not in got
    # Named but not set.
    got = error_of(["--config.file", str(path)], {**KEY, "AZURE_OPENAI_API_KEY": "az"})
    assert got == ("targets[1] (b): environment variable ORG_ADMIN named by admin_key_env is "
                   "not set")


def test_an_admin_key_without_an_openai_target_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("targets:\n  - {name: local, provider: openai_compatible, "
                    "base_url: 'http://127.0.0.1:8000/v1', models: {chat: m, embeddings: e}}\n")
    got = error_of(["--config.file", str(path)], {"OPENAI_ADMIN_KEY": ADMIN})
    assert got == ("OPENAI_ADMIN_KEY: set, but no target has provider openai (the Usage and "
                   "Costs APIs are OpenAI's); unset it")


def test_region_default_file_env_and_target(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("region: eu-west-1\ntargets:\n  - {name: a}\n  - {name: b, region: ap-1}\n")
    s = load(["--config.file", str(path)], KEY)
    assert [t.region for t in s.targets] == ["eu-west-1", "ap-1"]
    s = load(["--config.file", str(path)], {**KEY, "PROBE_REGION": "us-east-1"})
    assert [t.region for t in s.targets] == ["us-east-1", "ap-1"]  # the target's own wins


def test_config_file_flag_beats_config_file_env(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("interval: 11\n")
    b.write_text("interval: 22\n")
    assert load([], {**KEY, "CONFIG_FILE": str(a)}).interval_seconds == 11
    s = load(["--config.file", str(b)], {**KEY, "CONFIG_FILE": str(a)})
    assert (s.interval_seconds, s.config_file) == (22, str(b))


def test_empty_environment_values_mean_unset():
    s = load([], {**KEY, "PROBE_INTERVAL_SEC": "", "OPENAI_BASE_URL": " ", "DEMO": ""})
    assert (s.interval_seconds, s.targets[0].base_url, s.demo) == (
        30.0, "https://api.openai.com/v1", False)


def test_config_check_flag():
    assert load([], KEY).config_check is False
    assert load(["--config.check"], KEY).config_check is True


# -- the environment's target ----------------------------------------------------------------

def test_environment_target():
    s = load([], {"OPENAI_API_KEY": " sk-live \n", "OPENAI_BASE_URL": "https://proxy.example/v1/",
                  "OPENAI_ORG_ID": "org-1", "OPENAI_PROJECT_ID": "proj_2",
                  "OPENAI_MODEL": "gpt-5-mini", "OPENAI_EMBEDDINGS_MODEL": "e",
                  "OPENAI_MODERATION_MODEL": "m", "OPENAI_IMAGE_MODEL": "i",
                  "PROBE_REGION": "eu-west-1", "PROBE_ENDPOINTS": "models, chat,chat"})
    (t,) = s.targets
    assert (t.name, t.provider, t.base_url, t.api_key, t.api_key_env) == (
        "openai", "openai", "https://proxy.example/v1", "sk-live", "OPENAI_API_KEY")
    assert (t.org_id, t.project_id, t.region) == ("org-1", "proj_2", "eu-west-1")
    assert t.models == {"chat": "gpt-5-mini", "embeddings": "e", "moderation": "m", "image": "i"}
    assert t.probes == ("chat", "models")


def test_flag_endpoints_beat_environment():
    s = load(["--probe.endpoints", "files"], {**KEY, "PROBE_ENDPOINTS": "chat"})
    assert s.targets[0].probes == ("files",)


def test_heavy_adds_images_to_defaults_and_allows_it():
    assert load([], KEY).targets[0].probes == DEFAULT_PROBES
    assert load(["--probe.heavy"], KEY).targets[0].probes == DEFAULT_PROBES + ("images",)
    s = load([], {**KEY, "PROBE_HEAVY": "yes", "PROBE_ENDPOINTS": "images"})
    assert s.targets[0].probes == ("images",)
    # heavy from the flag, images from the environment: fine too
    assert load(["--probe.heavy"], {**KEY, "PROBE_ENDPOINTS": "images"}).heavy


def test_listen_address_forms():
    def listen(value):
        s = load([], {**KEY, "LISTEN_ADDRESS": value})
        return s.listen_host, s.listen_port
    assert listen("0.0.0.0:9188") == ("0.0.0.0", 9188)
    assert listen(":9100") == ("0.0.0.0", 9100)
    assert listen("[::]:9100") == ("::", 9100)
    assert listen("localhost:65535") == ("localhost", 65535)


# -- demo rule ------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,env,demo", [
    ([], {}, True),  # nothing set: the key-less demo
    ([], {"OPENAI_API_KEY": ""}, True),  # empty is unset
    ([], {"OPENAI_API_KEY": "sk-x"}, False),
    ([], {"OPENAI_API_KEY": "sk-x", "DEMO": "1"}, True),
    (["--demo"], {"OPENAI_API_KEY": "sk-x"}, True),
    (["--no-demo"], {"OPENAI_API_KEY": "sk-x", "DEMO": "true"}, False),
    ([], {"DEMO": "1", "OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}, True),
    (["--config.file", fixture("valid-multi.yaml")], {"DEMO": "yes"}, True),  # no keys needed
    (["--config.file", fixture("valid-settings-only.yaml")], {}, True),  # no targets in file
])
def test_demo_rule(argv, env, demo):
    assert load(argv, env).demo is demo


@pytest.mark.parametrize("argv,env,want", [
    ([], {"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"},
     "OPENAI_API_KEY: not set; export it, or unset OPENAI_BASE_URL to run the key-less demo"),
    ([], {"DEMO": "0"},
     "OPENAI_API_KEY: not set; export it, or unset DEMO to run the key-less demo"),
    (["--no-demo"], {},
     "OPENAI_API_KEY: not set; export it, or drop --no-demo to run the key-less demo"),
    # a file with targets never falls back to the demo
    (["--config.file", fixture("valid-multi.yaml")], {"AZURE_EASTUS_KEY": "az"},
     "targets[0] (openai): environment variable OPENAI_API_KEY named by api_key_env is not set"),
    (["--config.file", fixture("valid-multi.yaml")], {"OPENAI_API_KEY": "sk-a"},
     "targets[1] (azure-eastus): environment variable AZURE_EASTUS_KEY named by api_key_env "
     "is not set"),
])
def test_missing_key(argv, env, want):
    assert error_of(argv, env) == want


def test_missing_key_with_default_key_env(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("targets:\n  - name: az\n    provider: azure\n"
                    "    base_url: https://r.openai.azure.com\n    api_version: '2024-10-21'\n"
                    "    models: {chat: c, embeddings: e}\n")
    assert error_of(["--config.file", str(path)], KEY) == (
        "targets[0] (az): environment variable AZURE_OPENAI_API_KEY (the default api_key_env "
        "for provider azure) is not set")
    t = load(["--config.file", str(path)], {"AZURE_OPENAI_API_KEY": "az"}).targets[0]
    assert (t.api_key, t.api_key_env) == ("az", "AZURE_OPENAI_API_KEY")


def test_value_errors_come_before_key_errors():
    assert error_of([], {"OPENAI_BASE_URL": "http://x/v1", "PROBE_ENDPOINTS": "images"}) == (
        f"PROBE_ENDPOINTS: 'images' {HEAVY}")


# -- file targets and the environment ------------------------------------------------------------

def write(tmp_path, text: str) -> list[str]:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return ["--config.file", str(path)]


AZURE = ("  - name: az\n    provider: azure\n    base_url: https://r.openai.azure.com\n"
         "    api_key_env: AZ\n    api_version: '2024-10-21'\n"
         "    models: {chat: dep-chat, embeddings: dep-embed}\n")
VLLM = ("  - name: vllm\n    provider: openai_compatible\n    base_url: http://vllm:8000/v1\n"
        "    models: {chat: llama, embeddings: bge}\n")
ENV_TARGET_VARS = {"OPENAI_API_KEY": "sk-a", "AZ": "az-b", "OPENAI_BASE_URL": "https://gw/v1",
                   "OPENAI_MODEL": "gpt-5-mini", "OPENAI_ORG_ID": "org-1",
                   "OPENAI_PROJECT_ID": "proj_1", "PROBE_ENDPOINTS": "chat,models"}


def test_environment_fills_in_openai_file_targets_only(tmp_path):
    argv = write(tmp_path, "targets:\n  - name: plain\n"
                           "  - {name: own, base_url: 'https://own/v1', models: {chat: c},"
                           " probes: [files], org_id: org-own}\n" + AZURE + VLLM)
    plain, own, az, vllm = load(argv, ENV_TARGET_VARS).targets
    # what the target leaves out comes from the environment ...
    assert (plain.base_url, plain.models["chat"], plain.org_id, plain.project_id) == (
        "https://gw/v1", "gpt-5-mini", "org-1", "proj_1")
    assert plain.probes == ("chat", "models")
    assert plain.models["embeddings"] == "text-embedding-3-small"  # built-in default
    # ... what it sets wins ...
    assert (own.base_url, own.models["chat"], own.probes, own.org_id, own.project_id) == (
        "https://own/v1", "c", ("files",), "org-own", "proj_1")
    # ... and other providers never read OPENAI_* (deployment names, local model names)
    assert (az.base_url, az.models, az.org_id, az.probes) == (
        "https://r.openai.azure.com", {"chat": "dep-chat", "embeddings": "dep-embed"}, "",
        ("chat", "chat_stream", "embeddings", "models"))
    assert (vllm.base_url, vllm.models, vllm.api_key, vllm.probes) == (
        "http://vllm:8000/v1", {"chat": "llama", "embeddings": "bge"}, "",
        ("chat", "chat_stream", "responses", "responses_stream", "embeddings", "models"))


def test_openai_key_never_sent_to_other_providers(tmp_path):
    argv = write(tmp_path, "targets:\n" + VLLM)
    (vllm,) = load(argv, {"OPENAI_API_KEY": CANARY}).targets
    assert (vllm.api_key, vllm.api_key_env) == ("", "")


def test_openai_compatible_key_from_named_variable(tmp_path):
    argv = write(tmp_path, "targets:\n" + VLLM + "    api_key_env: VLLM_KEY\n")
    assert load(argv, {"VLLM_KEY": "tok"}).targets[0].api_key == "tok"
    assert error_of(argv, {}) == (
        "targets[0] (vllm): environment variable VLLM_KEY named by api_key_env is not set")


@pytest.mark.parametrize("provider,heavy,want", [
    ("openai", False, DEFAULT_PROBES),
    ("openai", True, DEFAULT_PROBES + ("images",)),
    ("azure", False, ("chat", "chat_stream", "embeddings", "models")),
    ("azure", True, ("chat", "chat_stream", "embeddings", "models", "images")),
    ("openai_compatible", False, ("chat", "chat_stream", "responses", "responses_stream",
                                  "embeddings", "models")),
    ("openai_compatible", True, ("chat", "chat_stream", "responses", "responses_stream",
                                 "embeddings", "models")),
])
def test_default_probes_per_provider(provider, heavy, want):
    assert default_probes(provider, heavy) == want


def test_azure_heavy_needs_image_deployment(tmp_path):
    argv = write(tmp_path, "heavy: true\ntargets:\n" + AZURE)
    assert error_of(argv, {"AZ": "k"}) == (
        "config file targets[0].models.image: required for provider azure by probe 'images' "
        "(the deployment name)")


def test_heavy_with_images_in_file(tmp_path):
    argv = write(tmp_path, "heavy: true\ntargets:\n  - {name: a, probes: [images]}\n")
    assert load(argv, KEY).targets[0].probes == ("images",)


def test_images_from_environment_on_file_target_names_the_variable(tmp_path):
    argv = write(tmp_path, "targets:\n  - {name: a}\n")
    assert error_of(argv, {**KEY, "PROBE_ENDPOINTS": "images"}) == (
        f"PROBE_ENDPOINTS: 'images' {HEAVY}")


# -- prices ---------------------------------------------------------------------------------------

def test_shipped_prices_cover_the_default_models():
    prices = shipped_prices()
    s = load([], KEY)
    for kind in MODEL_KINDS:
        assert s.targets[0].models[kind] in prices
    assert prices["gpt-4o-mini"] == {"input": 0.15, "output": 0.60}
    assert prices["text-embedding-3-small"] == {"input": 0.02, "output": 0.0}
    assert s.prices == prices


def test_file_prices_merge_over_shipped(tmp_path):
    argv = write(tmp_path, "prices:\n  gpt-4o-mini: {input: 1, output: 2}\n"
                           "  my-model: {input: 0.5, output: 0}\n")
    prices = load(argv, KEY).prices
    assert prices["gpt-4o-mini"] == {"input": 1.0, "output": 2.0}
    assert prices["my-model"] == {"input": 0.5, "output": 0.0}
    assert prices["gpt-4o"] == shipped_prices()["gpt-4o"]


# -- redaction ---------------------------------------------------------------------------------

def test_redacted_never_contains_a_secret():
    s = load(["--config.file", fixture("valid-multi.yaml")],
             {"OPENAI_API_KEY": CANARY, "AZURE_EASTUS_KEY": CANARY[::-1],
              "WEB_AUTH_TOKEN": "tok-" + CANARY})
    assert s.targets[0].api_key == CANARY and s.web_auth_token == "tok-" + CANARY
    text = json.dumps(redacted(s))  # JSON-able
    assert_no_canary(text)
    assert CANARY[::-1][:12] not in text
    assert_no_canary(repr(s))  # the dataclass repr hides them too
    view = redacted(s)
    assert view["web_auth_token"] == "***"
    assert [t["api_key"] for t in view["targets"]] == ["***", "***", ""]
    assert view["targets"][2]["headers"] == {"X-Team": "***"}
    assert view["targets"][0]["probes"] == list(DEFAULT_PROBES)
    assert view["listen_port"] == 9188 and view["interval_seconds"] == 60
    # prices only for the models in use; None marks a model without a price
    assert view["prices"]["gpt-4.1-mini"] == {"input": 0.4, "output": 1.6}
    assert view["prices"]["gpt-4o-mini-prod"] is None
    assert "gpt-4o" not in view["prices"]


def test_redacted_unset_secrets_are_empty():
    view = redacted(load([], {}))
    assert view["web_auth_token"] == "" and view["targets"][0]["api_key"] == ""
    assert view["demo"] is True


def test_settings_fields_are_all_in_redacted():
    view = redacted(load([], KEY))
    assert set(view) == {f for f in Settings.__dataclass_fields__}


# -- the documentation stays true ---------------------------------------------------------------

DOC = os.path.join(ROOT, "docs", "configuration.md")


def doc_yaml_blocks() -> list[str]:
    with open(DOC, encoding="utf-8") as fh:
        return re.findall(r"```yaml\n(.*?)```", fh.read(), re.S)


@pytest.mark.parametrize("index", range(len(doc_yaml_blocks())))
def test_every_yaml_example_in_the_docs_loads(tmp_path, index):
    argv = write(tmp_path, doc_yaml_blocks()[index])
    env = {name: "k" for name in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_EASTUS_KEY",
                                  "AZURE_SWEDEN_KEY", "VLLM_API_KEY")}
    assert load(argv, env).targets


def test_docs_name_every_setting():
    with open(DOC, encoding="utf-8") as fh:
        doc = fh.read()
    for spec in _SPECS:
        for name in (spec.yaml, spec.env, spec.flag):
            if name:
                assert f"`{name}`" in doc, name
    for flag in ("--config.file", "--config.check", "CONFIG_FILE", "api_key_env",
                 "api_version", "headers", "no-probe.heavy", "--no-demo"):
        assert flag in doc, flag

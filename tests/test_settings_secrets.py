"""Secrets in settings: a key pasted into the wrong setting is refused and never echoed.

Cases tried (issue 10, item 1), so the next audit can re-run them:
- the six settings of the issue (OPENAI_BASE_URL, OPENAI_ORG_ID, OPENAI_MODEL,
  PROBE_ENDPOINTS, LISTEN_ADDRESS, PROBE_REGION) set to the canary key, through the real
  command line (`--config.check`): 6 cases;
- every row of ``_SPECS`` that is not a secret, set to the canary key in each place it can be
  set (environment, flag, config file), and to the value of a non-``sk-`` secret (an
  Azure-style hex key in a target's ``api_key_env``, and WEB_AUTH_TOKEN): 3 sweeps;
- every key of a config-file target set to the canary key;
- an unknown flag and a flag value carrying the key (argparse's own messages).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from exporter.settings import _SPECS, ConfigError, load
from exporter.settings.parsers import _bool, _secret
from tests.conftest import CANARY_KEY, clean_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A key that does not look like an OpenAI key: only its being a configured secret gives
# it away (Azure keys are 32 hex digits).
AZURE_KEY = "4f1c2b3a9d8e7f6a5b4c3d2e1f0a9b8c"
TOKEN = "web-token-5b0e9c7a1d3f"


def fragments(secret: str, size: int = 8) -> list[str]:
    """Every run of `size` characters of the secret: none may appear in a message."""
    return [secret[i:i + size] for i in range(len(secret) - size + 1)]


def assert_hidden(text: str, *secrets: str) -> None:
    for secret in secrets:
        for part in fragments(secret):
            assert part not in text, (part, text)


def error_of(argv: list[str], environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load(argv, environ)
    return str(info.value)


ISSUE_SETTINGS = ["OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_MODEL", "PROBE_ENDPOINTS",
                  "LISTEN_ADDRESS", "PROBE_REGION"]


@pytest.mark.parametrize("name", ISSUE_SETTINGS)
def test_key_pasted_into_a_setting_exits_2_naming_it_without_the_key(name):
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.check"], cwd=ROOT, capture_output=True,
        timeout=30, env=clean_env(OPENAI_API_KEY=CANARY_KEY, **{name: CANARY_KEY}))
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"openai-exporter: error: {name}: "), err
    assert_hidden(err + proc.stdout.decode(), CANARY_KEY)


def _non_secret_specs():
    return [s for s in _SPECS if s.parse is not _secret]


def _places(spec):
    """(argv, env, config-file text, the name a message must use) for each place."""
    if spec.env:
        yield [], {spec.env: "{v}"}, None, spec.env
    if spec.flag and spec.parse is not _bool:  # --x / --no-x take no value
        yield [spec.flag, "{v}"], {}, None, spec.flag
    if spec.yaml:
        section, _, key = spec.yaml.rpartition(".")
        text = f"{section}:\n  {key}: '{{v}}'\n" if section else f"{key}: '{{v}}'\n"
        yield [], {}, text, f"config file {spec.yaml}"


SWEEP = [(spec.key, *place) for spec in _non_secret_specs() for place in _places(spec)]


@pytest.mark.parametrize("value,secret_env", [
    (CANARY_KEY, {"OPENAI_API_KEY": CANARY_KEY}),
    (AZURE_KEY, {"OPENAI_API_KEY": "sk-x", "AZ_KEY": AZURE_KEY}),
    (TOKEN, {"OPENAI_API_KEY": "sk-x", "WEB_AUTH_TOKEN": TOKEN}),
], ids=["sk-key", "target-key", "web-token"])
@pytest.mark.parametrize("key,argv,env,text,name", SWEEP, ids=[c[-1] for c in SWEEP])
def test_every_setting_refuses_a_secret_without_showing_it(tmp_path, key, argv, env, text,
                                                           name, value, secret_env):
    # A target names AZ_KEY, so its value is a configured secret.
    config = "targets:\n  - {name: t, api_key_env: AZ_KEY}\n" if "AZ_KEY" in secret_env else ""
    if text is not None:
        config += text.replace("{v}", value)
    path = tmp_path / "c.yaml"
    path.write_text(config)
    argv = ["--config.file", str(path)] + [a.replace("{v}", value) for a in argv]
    environ = {**secret_env, **{k: v.replace("{v}", value) for k, v in env.items()}}
    got = error_of(argv, environ)
    assert got.startswith(name + ": ") or got.startswith(name + "."), got
    assert_hidden(got, value)


TARGET_KEYS = ["name", "base_url", "region", "org_id", "project_id", "models.chat",
               "probes"]


@pytest.mark.parametrize("key", TARGET_KEYS)
def test_file_target_refuses_a_key_without_showing_it(tmp_path, key):
    section, _, sub = key.partition(".")
    value = f"{{{sub}: '{CANARY_KEY}'}}" if sub else f"'{CANARY_KEY}'"
    if key == "probes":
        value = f"['{CANARY_KEY}']"
    name = "" if key == "name" else "name: t, "
    path = tmp_path / "c.yaml"
    path.write_text(f"targets:\n  - {{{name}{section}: {value}}}\n")
    got = error_of(["--config.file", str(path)], {"OPENAI_API_KEY": "sk-x"})
    assert got.startswith(f"config file targets[0].{section}"), got
    assert_hidden(got, CANARY_KEY)


def test_flags_argparse_refuses_are_one_line_without_the_key():
    got = error_of([f"--probe.intervall={CANARY_KEY}"], {"OPENAI_API_KEY": "sk-x"})
    assert got.startswith("unrecognized arguments: --probe.intervall="), got
    assert_hidden(got, CANARY_KEY)
    got = error_of(["--probe.interval"], {"OPENAI_API_KEY": "sk-x"})
    assert got == "argument --probe.interval: expected one argument"


def test_a_secret_cut_short_in_a_message_is_hidden_too():
    # Messages show at most 57 characters of a value: a long key after a prefix is cut,
    # and the part that is shown must still be hidden.
    key = "k" * 40 + "Z9" * 30
    got = error_of([], {"OPENAI_API_KEY": key, "OPENAI_BASE_URL": "ftp://x/" + key})
    assert got.startswith("OPENAI_BASE_URL: "), got
    assert_hidden(got, key)


def test_secrets_still_work_where_they_belong():
    s = load([], {"OPENAI_API_KEY": CANARY_KEY, "WEB_AUTH_TOKEN": TOKEN,
                  "OPENAI_MODEL": "gpt-4o-mini"})
    assert (s.targets[0].api_key, s.web_auth_token) == (CANARY_KEY, TOKEN)
    # a short secret ("x" in CI) never makes an ordinary value look like one
    s = load([], {"OPENAI_API_KEY": "x", "PROBE_REGION": "x"})
    assert s.targets[0].region == "x"

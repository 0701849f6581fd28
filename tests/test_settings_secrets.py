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


# -- secrets from files: <NAME>_FILE ------------------------------------------------------
# Cases tried (issue 10, item 3): OPENAI_API_KEY_FILE, WEB_AUTH_TOKEN_FILE, a target's
# api_key_env and a provider's default key variable read from files (4); both NAME and
# NAME_FILE set (3); a file that is missing, a directory, a device, empty, blank, too big,
# not UTF-8, of two lines, with a space or a non-ASCII character (10); a key variable with
# a non-ASCII character or a space (2); a key from a file pasted into another setting (1);
# through the command line (2).

def write_secret(tmp_path, content: str | bytes, name: str = "key") -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


def test_keys_and_token_from_files(tmp_path):
    key = write_secret(tmp_path, CANARY_KEY + "\n", "openai")
    token = write_secret(tmp_path, f"  {TOKEN}\r\n", "token")
    s = load([], {"OPENAI_API_KEY_FILE": key, "WEB_AUTH_TOKEN_FILE": token})
    assert (s.targets[0].api_key, s.web_auth_token, s.demo) == (CANARY_KEY, TOKEN, False)


def test_target_keys_from_files(tmp_path):
    az = write_secret(tmp_path, AZURE_KEY, "az")
    default = write_secret(tmp_path, AZURE_KEY[::-1], "default")
    path = tmp_path / "c.yaml"
    path.write_text(
        "targets:\n"
        "  - {name: named, provider: azure, base_url: 'https://a.openai.azure.com',\n"
        "     api_version: '2024-10-21', api_key_env: AZ_KEY, models: {chat: c, embeddings: e}}\n"
        "  - {name: default, provider: azure, base_url: 'https://b.openai.azure.com',\n"
        "     api_version: '2024-10-21', models: {chat: c, embeddings: e}}\n")
    s = load(["--config.file", str(path)],
             {"AZ_KEY_FILE": az, "AZURE_OPENAI_API_KEY_FILE": default})
    assert [t.api_key for t in s.targets] == [AZURE_KEY, AZURE_KEY[::-1]]


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "WEB_AUTH_TOKEN", "AZ_KEY"])
def test_a_secret_and_its_file_both_set_is_an_error(tmp_path, name):
    path = tmp_path / "c.yaml"
    path.write_text("targets:\n  - {name: t, api_key_env: AZ_KEY}\n")
    env = {"OPENAI_API_KEY": "sk-x", "AZ_KEY": "az-key-1", name: CANARY_KEY,
           f"{name}_FILE": write_secret(tmp_path, "other-secret")}
    got = error_of(["--config.file", str(path)], env)
    assert got == f"{name} and {name}_FILE are both set; set only one"


def _bad_files(tmp_path):
    yield "missing", str(tmp_path / "nope"), "cannot read it: No such file or directory"
    yield "directory", str(tmp_path), "cannot read it: not a regular file"
    yield "device", "/dev/zero", "cannot read it: not a regular file"
    yield "empty", write_secret(tmp_path, ""), "the file is empty"
    yield "blank", write_secret(tmp_path, " \n\n"), "the file is empty"
    yield "too-big", write_secret(tmp_path, CANARY_KEY * 1300), (
        "cannot read it: larger than 64 KiB (it must hold only the secret)")
    yield "latin-1", write_secret(tmp_path, CANARY_KEY.encode() + b"\xe9"), (
        "cannot read it: not UTF-8 text")
    alone = "must hold only the secret, printable ASCII on one line (the content is not shown)"
    yield "two-lines", write_secret(tmp_path, f"{CANARY_KEY}\n{CANARY_KEY}\n"), alone
    yield "space", write_secret(tmp_path, f"Bearer {CANARY_KEY}"), alone
    yield "non-ascii", write_secret(tmp_path, CANARY_KEY + "é"), alone


@pytest.mark.parametrize("case", ["missing", "directory", "device", "empty", "blank",
                                  "too-big", "latin-1", "two-lines", "space", "non-ascii"])
@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "WEB_AUTH_TOKEN"])
def test_a_bad_secret_file_names_the_variable_never_the_content(tmp_path, name, case):
    _, path, want = next(c for c in _bad_files(tmp_path) if c[0] == case)
    env = {f"{name}_FILE": path}
    if name != "OPENAI_API_KEY":
        env["OPENAI_API_KEY"] = "sk-x"
    got = error_of([], env)
    assert got == f"{name}_FILE={path}: {want}"
    assert_hidden(got, CANARY_KEY)


def test_a_secret_file_path_that_is_not_a_path_is_not_shown(tmp_path):
    # Someone pasted the key itself into AZ_KEY_FILE: no "/" in it, so it is not shown.
    path = tmp_path / "c.yaml"
    path.write_text("targets:\n  - {name: t, api_key_env: AZ_KEY}\n")
    got = error_of(["--config.file", str(path)], {"AZ_KEY_FILE": AZURE_KEY})
    assert got == ("AZ_KEY_FILE: cannot read the file it names: No such file or directory")


@pytest.mark.parametrize("value", ["sk-ключ-0123456789", "sk-two words", "sk-tab\there"])
def test_a_key_that_cannot_go_in_a_header_is_refused_unseen(value):
    got = error_of([], {"OPENAI_API_KEY": value})
    assert got == "OPENAI_API_KEY: must be printable ASCII without spaces (not shown)"
    got = error_of([], {"OPENAI_API_KEY": "sk-x", "WEB_AUTH_TOKEN": value})
    assert got == "WEB_AUTH_TOKEN: must be printable ASCII without spaces (not shown)"


def test_a_key_from_a_file_pasted_elsewhere_is_refused_unseen(tmp_path):
    key = write_secret(tmp_path, AZURE_KEY)
    got = error_of([], {"OPENAI_API_KEY_FILE": key, "OPENAI_MODEL": AZURE_KEY})
    assert got == ("OPENAI_MODEL: holds the value of OPENAI_API_KEY (not shown); a secret "
                   "goes only in its own variable")


def test_secret_files_through_the_command_line(tmp_path):
    key = write_secret(tmp_path, CANARY_KEY + "\n")
    ok = subprocess.run([sys.executable, "-m", "exporter", "--config.check"], cwd=ROOT,
                        env=clean_env(OPENAI_API_KEY_FILE=key), capture_output=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    missing = str(tmp_path / "missing")
    bad = subprocess.run([sys.executable, "-m", "exporter", "--config.check"], cwd=ROOT,
                         env=clean_env(OPENAI_API_KEY_FILE=missing), capture_output=True,
                         timeout=30)
    assert bad.returncode == 2
    assert bad.stderr.decode() == (f"openai-exporter: error: OPENAI_API_KEY_FILE={missing}: "
                                   "cannot read it: No such file or directory\n")

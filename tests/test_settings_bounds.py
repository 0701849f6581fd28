"""Every number a user can set has bounds, and every bad config file is one line.

Cases tried (issue 10, item 2), so the next audit can re-run them:
- each number (interval, timeout, retention, max events, max workers) at 1e-9, 0.001, 1e15,
  1e300, nan, inf, -0 and just past each bound, in every place it can be set (env, flag,
  file): 47 values, 110 refusals; 11 values at the bounds accepted; a price at 1e300, a
  400-digit integer and 100001: 3 refusals;
- the fast-interval override (`--probe.allow-fast` / PROBE_ALLOW_FAST): 6 cases;
- listen addresses: 12 refused (999.1.1.1, 1.2.3, bad host names) and 6 accepted;
- config files: nested 500 levels, an integer of 4,301 digits, one of 400 digits (too big
  for a float), a huge float, a bad date, NUL bytes, random binary junk (seeded), an endless
  file (/dev/zero), a directory: 9 cases, in-process and through the command line;
- the listen socket: a port in use, a host that does not resolve (at start and with
  --config.check): 3 cases through the command line.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys

import pytest

from exporter.settings import ConfigError, load
from tests.conftest import clean_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = {"OPENAI_API_KEY": "sk-test"}

FAST = "from 0.05 with --probe.allow-fast or PROBE_ALLOW_FAST=1, for tests"
INTERVAL_ENV = f"must be a number of seconds from 1 to 86400 ({FAST})"
INTERVAL = ("must be a number of seconds from 1 to 86400 or a duration such as 30s or 1m "
            f"({FAST})")
TIMEOUT_ENV = "must be a number of milliseconds from 10 to 300000 (5 minutes)"
TIMEOUT = ("must be a number of seconds from 0.01 to 300 (5 minutes) or a duration such as "
           "500ms or 15s")
RETENTION = "must be a number of hours from 0.25 to 720 (30 days)"
MAX_EVENTS = "must be a whole number 1-1000000"
MAX_WORKERS = "must be a whole number 1-64"
LISTEN = "must be host:port, [ipv6]:port or :port with a port 1-65535"
BAD_HOST = "must name an IPv4 address or a valid host name"

ABSURD = ["1e-9", "0.001", "1e15", "1e300", "nan", "inf", "-0"]


def error_of(argv: list[str], environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load(argv, environ)
    return str(info.value)


def places(tmp_path, env: str, flag: str | None, yaml_key: str, value: str):
    """(argv, environ, the name in the message) for the value set in each place."""
    yield [], {env: value}, env
    if flag:
        yield [flag, value], {}, flag
    if len(value) > 4300:  # not even YAML reads it: see BAD_FILES
        return
    path = tmp_path / "c.yaml"
    section, _, key = yaml_key.rpartition(".")
    path.write_text(f"{section}:\n  {key}: {value}\n" if section else f"{key}: {value}\n")
    yield ["--config.file", str(path)], {}, f"config file {yaml_key}"


NUMBERS = [
    # env, flag, yaml, message (env), message (flag, file), refused, accepted (env units)
    ("PROBE_INTERVAL_SEC", "--probe.interval", "interval", INTERVAL_ENV, INTERVAL,
     ABSURD + ["0.5", "86401"], ["1", "86400", "60"]),
    ("HTTP_TIMEOUT_MS", "--probe.timeout", "timeout", TIMEOUT_ENV, TIMEOUT,
     ABSURD + ["300001"], ["10", "300000"]),
    ("HISTORY_RETENTION_HOURS", None, "history.retention_hours", RETENTION, RETENTION,
     ABSURD + ["0.2", "721"], ["0.25", "720"]),
    ("HISTORY_MAX_EVENTS", None, "history.max_events", MAX_EVENTS, MAX_EVENTS,
     ABSURD + ["0", "1000001", "9" * 4301, "1e3"], ["1", "1000000"]),
    ("PROBE_MAX_WORKERS", None, "max_workers", MAX_WORKERS, MAX_WORKERS,
     ABSURD + ["0", "65", "9" * 400], ["1", "64"]),
]
REFUSED = [(env, flag, y, m_env, m, v) for env, flag, y, m_env, m, bad, _ in NUMBERS for v in bad]
ACCEPTED = [(env, y, v) for env, _, y, _, _, _, good in NUMBERS for v in good]


@pytest.mark.parametrize("env,flag,yaml_key,msg_env,msg,value", REFUSED,
                         ids=[f"{c[0]}={c[-1][:12]}" for c in REFUSED])
def test_absurd_numbers_are_refused_in_one_line(tmp_path, env, flag, yaml_key, msg_env, msg,
                                                value):
    for argv, environ, name in places(tmp_path, env, flag, yaml_key, value):
        got = error_of(argv, {**KEY, **environ})
        want = msg_env if name == env else msg
        assert got.startswith(f"{name}: {want}, got "), got
        assert "\n" not in got and len(got) < 400, got


@pytest.mark.parametrize("env,yaml_key,value", ACCEPTED, ids=[f"{c[0]}={c[2]}" for c in ACCEPTED])
def test_numbers_at_the_bounds_are_accepted(env, yaml_key, value):
    load([], {**KEY, env: value})


def test_timeout_flag_and_file_take_seconds_within_bounds():
    assert load(["--probe.timeout", "300"], KEY).timeout_seconds == 300
    assert load(["--probe.timeout", "10ms"], KEY).timeout_seconds == 0.01
    assert error_of([], {**KEY, "HTTP_TIMEOUT_MS": "9"}) == (
        f"HTTP_TIMEOUT_MS: {TIMEOUT_ENV}, got '9'")
    assert error_of(["--probe.timeout", "9ms"], KEY) == f"--probe.timeout: {TIMEOUT}, got '9ms'"
    assert error_of(["--probe.timeout", "5m1s"], KEY).startswith(f"--probe.timeout: {TIMEOUT}")


def test_a_price_has_an_upper_bound(tmp_path):
    path = tmp_path / "c.yaml"
    for value in ("1e300", "9" * 400, "100001"):
        path.write_text(f"prices:\n  m: {{input: {value}, output: 1}}\n")
        got = error_of(["--config.file", str(path)], KEY)
        assert got.startswith("config file prices.m.input: must be a number 0-100000 (USD per "
                              "1M tokens), got "), got
        assert len(got) < 200
    path.write_text("prices:\n  m: {input: 100000, output: 0}\n")
    assert load(["--config.file", str(path)], KEY).prices["m"]["input"] == 100000


# -- the interval floor and its override for tests --------------------------------------

@pytest.mark.parametrize("argv,env,interval", [
    (["--probe.allow-fast"], {"PROBE_INTERVAL_SEC": "0.05"}, 0.05),
    ([], {"PROBE_ALLOW_FAST": "1", "PROBE_INTERVAL_SEC": "0.2"}, 0.2),
    (["--probe.allow-fast", "--probe.interval", "100ms"], {}, 0.1),
])
def test_allow_fast_lowers_the_floor_for_tests(argv, env, interval):
    assert load(argv, {**KEY, **env}).interval_seconds == interval


@pytest.mark.parametrize("argv,env,want", [
    ([], {"PROBE_INTERVAL_SEC": "0.5"}, f"PROBE_INTERVAL_SEC: {INTERVAL_ENV}, got 0.5"),
    (["--no-probe.allow-fast"], {"PROBE_ALLOW_FAST": "1", "PROBE_INTERVAL_SEC": "0.5"},
     f"PROBE_INTERVAL_SEC: {INTERVAL_ENV}, got 0.5"),
    (["--probe.allow-fast", "--probe.interval", "0.001"], {},
     f"--probe.interval: {INTERVAL}, got '0.001'"),
])
def test_fast_intervals_need_the_override_and_stop_at_its_floor(argv, env, want):
    assert error_of(argv, {**KEY, **env}) == want


# -- listen addresses ---------------------------------------------------------------------

@pytest.mark.parametrize("value,want", [
    ("999.1.1.1:9188", BAD_HOST), ("256.0.0.1:9188", BAD_HOST), ("1.2.3:9188", BAD_HOST),
    ("1.2.3.4.5:9188", BAD_HOST), ("-host:9188", BAD_HOST), ("host-:9188", BAD_HOST),
    ("a..b:9188", BAD_HOST), ("under_score:9188", BAD_HOST), ("a" * 64 + ":9188", BAD_HOST),
    (".".join(["a" * 60] * 5) + ":9188", BAD_HOST), ("host.123:9188", BAD_HOST),
    ("9188:", LISTEN),
])
def test_listen_address_is_validated_up_front(value, want):
    got = error_of([], {**KEY, "LISTEN_ADDRESS": value})
    assert got.startswith(f"LISTEN_ADDRESS: {want}, got "), got


@pytest.mark.parametrize("value", ["127.0.0.1:9188", "localhost:9188", "my-host.example.com:1",
                                   "a" * 63 + ":9188", "10.0.0.1:65535", "[::1]:9188"])
def test_valid_listen_addresses(value):
    load([], {**KEY, "LISTEN_ADDRESS": value})


# -- config files the YAML parser chokes on ----------------------------------------------

def _junk() -> bytes:
    rnd = random.Random(10)
    # Valid UTF-8 with control characters: it reaches the YAML reader, not the decoder.
    return "".join(chr(rnd.choice([0, 1, 7, 27, 0xFFFE, 0x85, 65, 10])) for _ in range(500)
                   ).encode("utf-8", "surrogatepass")


BAD_FILES = [
    ("nested", "interval: " + "[" * 500 + "]" * 500 + "\n",
     "invalid YAML at line 1: nested deeper than 50 levels"),
    ("int-4301-digits", "interval: " + "9" * 4301 + "\n",
     "invalid YAML at line 1: a number with more than 4300 digits"),
    ("int-400-digits", "interval: " + "9" * 400 + "\n", None),
    ("huge-float", "interval: 1.0e+999\n", None),
    ("bad-date", "interval: 2024-13-45\n", "invalid YAML at line 1: cannot read '2024-13-45'"),
    ("nul", "interval: 1\x00\n", "invalid YAML"),
    ("junk", _junk(), "invalid YAML"),
]


@pytest.mark.parametrize("name,content,want", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_every_yaml_failure_is_one_line(tmp_path, name, content, want):
    path = tmp_path / "c.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    got = error_of(["--config.file", str(path)], KEY)
    assert "\n" not in got and len(got) < 400, got
    if want is None:  # an absurd number: the interval's own message
        assert got.startswith(f"config file interval: {INTERVAL}, got "), got
    else:
        assert got.startswith(f"config file {path}: {want}"), got


def test_endless_config_file_is_refused():
    assert error_of(["--config.file", "/dev/zero"], KEY) == (
        "config file /dev/zero: cannot read it: larger than 1 MiB")


@pytest.mark.parametrize("name", ["nested", "int-4301-digits", "int-400-digits"])
def test_yaml_failures_exit_2_through_the_command_line(tmp_path, name):
    content = next(c for n, c, _ in BAD_FILES if n == name)
    path = tmp_path / "c.yaml"
    path.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "exporter", "--config.check", "--config.file",
                           str(path)], cwd=ROOT, env=clean_env(**KEY), capture_output=True,
                          timeout=30)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


# -- the listen socket: refused at start like any other bad setting ----------------------

def _run(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "exporter", *args], cwd=ROOT, timeout=30,
                          env=clean_env(**KEY, **env), capture_output=True)
    return proc.returncode, proc.stderr.decode()


def test_port_in_use_exits_2_with_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = _run({"LISTEN_ADDRESS": f"127.0.0.1:{port}"})
    assert code == 2, err
    assert err == (f"openai-exporter: error: LISTEN_ADDRESS=127.0.0.1:{port}: cannot listen: "
                   "Address already in use\n")


@pytest.mark.parametrize("args", [(), ("--config.check",)])
def test_unresolvable_listen_host_exits_2_with_one_line(args):
    code, err = _run({"LISTEN_ADDRESS": "no-such-host.invalid:9188"}, *args)
    assert code == 2, err
    assert err.startswith("openai-exporter: error: LISTEN_ADDRESS=no-such-host.invalid:9188: "
                          "cannot resolve the host: "), err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("db_file,why", [
    ("/nonexistent/dir/h.db", "its directory /nonexistent/dir does not exist"),
    (".", "not a regular file"),
])
def test_config_check_refuses_a_db_file_start_up_would_refuse(db_file, why):
    code, err = _run({"ENABLE_DB": "1", "DB_FILE": db_file}, "--config.check")
    assert code == 2, err
    assert err == f"openai-exporter: error: DB_FILE={db_file}: cannot use it: {why}\n"


def test_config_check_accepts_a_db_file_that_does_not_exist_yet(tmp_path):
    code, err = _run({"ENABLE_DB": "1", "DB_FILE": str(tmp_path / "new.db")}, "--config.check")
    assert code == 0, err
    assert not (tmp_path / "new.db").exists()  # a check creates nothing


def _numeric_specs():
    """Every row of _SPECS whose value is a number (it parses "60" to an int or float):
    a setting added later is held to the same rule without a line here."""
    from exporter.settings import _SPECS

    for spec in _SPECS:
        parse = spec.env_parse or spec.parse
        try:
            value = parse("60", spec.env or spec.key)
        except ConfigError:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            yield spec


@pytest.mark.parametrize("spec", list(_numeric_specs()), ids=lambda s: s.key)
def test_every_number_setting_refuses_absurd_values(spec):
    for parse in filter(None, (spec.parse, spec.env_parse)):
        for value in ABSURD[2:] + ["1e-300", "-1", "9" * 400]:
            with pytest.raises(ConfigError):
                parse(value, spec.env or spec.key)

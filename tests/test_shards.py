"""Sharding targets across exporters: a stable owner per target, the shard settings in
every place they can be set, the primary flag, and a sharded fleet end to end."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time

import pytest
import requests

from exporter.fake import FakeUpstream
from exporter.metrics import ExporterMetrics
from exporter.settings import MAX_SHARDS, ConfigError, describe, load, redacted, shard_of
from tests.conftest import clean_env
from tests.test_main import Daemon

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = {"OPENAI_API_KEY": "sk-test"}
NAMES = [f"target-{i}" for i in range(40)]

# Pinned: the owner of a target must never change with the machine, the Python version
# or a refactoring, or two instances of different builds would both (or neither) probe it.
GOLDEN = {
    "openai": [1, 2, 2, 4, 5, 322],
    "azure-eastus": [0, 0, 0, 0, 0, 74],
    "local-vllm": [0, 0, 0, 4, 8, 866],
    "ollama": [0, 0, 0, 0, 0, 369],
    "azure-sweden": [1, 1, 3, 3, 9, 359],
}
GOLDEN_COUNTS = (2, 3, 4, 5, 10, 1000)


def _config(tmp_path, names=NAMES, extra: str = "") -> str:
    path = tmp_path / "fleet.yaml"
    path.write_text(extra + "targets:\n" + "".join(
        f"  - {{name: {n}, provider: openai_compatible, base_url: 'http://127.0.0.1:9/v1', "
        "probes: [models]}\n" for n in names))
    return str(path)


def error_of(argv: list[str], environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load(argv, environ)
    return str(info.value)


# -- the hash ----------------------------------------------------------------------------

def test_owner_is_pinned():
    for name, owners in GOLDEN.items():
        assert [shard_of(name, c) for c in GOLDEN_COUNTS] == owners, name
    assert all(shard_of(name, 1) == 0 for name in GOLDEN)


def test_owner_is_the_same_in_another_process_with_another_hash_seed():
    # hash() of a str changes with PYTHONHASHSEED; the owner must not.
    code = ("import json; from exporter.settings import shard_of; "
            f"print(json.dumps([[shard_of(n, c) for c in {list(GOLDEN_COUNTS)}] "
            f"for n in {list(GOLDEN)}]))")
    for seed in ("1", "4242"):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}, check=True, text=True)
        assert json.loads(out.stdout) == list(GOLDEN.values())


def test_growing_the_count_moves_targets_only_to_the_new_shard():
    names = [f"t{i}" for i in range(2000)]
    for count in range(1, 12):
        before = {n: shard_of(n, count) for n in names}
        after = {n: shard_of(n, count + 1) for n in names}
        moved = [n for n in names if before[n] != after[n]]
        assert all(after[n] == count for n in moved)
        # About 1/(count+1) of them move (a modulo hash would move most).
        assert abs(len(moved) / len(names) - 1 / (count + 1)) < 0.05, (count, len(moved))


def test_shards_are_balanced():
    counts = collections.Counter(shard_of(f"target-{i}", 4) for i in range(1000))
    assert sorted(counts) == [0, 1, 2, 3]
    assert all(200 <= n <= 300 for n in counts.values()), counts


def test_shard_of_refuses_a_count_out_of_bounds():
    for count in (0, -1, MAX_SHARDS + 1):
        with pytest.raises(ValueError):
            shard_of("openai", count)


# -- the settings: every target owned by exactly one shard ------------------------------

@pytest.mark.parametrize("count", range(1, 9))
def test_every_target_is_owned_by_exactly_one_shard(tmp_path, count):
    path = _config(tmp_path)
    owners: dict[str, list[int]] = {n: [] for n in NAMES}
    for index in range(count):
        settings = load(["--config.file", path],
                        {"SHARD_COUNT": str(count), "SHARD_INDEX": str(index)})
        assert (settings.shard_index, settings.shard_count) == (index, count)
        assert settings.targets_on_other_shards == len(NAMES) - len(settings.targets)
        for t in settings.targets:
            owners[t.name].append(index)
            assert shard_of(t.name, count) == index
    assert all(len(o) == 1 for o in owners.values()), owners


def test_a_target_keeps_its_settings_on_its_shard(tmp_path):
    path = _config(tmp_path)
    full = {t.name: t for t in load(["--config.file", path], {}).targets}
    sharded = load(["--config.file", path, "--shard.count", "3", "--shard.index", "2"], {})
    assert sharded.targets and all(t == full[t.name] for t in sharded.targets)
    # In the file's order.
    assert [t.name for t in sharded.targets] == [n for n in NAMES if shard_of(n, 3) == 2]


@pytest.mark.parametrize("argv,env,file,want", [
    ([], {"SHARD_INDEX": "2", "SHARD_COUNT": "3"}, "", (2, 3)),
    (["--shard.index", "1", "--shard.count", "2"], {}, "", (1, 2)),
    ([], {}, "shard: {index: 4, count: 5}\n", (4, 5)),
    # The file holds the count for every instance, the environment each one's index.
    ([], {"SHARD_INDEX": "3"}, "shard: {count: 4}\n", (3, 4)),
    # Flags over the environment over the file.
    (["--shard.index", "0"], {"SHARD_INDEX": "1"}, "shard: {index: 2, count: 3}\n", (0, 3)),
    ([], {"SHARD_COUNT": "6"}, "shard: {index: 5, count: 3}\n", (5, 6)),
    ([], {}, "", (0, 1)),
    ([], {"SHARD_INDEX": "", "SHARD_COUNT": ""}, "", (0, 1)),  # VAR= is unset
    ([], {"SHARD_INDEX": str(MAX_SHARDS - 1), "SHARD_COUNT": str(MAX_SHARDS)}, "",
     (MAX_SHARDS - 1, MAX_SHARDS)),
])
def test_shard_settings_in_every_place(tmp_path, argv, env, file, want):
    if file:
        path = tmp_path / "c.yaml"
        path.write_text(file)
        argv = [*argv, "--config.file", str(path)]
    settings = load(argv, {**KEY, **env})
    assert (settings.shard_index, settings.shard_count) == want


INDEX = "must be a whole number 0-999 (this instance's shard, below the shard count)"
COUNT = "must be a whole number 1-1000"
SHARD_COUNT_WHERE = "SHARD_COUNT, --shard.count or shard.count in the config file"


@pytest.mark.parametrize("argv,env,want", [
    ([], {"SHARD_INDEX": "3", "SHARD_COUNT": "3"},
     "SHARD_INDEX: must be below the shard count 3 (SHARD_COUNT), got 3"),
    ([], {"SHARD_INDEX": "1"},
     f"SHARD_INDEX: must be below the shard count 1 (the default; set {SHARD_COUNT_WHERE}), "
     "got 1"),
    (["--shard.index", "2", "--shard.count", "2"], {},
     "--shard.index: must be below the shard count 2 (--shard.count), got 2"),
    (["--shard.count", "2"], {"SHARD_INDEX": "5"},
     "SHARD_INDEX: must be below the shard count 2 (--shard.count), got 5"),
    ([], {"SHARD_INDEX": "-1"}, f"SHARD_INDEX: {INDEX}, got '-1'"),
    ([], {"SHARD_INDEX": "-0"}, f"SHARD_INDEX: {INDEX}, got '-0'"),
    ([], {"SHARD_INDEX": "+1"}, f"SHARD_INDEX: {INDEX}, got '+1'"),
    ([], {"SHARD_INDEX": "1000"}, f"SHARD_INDEX: {INDEX}, got '1000'"),
    ([], {"SHARD_INDEX": "1.0"}, f"SHARD_INDEX: {INDEX}, got '1.0'"),
    ([], {"SHARD_INDEX": "one"}, f"SHARD_INDEX: {INDEX}, got 'one'"),
    ([], {"SHARD_INDEX": "9" * 400}, f"SHARD_INDEX: {INDEX}, got '{'9' * 57}...'"),
    ([], {"SHARD_COUNT": "0"}, f"SHARD_COUNT: {COUNT}, got '0'"),
    ([], {"SHARD_COUNT": "1001"}, f"SHARD_COUNT: {COUNT}, got '1001'"),
    ([], {"SHARD_COUNT": "-0"}, f"SHARD_COUNT: {COUNT}, got '-0'"),
    ([], {"SHARD_COUNT": "nan"}, f"SHARD_COUNT: {COUNT}, got 'nan'"),
    (["--shard.count", "1e3"], {}, f"--shard.count: {COUNT}, got '1e3'"),
    ([], {"SHARD_PRIMARY": "maybe"},
     "SHARD_PRIMARY: must be one of 1, 0, true, false, yes, no, got 'maybe'"),
])
def test_bad_shard_settings_are_one_line(argv, env, want):
    assert error_of(argv, {**KEY, **env}) == want


def test_every_target_is_checked_on_every_shard(tmp_path):
    # A mistake in a target another shard probes still stops this one: a config is valid
    # or not for the whole fleet, as --config.check in CI says.
    path = tmp_path / "c.yaml"
    bad = next(n for n in NAMES if shard_of(n, 2) == 1)
    path.write_text(f"targets:\n  - {{name: {bad}, provider: azure, base_url: "
                    "'https://x.openai.azure.com', api_version: '2024-10-21', "
                    "models: {chat: c, embeddings: e}}\n")
    got = error_of(["--config.file", str(path), "--shard.count", "2", "--shard.index", "0"], {})
    assert got.startswith("targets[0] (target-"), got
    assert "AZURE_OPENAI_API_KEY" in got


# -- primary: the once-per-fleet work -----------------------------------------------------

@pytest.mark.parametrize("argv,env,primary", [
    ([], {}, True),
    ([], {"SHARD_COUNT": "3"}, True),
    ([], {"SHARD_COUNT": "3", "SHARD_INDEX": "1"}, False),
    ([], {"SHARD_COUNT": "3", "SHARD_INDEX": "2", "SHARD_PRIMARY": "1"}, True),
    (["--no-shard.primary"], {}, False),  # one exporter per region: all but one
    (["--shard.primary"], {"SHARD_COUNT": "2", "SHARD_INDEX": "1", "SHARD_PRIMARY": "0"}, True),
])
def test_primary_is_shard_0_unless_set(argv, env, primary):
    assert load(argv, {**KEY, **env}).primary is primary


def test_primary_in_the_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("shard:\n  primary: false\n")
    assert load(["--config.file", str(path)], KEY).primary is False
    assert load(["--config.file", str(path)], {**KEY, "SHARD_PRIMARY": "yes"}).primary is True


# -- what the instance shows of it --------------------------------------------------------

def test_status_config_shows_the_shard(tmp_path):
    settings = load(["--config.file", _config(tmp_path)],
                    {"SHARD_COUNT": "4", "SHARD_INDEX": "3"})
    config = redacted(settings)
    assert (config["shard_index"], config["shard_count"], config["primary"]) == (3, 4, False)
    assert config["targets_on_other_shards"] + len(config["targets"]) == len(NAMES)
    assert [t["name"] for t in config["targets"]] == [n for n in NAMES if shard_of(n, 4) == 3]


def test_metrics_show_the_shard(tmp_path):
    metrics = ExporterMetrics()
    metrics.configure(load(["--config.file", _config(tmp_path)],
                           {"SHARD_COUNT": "4", "SHARD_INDEX": "3"}))
    value = metrics.registry.get_sample_value
    assert value("openai_exporter_shard_index") == 3
    assert value("openai_exporter_shards") == 4
    assert value("openai_exporter_primary") == 0
    alone = ExporterMetrics()
    alone.configure(load([], KEY))
    assert [alone.registry.get_sample_value(f"openai_exporter_{n}")
            for n in ("shard_index", "shards", "primary")] == [0, 1, 1]


def test_start_up_line(tmp_path):
    path = _config(tmp_path, names=["a", "b", "c", "d", "e"])
    assert describe(load(["--config.file", path], {})) is None
    assert describe(load(["--config.file", path, "--no-shard.primary"], {})) == (
        "shard 0 of 1 probes 5 of 5 target(s) (a, b, c, d, e); not primary: the "
        "organisation usage poller runs on another instance")
    index = shard_of("a", 2)
    line = describe(load(["--config.file", path, "--shard.count", "2", "--shard.index",
                          str(index)], {}))
    owned = [n for n in "abcde" if shard_of(n, 2) == index]
    assert line == (f"shard {index} of 2 probes {len(owned)} of 5 target(s) "
                    f"({', '.join(owned)}); " + ("primary: runs the organisation usage poller"
                                                 if index == 0 else "not primary: the "
                                                 "organisation usage poller runs on another "
                                                 "instance"))


# -- a fleet end to end --------------------------------------------------------------------

def _fleet_config(tmp_path, base_url: str, names: list[str]) -> str:
    path = tmp_path / "fleet.yaml"
    path.write_text("targets:\n" + "".join(
        f"  - {{name: {n}, provider: openai_compatible, base_url: '{base_url}', "
        "api_key_env: FLEET_KEY, probes: [models]}\n" for n in names))
    return str(path)


def test_a_fleet_of_three_probes_each_target_once(tmp_path):
    names = [f"t{i}" for i in range(9)]
    with FakeUpstream(seed=3) as fake:
        path = _fleet_config(tmp_path, fake.base_url, names)
        env = clean_env(CONFIG_FILE=path, FLEET_KEY="sk-fleet", SHARD_COUNT="3",
                        PROBE_ALLOW_FAST="1", PROBE_INTERVAL_SEC="0.2", LOG_FORMAT="json")
        daemons = [Daemon(dict(env, SHARD_INDEX=str(i))) for i in range(3)]
        try:
            for d in daemons:
                d.wait_ready()
            for i, d in enumerate(daemons):
                for n in names:
                    if shard_of(n, 3) == i:
                        d.wait_metric("openai_probe_success", lambda v: v == 1, target=n)
            seen = {i: {n for n in names
                        if d.metric("openai_requests_total", target=n, status="success")}
                    for i, d in enumerate(daemons)}
            assert [d.metric("openai_exporter_primary") for d in daemons] == [1, 0, 0]
            assert {d.metric("openai_exporter_shards") for d in daemons} == {3}
            status = [requests.get(d.url + "/status", timeout=5).json() for d in daemons]
        finally:
            logs = [d.stop()[1] for d in daemons]
    for i in range(3):
        assert seen[i] == {n for n in names if shard_of(n, 3) == i}, seen
    assert set().union(*seen.values()) == set(names)
    assert [s["config"]["shard_index"] for s in status] == [0, 1, 2]
    for i, out in enumerate(logs):
        lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        (line,) = [x for x in lines if x["message"].startswith(f"shard {i} of 3 ")]
        assert line["level"] == "INFO"


def test_a_shard_without_targets_starts_says_so_and_stays_healthy(tmp_path):
    with FakeUpstream(seed=3) as fake:
        path = _fleet_config(tmp_path, fake.base_url, ["openai"])
        empty = 1 - shard_of("openai", 2)
        d = Daemon(clean_env(CONFIG_FILE=path, FLEET_KEY="sk-fleet", SHARD_COUNT="2",
                             SHARD_INDEX=str(empty), PROBE_ALLOW_FAST="1",
                             PROBE_INTERVAL_SEC="0.05", HTTP_TIMEOUT_MS="10",
                             LOG_FORMAT="json"))
        try:
            d.wait_ready()
            # Far past the liveness limit of 3 x (interval + timeout) = 0.18 s: an empty
            # shard completes no probe by design and must not be restarted for it.
            time.sleep(1.0)
            assert requests.get(d.url + "/healthz", timeout=5).status_code == 200
            assert d.metric("openai_exporter_shard_index") == empty
            assert d.metric("openai_probe_success") is None
            assert d.metric("openai_probe_interval_seconds") == 0.05
        finally:
            _, out, err = d.stop()
    assert not fake.requests
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    (line,) = [x for x in lines if "owns none" in x["message"]]
    assert line["level"] == "WARNING"
    assert line["message"] == (
        f"shard {empty} of 2 owns none of the 1 configured target(s) (each target goes to one "
        "shard by a hash of its name) and serves /metrics without probe series; "
        + ("primary: runs the organisation usage poller" if empty == 0 else
           "not primary: the organisation usage poller runs on another instance"))


def test_config_check_names_the_shard(tmp_path):
    path = _config(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "exporter", "--config.check", "--config.file",
                           path], cwd=ROOT, capture_output=True, text=True, timeout=30,
                          env=clean_env(SHARD_COUNT="4", SHARD_INDEX="1"))
    assert proc.returncode == 0, proc.stderr
    owned = sum(shard_of(n, 4) == 1 for n in NAMES)
    assert proc.stdout == (f"openai-exporter: configuration OK ({len(NAMES)} target(s); "
                           f"shard 1 of 4 probes {owned})\n")
    proc = subprocess.run([sys.executable, "-m", "exporter", "--config.check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30,
                          env=clean_env(**KEY, SHARD_INDEX="4", SHARD_COUNT="4"))
    assert proc.returncode == 2
    assert proc.stderr == ("openai-exporter: error: SHARD_INDEX: must be below the shard "
                           "count 4 (SHARD_COUNT), got 4\n")


def test_the_primary_polls_the_organisation_whichever_shard_probes_its_target(tmp_path):
    """The usage poller runs on the primary only, and on the primary even when the target
    that carries the admin key is probed by another shard."""
    from exporter.usage.setup import NOT_PRIMARY, off_reason, poller_config

    # "openai" is owned by shard 1 of 2 (GOLDEN); shard 0 is the primary by default.
    assert shard_of("openai", 2) == 1
    path = tmp_path / "org.yaml"
    path.write_text("targets:\n  - {name: openai}\n  - {name: azure-eastus, provider: azure, "
                    "base_url: 'https://x.openai.azure.com', api_key_env: AZ_KEY, "
                    "api_version: '2024-10-21', models: {chat: c, embeddings: e}}\n")
    env = {**KEY, "AZ_KEY": "az-key-000", "OPENAI_ADMIN_KEY": "sk-admin-canary-0000"}
    primary = load(["--config.file", str(path), "--shard.count", "2", "--shard.index", "0"],
                   env)
    assert [t.name for t in primary.targets] == ["azure-eastus"]
    config = poller_config(primary)
    assert config is not None and config.admin_key == "sk-admin-canary-0000"
    assert redacted(primary)["usage_target"] == "openai"
    assert "sk-admin-canary" not in json.dumps(redacted(primary))
    other = load(["--config.file", str(path), "--shard.count", "2", "--shard.index", "1"], env)
    assert [t.name for t in other.targets] == ["openai"]
    assert poller_config(other) is None and off_reason(other) == NOT_PRIMARY

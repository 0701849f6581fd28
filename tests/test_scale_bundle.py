"""The scale-out files of the bundle: the Kubernetes StatefulSet and its one config file,
the remote_write variant of the Prometheus config, and the Alloy remote_write snippet.
What they do against live processes is tests/test_remote_write.py and tests/test_shards.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter.settings import load, shard_of
from tests import promql
from tests.conftest import clean_env
from tests.tools import require_tool

ROOT = promql.ROOT
K8S = ROOT / "deploy" / "kubernetes"
PROMETHEUS = ROOT / "prometheus" / "prometheus.yml"
REMOTE_WRITE = ROOT / "prometheus" / "prometheus.remote-write.yml"
ALLOY = ROOT / "alloy" / "metrics-remote-write.alloy"
POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"


def _yaml(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def statefulset() -> dict:
    return _yaml(K8S / "statefulset.yaml")


def _container(statefulset: dict) -> dict:
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return container


def _env(statefulset: dict) -> dict[str, dict]:
    return {e["name"]: e for e in _container(statefulset)["env"]}


def _fleet_config(tmp_path: Path) -> Path:
    path = tmp_path / "exporter.yaml"
    path.write_text(_yaml(K8S / "fleet-config.yaml")["data"]["exporter.yaml"])
    return path


# -- Kubernetes -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["statefulset.yaml", "fleet-config.yaml"])
def test_scale_out_manifests_are_valid(name: str) -> None:
    # Against the Kubernetes OpenAPI schemas (strict: an unknown or misspelt field fails).
    import kubernetes_validate

    kubernetes_validate.validate(_yaml(K8S / name), kubernetes_validate.latest_version(),
                                 strict=True)


def test_the_ordinal_is_the_shard_and_the_replicas_are_the_count(statefulset: dict) -> None:
    env = _env(statefulset)
    assert env["SHARD_INDEX"]["valueFrom"] == {"fieldRef": {"fieldPath": POD_INDEX}}
    assert int(env["SHARD_COUNT"]["value"]) == statefulset["spec"]["replicas"]
    assert "SHARD_PRIMARY" not in env  # shard 0 is the primary, by default
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"


def test_the_service_and_servicemonitor_reach_every_pod(statefulset: dict) -> None:
    service = _yaml(K8S / "service.yaml")
    monitor = _yaml(K8S / "servicemonitor.yaml")
    deployment = _yaml(K8S / "deployment.yaml")
    pod = statefulset["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    monitored = monitor["spec"]["selector"]["matchLabels"]
    assert monitored.items() <= service["metadata"]["labels"].items()
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"] == "openai-exporter"
    container = _container(statefulset)
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}
    (metrics_port,) = [p for p in container["ports"] if p["name"] == "metrics"]
    env = _env(statefulset)
    assert env["LISTEN_ADDRESS"]["value"].rpartition(":")[2] == str(metrics_port["containerPort"])
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}, probe
    # The same pod hardening as the Deployment.
    (deployed,) = deployment["spec"]["template"]["spec"]["containers"]
    assert pod["spec"]["securityContext"] == deployment["spec"]["template"]["spec"][
        "securityContext"]
    assert container["securityContext"] == deployed["securityContext"]


def test_keys_are_files_and_the_config_is_the_configmap(statefulset: dict,
                                                        tmp_path: Path) -> None:
    container = _container(statefulset)
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    env = _env(statefulset)
    # No key in the environment: only the shard index comes from elsewhere.
    assert [n for n, e in env.items() if "valueFrom" in e] == ["SHARD_INDEX"]
    config_dir, _, config_name = env["CONFIG_FILE"]["value"].rpartition("/")
    config_volume = volumes[mounts[config_dir]["name"]]
    fleet = _yaml(K8S / "fleet-config.yaml")
    assert config_volume["configMap"]["name"] == fleet["metadata"]["name"]
    assert config_name in fleet["data"]
    # Every key variable of the config arrives as <NAME>_FILE, in the Secret volume.
    doc = yaml.safe_load(_fleet_config(tmp_path).read_text())
    key_envs = {t.get("api_key_env", "OPENAI_API_KEY") for t in doc["targets"]
                if t.get("provider", "openai") != "openai_compatible"}
    secret = _yaml(K8S / "secret.example.yaml")
    for name in key_envs:
        assert name not in env, name
        directory, _, _ = env[f"{name}_FILE"]["value"].rpartition("/")
        assert mounts[directory]["readOnly"] is True
        volume = volumes[mounts[directory]["name"]]
        assert volume["secret"]["secretName"] == secret["metadata"]["name"]


def test_every_target_of_the_fleet_config_is_probed_by_exactly_one_pod(
        statefulset: dict, tmp_path: Path) -> None:
    path = _fleet_config(tmp_path)
    count = statefulset["spec"]["replicas"]
    keys = {"OPENAI_API_KEY": "x", "AZURE_EASTUS_KEY": "x", "AZURE_SWEDEN_KEY": "x"}
    names = [t["name"] for t in yaml.safe_load(path.read_text())["targets"]]
    owners: dict[str, list[int]] = {n: [] for n in names}
    for index in range(count):  # as each pod reads it
        settings = load([], {**keys, "CONFIG_FILE": str(path), "SHARD_INDEX": str(index),
                             "SHARD_COUNT": _env(statefulset)["SHARD_COUNT"]["value"]})
        assert settings.targets, f"shard {index} of the example probes nothing"
        assert settings.primary is (index == 0)
        for t in settings.targets:
            owners[t.name].append(index)
    assert all(len(o) == 1 for o in owners.values()), owners
    assert all(owners[n] == [shard_of(n, count)] for n in names)
    # And through the command line, as the ConfigMap's comment tells CI to.
    proc = subprocess.run([sys.executable, "-m", "exporter", "--config.check"], cwd=ROOT,
                          env=clean_env(**keys, CONFIG_FILE=str(path), SHARD_INDEX="2",
                                        SHARD_COUNT=str(count)),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"openai-exporter: configuration OK ({len(names)} target(s); "
                                  f"shard 2 of {count} probes "), proc.stdout


# -- Prometheus and Alloy remote_write --------------------------------------------------------

def test_promtool_check_remote_write_config() -> None:
    promtool = require_tool("promtool")
    r = subprocess.run([promtool, "check", "config", str(REMOTE_WRITE)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_remote_write_config_is_prometheus_yml_plus_external_labels() -> None:
    plain, variant = _yaml(PROMETHEUS), _yaml(REMOTE_WRITE)
    # The same rules and the same job name as the single-machine config: the dashboards
    # and alerts select job="openai-exporter".
    assert variant["rule_files"] == plain["rule_files"]
    jobs = {j["job_name"] for j in variant["scrape_configs"]}
    assert "openai-exporter" in jobs and jobs <= {j["job_name"] for j in plain["scrape_configs"]}
    labels = variant["global"]["external_labels"]
    assert set(labels) == {"cluster", "__replica__"}
    assert "region" not in labels  # the exporter's series carry their own region
    (remote,) = variant["remote_write"]
    assert remote["url"].endswith("/api/v1/push")
    # Both replicas' alerts are the same alerts for Alertmanager.
    assert {"action": "labeldrop", "regex": "__replica__"} in (
        variant["alerting"]["alert_relabel_configs"])


def _alloy_blocks(text: str) -> dict[str, str]:
    """Top-level `kind "label" { ... }` blocks of an Alloy file, by "kind.label"."""
    text = re.sub(r"^\s*//[^\n]*", "", text, flags=re.M)  # comment lines; not URLs
    blocks, depth, start, name = {}, 0, 0, ""
    for m in re.finditer(r'([a-z_.]+)\s+"([^"]+)"\s*\{|\{|\}', text):
        if m.group(0) == "}":
            depth -= 1
            if depth == 0:
                blocks[name] = text[start:m.end()]
        else:
            if depth == 0 and m.group(1):
                name, start = f"{m.group(1)}.{m.group(2)}", m.start()
            depth += 1
    assert depth == 0, "unbalanced braces"
    return blocks


def test_alloy_remote_write_snippet() -> None:
    blocks = _alloy_blocks(ALLOY.read_text())
    assert set(blocks) == {"prometheus.scrape.openai_exporter", "prometheus.remote_write.central"}
    scrape = blocks["prometheus.scrape.openai_exporter"]
    assert 'job_name        = "openai-exporter"' in scrape
    assert "forward_to = [prometheus.remote_write.central.receiver]" in scrape
    remote = blocks["prometheus.remote_write.central"]
    labels = re.search(r"external_labels\s*=\s*\{([^}]*)\}", remote)
    assert labels and set(re.findall(r"(\w+)\s*=", labels.group(1))) == {"cluster", "__replica__"}
    assert re.search(r'endpoint\s*\{\s*url\s*=\s*"http://[^"]+/api/v1/push"\s*\}', remote)
    # Loaded with config.alloy from one directory, component names must not collide.
    logs = _alloy_blocks((ROOT / "alloy" / "config.alloy").read_text())
    assert not set(blocks) & set(logs)


# -- one exporter per region ----------------------------------------------------------------

def test_region_configs_tell_their_series_apart() -> None:
    keys = {"OPENAI_API_KEY": "x", "AZURE_EASTUS_KEY": "x", "AZURE_SWEDEN_KEY": "x"}
    regions = {}
    for path in sorted((ROOT / "deploy" / "regions").glob("*.yaml")):
        settings = load(["--config.file", str(path)], keys)
        regions[path.stem] = settings
        # The exporter's region is the file's name, on every target that sets none.
        assert settings.targets[0].name == "openai"
        assert settings.targets[0].region == path.stem
    assert set(regions) == {"us-east-1", "eu-west-1"}
    # Exactly one runs the organisation usage poller.
    assert [name for name, s in regions.items() if s.primary] == ["us-east-1"]
    # The recording rules drop `instance`: two exporters must never share a target and a
    # region, or the rules would add their probes together.
    pairs = [(t.name, t.region) for s in regions.values() for t in s.targets]
    assert len(pairs) == len(set(pairs)), pairs
    assert not any(s.heavy for s in regions.values())

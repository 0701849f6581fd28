"""The deploy bundle: compose file, Dockerfile, Prometheus rules, Grafana, Loki, shippers, k8s.

promtool and docker-compose checks need the Debian packages (see tests/tools.py); the
rest reads the files. What the queries return against live data is tests/test_truth.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import promql
from tests.conftest import CANARY_KEY
from tests.tools import require_tool

ROOT = promql.ROOT
COMPOSE = ROOT / "docker-compose.yml"
DASHBOARD = ROOT / "grafana" / "dashboards" / "openai-api.json"
RULES = ROOT / "prometheus" / "rules" / "openai-exporter.rules.yml"
ALERTS = ROOT / "prometheus" / "rules" / "openai-exporter.alerts.yml"
RULE_TESTS = sorted((ROOT / "prometheus" / "tests").glob("*.yml"))
K8S = ROOT / "deploy" / "kubernetes"

# The metric contract (shared/DESIGN.md) plus openai_probe_interval_seconds and the fleet
# gauges (docs/bundle.md#scale-out), as sample names.
CONTRACT = {
    "openai_requests_total",
    "openai_request_duration_seconds_bucket",
    "openai_request_duration_seconds_sum",
    "openai_request_duration_seconds_count",
    "openai_tokens_total",
    "openai_response_bytes_total",
    "openai_rate_limit_requests_limit",
    "openai_rate_limit_requests_remaining",
    "openai_rate_limit_requests_reset_seconds",
    "openai_rate_limit_tokens_limit",
    "openai_rate_limit_tokens_remaining",
    "openai_rate_limit_tokens_reset_seconds",
    "openai_probe_success",
    "openai_probe_last_run_timestamp_seconds",
    "openai_probe_last_success_timestamp_seconds",
    "openai_cost_usd_total",
    "openai_exporter_build_info",
    "openai_probe_interval_seconds",
    # Organisation usage and spend (exporter/usage/), and the probe budget guard.
    "openai_usage_tokens_total",
    "openai_usage_requests_total",
    "openai_usage_images_total",
    "openai_usage_characters_total",
    "openai_usage_seconds_total",
    "openai_usage_corrections_total",
    "openai_org_cost_usd",
    "openai_project_info",
    "openai_project_rate_limit",
    "openai_usage_poll_success",
    "openai_usage_poll_errors_total",
    "openai_usage_last_poll_timestamp_seconds",
    "openai_usage_last_complete_bucket_timestamp_seconds",
    "openai_probe_budget_exhausted",
    "openai_exporter_shard_index",
    "openai_exporter_shards",
    "openai_exporter_primary",
    "openai_probe_phase_seconds",
    *(f"openai_{name}_seconds_{suffix}" for name in ("time_to_first_token",
                                                     "time_per_output_token")
      for suffix in ("bucket", "sum", "count")),
}
# Series Prometheus itself adds to every scrape.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
ALLOWED_DS = {"${datasource}", "$datasource", "${loki_datasource}", "$loki_datasource"}
# Loki labels must stay bounded: no model, request_id, latency or token counts.
LOKI_LABELS = {"level", "target", "endpoint", "status", "error_type"}


def _yaml(path: Path):
    return yaml.safe_load(path.read_text())


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


# -- promtool ---------------------------------------------------------------------------

def test_promtool_check_config() -> None:
    promtool = require_tool("promtool")
    r = _run(promtool, "check", "config", "prometheus/prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    r = _run(promtool, "check", "rules", str(RULES), str(ALERTS))
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_test_rules() -> None:
    """Every promtool test file passes; one promtool per file, two at a time (promtool
    runs the files of one call one after another, on one core)."""
    from concurrent.futures import ThreadPoolExecutor

    promtool = require_tool("promtool")
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda path: _run(promtool, "test", "rules", str(path)),
                             RULE_TESTS))
    for path, r in zip(RULE_TESTS, runs, strict=True):
        assert r.returncode == 0, f"{path.name}:\n{r.stdout}{r.stderr}"


def test_every_alert_has_a_fires_and_a_not_yet_case() -> None:
    alerts = [q.name for q in promql.rule_queries([ALERTS])]
    cases: dict[str, list[tuple[str, bool]]] = {a: [] for a in alerts}
    for path in RULE_TESTS:
        for test in _yaml(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], []).append(
                    (str(case["eval_time"]), bool(case.get("exp_alerts"))))
    for alert in alerts:
        outcomes = [fires for _, fires in cases[alert]]
        assert True in outcomes, f"{alert}: no promtool case where it fires"
        assert False in outcomes, f"{alert}: no promtool case where it does not fire yet"


def test_alert_conventions() -> None:
    for group in _yaml(ALERTS)["groups"]:
        for rule in group["rules"]:
            name = rule["alert"]
            assert re.fullmatch(r"(?:[A-Z][a-z0-9]*|AI)+", name), f"{name}: not CamelCase"
            assert name.startswith("OpenAI"), name
            assert rule.get("for"), f"{name}: no for:"
            assert rule["labels"]["severity"] in {"warning", "critical"}, name
            assert rule["annotations"].get("summary"), f"{name}: no summary"
            assert rule["annotations"].get("description"), f"{name}: no description"


def test_recording_rule_names_are_level_metric_operations() -> None:
    for name in promql.recorded_names([RULES]):
        level, metric, ops = name.split(":")  # exactly two colons
        assert level and ops, name
        assert metric.startswith("openai_") and not metric.endswith("_total"), name


def test_rules_read_only_contract_metrics() -> None:
    known = CONTRACT | PROMETHEUS_SERIES | promql.recorded_names()
    for q in promql.rule_queries():
        unknown = promql.metric_names(q.expr) - known
        assert not unknown, f"{q.describe()}: unknown metric(s) {sorted(unknown)}"


def test_contract_matches_the_exporter() -> None:
    """The names this bundle relies on are the ones exporter/metrics.py exposes."""
    metrics = pytest.importorskip("exporter.metrics")
    from exporter.budget import BudgetGuard
    from exporter.usage.kinds import DEFAULT_GROUP_BY, DEFAULT_KINDS
    from exporter.usage.metrics import UsageMetrics

    exporter_metrics = metrics.ExporterMetrics()
    registry = exporter_metrics.registry
    BudgetGuard(None, registry, exporter_metrics.skip)
    registry.register(UsageMetrics(DEFAULT_KINDS, DEFAULT_GROUP_BY, ("costs",)))
    exposed = set()
    for family in registry.collect():
        if family.type == "counter":
            exposed.add(family.name + "_total")
        elif family.type == "histogram":
            exposed.update(family.name + s for s in ("_bucket", "_sum", "_count"))
        else:
            exposed.add(family.name)
    assert exposed >= CONTRACT, f"not exposed by the exporter: {sorted(CONTRACT - exposed)}"


# -- Grafana ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_identity(dashboard: dict) -> None:
    assert dashboard["uid"] == "openai-api"
    assert dashboard["title"] == "OpenAI API"
    assert "__inputs" not in dashboard, "an 'export for sharing' dashboard breaks provisioning"
    assert "DS_" not in DASHBOARD.read_text(), "no ${DS_...} import placeholders"
    ids = [p["id"] for p in promql.iter_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_dashboard_rows(dashboard: dict) -> None:
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Overview", "Requests & errors", "Latency", "Tokens", "Rate limits", "Logs",
                    "Organization usage & spend"]
    types = {p["type"] for p in dashboard["panels"]}
    assert {"heatmap", "logs"} <= types


def test_dashboard_panels_do_not_overlap(dashboard: dict) -> None:
    """Each panel has its own place on the 24-column grid (panels added by different
    changes must move the ones below them, not land on top of them)."""
    boxes = [(p["title"], p["gridPos"]) for p in dashboard["panels"]]
    for i, (a, pa) in enumerate(boxes):
        assert pa["x"] + pa["w"] <= 24, a
        for b, pb in boxes[i + 1:]:
            apart = (pa["x"] + pa["w"] <= pb["x"] or pb["x"] + pb["w"] <= pa["x"]
                     or pa["y"] + pa["h"] <= pb["y"] or pb["y"] + pb["h"] <= pa["y"])
            assert apart, f"{a!r} and {b!r} overlap"
    # Rows own the panels listed after them: the list runs top to bottom.
    tops = [(p["gridPos"]["y"], p["gridPos"]["x"]) for p in dashboard["panels"]]
    assert tops == sorted(tops)


def test_dashboard_variables(dashboard: dict) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"datasource", "target", "region", "endpoint", "model"} <= set(variables)
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["loki_datasource"]["type"] == "datasource"
    assert variables["loki_datasource"]["query"] == "loki"
    for name in ("job", "target", "region", "endpoint", "model"):
        v = variables[name]
        assert v["type"] == "query" and v["datasource"]["uid"] == "${datasource}", name
        assert v["includeAll"] and v["allValue"] == ".*", name
        assert promql.label_values(v["definition"]), f"{name}: not a label_values() query"


def test_dashboard_uses_datasource_variables_only(dashboard: dict) -> None:
    """Importable anywhere: no panel or query names a fixed datasource uid."""
    for p in promql.iter_panels(dashboard["panels"]):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] in ALLOWED_DS, f"panel {p['title']!r}: {p['datasource']}"
        for t in p["targets"]:
            assert t["datasource"]["uid"] in ALLOWED_DS, f"panel {p['title']!r}: {t}"
            kind = "loki" if "loki" in t["datasource"]["uid"] else "prometheus"
            assert t["datasource"]["type"] == kind, f"panel {p['title']!r}: {t['datasource']}"


def test_dashboard_queries_use_known_metrics_and_variables(dashboard: dict) -> None:
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    known = CONTRACT | promql.recorded_names()
    queries = promql.dashboard_queries(DASHBOARD)
    assert len([q for q in queries if q.datasource == "prometheus"]) >= 30
    for q in queries:
        for m in re.finditer(r"\$\{?(\w+)", q.expr):
            name = m.group(1)
            assert name in defined or name.startswith("__"), f"{q.describe()}: ${name} undefined"
        if q.datasource != "prometheus":
            continue
        expr = promql.substitute(q.expr)
        lv = promql.label_values(expr)
        names = promql.metric_names(lv[0] if lv else expr)
        assert names, f"{q.describe()}: reads no metric"
        assert names <= known, f"{q.describe()}: unknown metric(s) {sorted(names - known)}"


def test_dashboard_rates_use_rate_interval_or_a_fixed_window(dashboard: dict) -> None:
    for q in promql.dashboard_queries(DASHBOARD):
        for window in re.findall(r"\[([^\]]+)\]", q.expr):
            # 15m: ratios and quantiles hold three probes of each endpoint (docs/bundle.md).
            assert window in {"$__rate_interval", "$__range", "$__interval", "5m", "15m", "1h"}, \
                f"{q.describe()}: window {window}"


def test_grafana_provisioning() -> None:
    ds = {d["uid"]: d for d in _yaml(ROOT / "grafana/provisioning/datasources/datasources.yml")
          ["datasources"]}
    assert ds["prometheus"]["type"] == "prometheus"
    assert ds["loki"]["type"] == "loki"
    scrape = _yaml(ROOT / "prometheus" / "prometheus.yml")["global"]["scrape_interval"]
    assert ds["prometheus"]["jsonData"]["timeInterval"] == scrape, "$__rate_interval needs it"
    provider = _yaml(ROOT / "grafana/provisioning/dashboards/dashboards.yml")["providers"][0]
    mounts = _yaml(COMPOSE)["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts


# -- compose ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return _yaml(COMPOSE)


def _compose_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GRAFANA_", "OPENAI_", "COMPOSE_", "PROBE_"))}
    env.update(extra)
    return env


def test_docker_compose_config_validates() -> None:
    dc = require_tool("docker-compose")
    # --env-file: the example, not a developer's own .env.
    r = _run(dc, "--env-file", ".env.example", "--profile", "demo", "--profile", "alloy",
             "config", env=_compose_env(GRAFANA_ADMIN_PASSWORD="s3cret"))
    assert r.returncode == 0, r.stdout + r.stderr
    services = yaml.safe_load(r.stdout)["services"]
    assert set(services) == {"exporter", "fake-upstream", "prometheus", "grafana", "loki",
                             "promtail", "alloy"}
    # 1.29 lists every service whatever the profiles; the profiles must survive validation.
    assert services["alloy"]["profiles"] == ["alloy"]
    assert services["fake-upstream"]["profiles"] == ["demo"]
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"


def test_docker_compose_starts_on_a_fresh_clone_with_no_env(tmp_path: Path) -> None:
    # `git clone` then `docker compose up`: no .env, nothing in the environment.
    dc = require_tool("docker-compose")
    clone = tmp_path / "clone"
    shutil.copytree(ROOT, clone, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".env", "__pycache__", "*_cache", "*.egg-info", "bench"))
    assert not (clone / ".env").exists()
    r = subprocess.run([dc, "config"], cwd=clone, capture_output=True, text=True,
                       timeout=120, env={})
    assert r.returncode == 0, r.stdout + r.stderr
    # 1.29: "The X variable is not set. Defaulting to a blank string."
    assert "is not set" not in r.stderr, r.stderr
    services = yaml.safe_load(r.stdout)["services"]
    grafana = services["grafana"]["environment"]
    # Grafana's own default: signing in with "admin" makes Grafana ask for a new password.
    assert grafana["GF_SECURITY_ADMIN_USER"] == "admin"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "admin"
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["GF_USERS_ALLOW_SIGN_UP"] == "false"
    # Without a key the exporter runs its built-in demo.
    exporter = services["exporter"]["environment"]
    assert exporter["OPENAI_API_KEY_FILE"] == "" and exporter["OPENAI_BASE_URL"] == ""
    published = [str(port) for svc in services.values() for port in svc.get("ports", [])]
    assert published and all(port.startswith("127.0.0.1:") for port in published), published


def test_every_compose_variable_has_a_default() -> None:
    # `${VAR:?message}` stops `docker compose up` until VAR is set; `${VAR}` warns and
    # substitutes "". Every variable gets a `${VAR:-default}`.
    text = "\n".join(line for line in COMPOSE.read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    found = re.findall(r"\$\{([^}]*)\}", text)
    assert found
    for expr in found:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*:-[^}]*", expr), f"${{{expr}}} has no default"
    assert not re.search(r"\$[A-Za-z_]", text.replace("$$", "")), "a bare $VAR"


def test_compose_passes_keys_as_files_not_in_the_environment(compose: dict) -> None:
    # A key in `environment:` shows in `docker inspect`; the exporter gets a path instead.
    exporter = compose["services"]["exporter"]
    env = exporter["environment"]
    assert not {"OPENAI_API_KEY", "WEB_AUTH_TOKEN", "OPENAI_ADMIN_KEY"} & set(env), env
    assert env["OPENAI_API_KEY_FILE"] == "${OPENAI_API_KEY_FILE:-}"
    assert env["OPENAI_ADMIN_KEY_FILE"] == "${OPENAI_ADMIN_KEY_FILE:-}"
    assert env["WEB_AUTH_TOKEN_FILE"] == "${WEB_AUTH_TOKEN_FILE:-}"
    assert "./secrets:/run/secrets/openai-exporter:ro" in exporter["volumes"]
    example = (ROOT / ".env.example").read_text()
    assert not re.search(r"^\s*(OPENAI_API_KEY|WEB_AUTH_TOKEN|OPENAI_ADMIN_KEY)=", example, re.M)
    assert re.search(r"^# OPENAI_API_KEY_FILE=/run/secrets/openai-exporter/\S+", example, re.M)
    # The demo profile's fake key ships as a file; anything else in secrets/ stays out of git.
    assert (ROOT / "secrets" / "demo-api-key").read_text().strip() == "sk-demo-not-a-real-key"
    assert ((ROOT / "secrets" / "demo-admin-key").read_text().strip()
            == "sk-admin-demo-not-a-real-key")
    ignored = (ROOT / "secrets" / ".gitignore").read_text().split()
    assert ignored[0] == "*" and set(ignored[1:]) == {"!.gitignore", "!demo-api-key",
                                                      "!demo-admin-key"}


def test_docker_compose_config_never_carries_a_key() -> None:
    dc = require_tool("docker-compose")
    path = "/run/secrets/openai-exporter/openai_api_key"
    r = _run(dc, "--env-file", ".env.example", "config",
             env=_compose_env(GRAFANA_ADMIN_PASSWORD="s3cret", OPENAI_API_KEY=CANARY_KEY,
                              OPENAI_API_KEY_FILE=path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert CANARY_KEY not in r.stdout
    env = yaml.safe_load(r.stdout)["services"]["exporter"]["environment"]
    assert env["OPENAI_API_KEY_FILE"] == path


def test_compose_file_fits_docker_compose_1_29(compose: dict) -> None:
    assert not {"name", "include", "version"} & set(compose)
    for name, svc in compose["services"].items():
        assert "develop" not in svc, name
        assert "start_interval" not in svc.get("healthcheck", {}), name


def test_nothing_phones_home(compose: dict) -> None:
    services = compose["services"]
    grafana = services["grafana"]["environment"]
    for key, value in {
        "GF_ANALYTICS_REPORTING_ENABLED": "false",         # usage stats to stats.grafana.org
        "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",         # grafana.com version check
        "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES": "false",  # grafana.com plugin versions
        "GF_NEWS_NEWS_FEED_ENABLED": "false",              # grafana.com blog feed
        "GF_PLUGINS_PREINSTALL_DISABLED": "true",          # plugin downloads at start
        "GF_PLUGINS_PUBLIC_KEY_RETRIEVAL_DISABLED": "true",
        "GF_SECURITY_DISABLE_GRAVATAR": "true",
    }.items():
        assert grafana.get(key) == value, key
    alloy = services["alloy"]["command"]
    assert alloy[0] == "run" and "--disable-reporting" in alloy, alloy
    loki = _yaml(ROOT / "loki" / "loki.yml")
    assert loki["analytics"]["reporting_enabled"] is False


def test_docker_stop_waits_for_the_sigterm_drain(compose: dict) -> None:
    """SIGTERM drains probes for up to the timeout + 2 s (14 s at the defaults): the
    compose file must give the exporter longer than docker's default 10 s before SIGKILL."""
    from exporter.durations import parse_duration
    from exporter.settings import load

    grace = parse_duration(compose["services"]["exporter"].get("stop_grace_period", "10s"))
    assert grace is not None
    assert grace >= load([], {}).timeout_seconds + 2


def test_grafana_does_not_wait_for_a_healthy_loki(compose: dict) -> None:
    # A slow Loki leaves the Logs row empty for a while; it must not keep Grafana down.
    depends = compose["services"]["grafana"].get("depends_on", {})
    assert isinstance(depends, dict), depends
    for name, cond in depends.items():
        assert cond.get("condition") != "service_healthy", f"grafana waits for {name}"
    # The shippers may wait: they have nothing to do until Loki takes pushes.
    for shipper in ("promtail", "alloy"):
        assert compose["services"][shipper]["depends_on"]["loki"]["condition"] == \
            "service_healthy"


def _pins_table() -> dict[str, tuple[str, str]]:
    text = (ROOT / "docs" / "bundle.md").read_text()
    section = text[text.index("### Image pins"):]
    section = section[:section.index("\n#", 1)]
    rows = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \| (.+?) \|$", section, re.M)
    return {image: (tag, where) for image, tag, where in rows}


def test_image_pins_match_the_docs_table(compose: dict) -> None:
    pinned = {}
    for svc in compose["services"].values():
        if "build" not in svc:
            image, _, tag = svc["image"].rpartition(":")
            pinned[image] = tag
    table = _pins_table()
    assert {image: tag for image, (tag, _) in table.items()} == pinned
    for image, (_, where) in table.items():
        assert re.search(r"https://\S+", where), f"{image}: no URL where the tag was confirmed"
    # The prose of the docs and the README names the same tags, nowhere another one.
    for doc in (ROOT / "README.md", ROOT / "docs" / "bundle.md"):
        for image, tag in re.findall(
                r"((?:prom|grafana)/(?:prometheus|grafana|loki|promtail|alloy)):(v?[\d.]+\d)",
                doc.read_text()):
            assert pinned.get(image) == tag, f"{doc.name}: {image}:{tag} vs {pinned.get(image)}"


def test_compose_images_pinned_and_ports_local(compose: dict) -> None:
    for name, svc in compose["services"].items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        if "build" in svc:  # built here from deploy/Dockerfile
            assert image == "openai-exporter:local", name
        else:
            assert repo and re.search(r"\d", tag), f"{name}: {image} is not pinned to a version"
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is not loopback-only"
    services = compose["services"]
    assert services["promtail"]["image"].startswith("grafana/promtail:3.6.")  # last release line
    assert services["alloy"]["profiles"] == ["alloy"]
    assert services["fake-upstream"]["profiles"] == ["demo"]
    assert "--storage.tsdb.retention.time=7d" in services["prometheus"]["command"]
    assert services["exporter"]["labels"]["openai-exporter.logs"] == "json"


# -- Dockerfile -------------------------------------------------------------------------

def test_dockerfile() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert len(froms) >= 2 and all("python:3.12-slim" in f for f in froms), froms
    assert "pip install ." in text
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, users
    assert "EXPOSE 9188" in lines
    # The check finds the port the way the exporter does (tests/test_liveness.py runs it);
    # a hard-coded 9188 went unhealthy as soon as LISTEN_ADDRESS changed.
    health = text[text.index("HEALTHCHECK"):]
    assert 'CMD ["python", "-m", "exporter.healthcheck"]' in health
    assert "9188" not in health
    assert 'ENTRYPOINT ["openai-exporter"]' in lines


# -- Loki, Promtail, Alloy --------------------------------------------------------------

def test_loki_keeps_seven_days() -> None:
    cfg = _yaml(ROOT / "loki" / "loki.yml")
    assert cfg["limits_config"]["retention_period"] == "7d"
    assert cfg["compactor"]["retention_enabled"] is True
    assert cfg["compactor"]["delete_request_store"] == "filesystem"
    schema = cfg["schema_config"]["configs"][-1]
    assert schema["store"] == "tsdb" and schema["index"]["period"] == "24h"


def test_promtail_ships_exporter_json_with_bounded_labels() -> None:
    cfg = _yaml(ROOT / "promtail" / "promtail.yml")
    (job,) = cfg["scrape_configs"]
    (sd,) = job["docker_sd_configs"]
    assert sd["filters"] == [{"name": "label", "values": ["openai-exporter.logs=json"]}]
    stages = {k: v for stage in job["pipeline_stages"] for k, v in stage.items()}
    assert set(stages["json"]["expressions"]) == LOKI_LABELS
    assert set(stages["labels"]) == LOKI_LABELS
    relabeled = {r["target_label"] for r in job["relabel_configs"]}
    assert relabeled == {"job", "container", "stream"}


def test_alloy_matches_promtail() -> None:
    text = (ROOT / "alloy" / "config.alloy").read_text()
    assert 'values = ["openai-exporter.logs=json"]' in text
    assert 'labels        = {job = "openai-exporter"}' in text
    block = text[text.index("stage.labels"):]
    block = block[:block.index("}\n\n")]
    assert set(re.findall(r"^\s*(\w+)\s*=", block, re.M)) - {"values"} == LOKI_LABELS


# -- Kubernetes -------------------------------------------------------------------------

def test_kubernetes_manifests_fit_together() -> None:
    deploy = _yaml(K8S / "deployment.yaml")
    service = _yaml(K8S / "service.yaml")
    monitor = _yaml(K8S / "servicemonitor.yaml")
    secret = _yaml(K8S / "secret.example.yaml")
    pod = deploy["spec"]["template"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert (monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items())
    # The Service name is the scrape job, which OpenAIExporterDown selects.
    assert service["metadata"]["name"] == "openai-exporter"
    assert 'job="openai-exporter"' in ALERTS.read_text()
    (container,) = pod["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in port_names
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # The key reaches the container as a file of a Secret volume, never as an environment
    # value (which `docker inspect` on the node and /proc/1/environ would show).
    env = {e["name"]: e for e in container["env"]}
    assert not any("valueFrom" in e for e in env.values()), env
    assert "OPENAI_API_KEY" not in env
    key_file = env["OPENAI_API_KEY_FILE"]["value"]
    (mount,) = [m for m in container["volumeMounts"] if key_file.startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert key_file.rpartition("/")[2] in secret["stringData"]
    # Both probes ask /healthz on the named port, whose number is LISTEN_ADDRESS's.
    (metrics_port,) = [p for p in container["ports"] if p["name"] == "metrics"]
    assert env["LISTEN_ADDRESS"]["value"].rpartition(":")[2] == str(metrics_port["containerPort"])
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}, probe
    # Owned by root, readable by the pod's group (fsGroup) only.
    assert volume["secret"]["defaultMode"] == 0o440
    assert pod["spec"]["securityContext"]["fsGroup"] == pod["spec"]["securityContext"]["runAsUser"]
    assert deploy["spec"]["replicas"] == 1


@pytest.mark.parametrize("name", ["deployment.yaml", "service.yaml", "secret.example.yaml"])
def test_kubernetes_manifests_are_valid(name: str) -> None:
    # Against the Kubernetes OpenAPI schemas (strict: an unknown or misspelt field fails).
    # The ServiceMonitor is a CRD the package has no schema for.
    import kubernetes_validate

    doc = _yaml(K8S / name)
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


# -- Queries in the README and docs/ ----------------------------------------------------

_STREAM = re.compile(r"^\s*(?:\w+\s*(?:by\s*\([^)]*\)\s*)?\(\s*)*(?:\w+\s*\(\s*)*\{([^}]*)\}")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_FIELD = re.compile(r"\{\{\s*\.(\w+)\s*\}\}|\|\s*(\w+)\s*(?:[<>]=?|==?|!=|=~)")


def test_doc_promql_reads_contract_or_recorded_metrics() -> None:
    """Every ```promql example names series the exporter or the rules produce."""
    queries = promql.doc_queries("promql")
    assert len(queries) >= 4 and any(q.source == "README.md" for q in queries)
    known = CONTRACT | promql.recorded_names()
    for q in queries:
        unknown = promql.metric_names(q.expr) - known
        assert not unknown, f"{q.describe()}: unknown metric(s) {sorted(unknown)}"


def _right_of_divisions(expr: str) -> list[str]:
    """For each `/` of an expression, what it divides by, to the end of its parentheses."""
    out = []
    for m in re.finditer(r"(?<![/*])/(?![/*])", expr):
        depth, end = 0, len(expr)
        for i, ch in enumerate(expr[m.end():], m.end()):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth < 0:
                end = i
                break
        out.append(expr[m.end():end])
    return out


def test_doc_promql_guards_every_division_by_a_limit() -> None:
    """A limit gauge can read 0 (or Azure's -1): divide by `(... > 0)`, which drops those
    series, instead of showing +Inf, NaN or a negative headroom."""
    divisions = 0
    for q in promql.doc_queries("promql"):
        for right in _right_of_divisions(q.expr):
            limits = {n for n in promql.metric_names(right) if n.endswith("_limit")}
            if limits:
                divisions += 1
                assert re.search(r">\s*0(?![.\d])", right), \
                    f"{q.describe()}: divides by {sorted(limits)} without `> 0`"
    assert divisions >= 1  # the README's headroom example


@pytest.mark.parametrize("lang", ["promql", "logql"])
def test_each_doc_query_example_is_written_once(lang: str) -> None:
    """The examples live in one place: a query shown twice (README and docs/) drifts."""
    seen: dict[str, str] = {}
    for q in promql.doc_queries(lang):
        key = " ".join(q.expr.split())
        assert key not in seen, f"{q.describe()} is also in {seen[key]}"
        seen[key] = q.describe()


def test_doc_logql_uses_shipped_labels_and_logged_fields() -> None:
    """LogQL examples select only labels Promtail/Alloy attach, with values the exporter
    logs, and read only fields of the probe line (no Loki binary here to run them)."""
    from exporter.logs import probe_fields
    from exporter.result import ERROR_TYPES, ProbeResult

    queries = promql.doc_queries("logql") + [
        q for q in promql.dashboard_queries(ROOT / "grafana" / "dashboards" / "openai-api.json")
        if q.datasource == "loki" and q.where == "panel"]
    assert any(q.source == "README.md" for q in queries)
    stream_labels = LOKI_LABELS | {"job", "container", "stream"}
    values = {"job": {"openai-exporter"}, "status": {"success", "error"},
              "error_type": set(ERROR_TYPES), "level": {"INFO", "WARNING", "ERROR"}}
    fields = set(probe_fields(ProbeResult("t", "r", "chat", "m", 0.0, 0.1, True)))
    for q in queries:
        expr = promql.substitute(q.expr)
        m = _STREAM.match(expr)
        assert m, f"no stream selector: {q.describe()}"
        for label, op, value in _MATCHER.findall(m.group(1)):
            assert label in stream_labels, f"{label} is not a Loki label: {q.describe()}"
            if op == "=" and label in values:
                assert value in values[label], q.describe()
            if op == "=~" and label in values and ".*" not in value and ".+" not in value:
                assert set(value.split("|")) <= values[label], q.describe()
        for a, b in _FIELD.findall(expr[m.end():]):
            name = a or b
            if name not in {"json", "logfmt", "line_format", "label_format", "unwrap"}:
                assert name in fields, f"{name} is not a field of the probe line: {q.describe()}"

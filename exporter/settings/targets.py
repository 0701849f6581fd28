"""Targets: the `targets:` list of the config file, or the one target of the environment,
resolved with every default (models, probes, base URL, key)."""

from __future__ import annotations

import re
from typing import Any
from collections.abc import Mapping
from urllib.parse import urlsplit

from ..catalogue import CATALOGUE, DEFAULT_MODELS, MODEL_KINDS, PROVIDERS, default_probes
from ..transport import CONNECTION_POLICIES
from .parsers import (
    _bad, _deployment, _enum, _headers, _identifier, _model, _probe_list, _region,
    _target_name, _url,
)
from .schema import ConfigError, TargetSettings
from .secrets import check_secret_text
from .sources import _check_keys

OPENAI_BASE_URL = "https://api.openai.com/v1"
# The variable a target's key is read from when the file does not name one. A target of
# another provider never falls back to OPENAI_API_KEY: that would send the OpenAI key to
# Azure or to a third-party server. openai_compatible servers often need no key at all.
DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "azure": "AZURE_OPENAI_API_KEY",
                   "openai_compatible": ""}

TARGET_KEYS = ("name", "provider", "base_url", "api_key_env", "admin_key_env", "region",
               "models", "probes", "headers", "org_id", "project_id", "api_version",
               "connection")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def key_envs(doc: dict[str, Any]) -> list[str]:
    """Every variable that may hold a target's key: the providers' defaults and each
    `api_key_env` of the file, read before the targets are validated (so that an error
    in any setting can already hide their values)."""
    names = [name for name in DEFAULT_KEY_ENV.values() if name]
    targets = doc.get("targets")
    for raw in targets if isinstance(targets, list) else ():
        value = raw.get("api_key_env") if isinstance(raw, dict) else None
        if isinstance(value, str) and _ENV_NAME.fullmatch(value.strip()):
            names.append(value.strip())
    return names


def _file_targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The config file's `targets:`, each validated on its own; [] when the file has none."""
    if "targets" not in doc:
        return []
    raw_targets = doc["targets"]
    if not isinstance(raw_targets, list) or not raw_targets:
        raise _bad("config file targets", "must be a non-empty list of targets "
                   "(or leave it out for one target from the environment)", raw_targets)
    file_targets: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_targets):
        t = _parse_file_target(raw, i)
        if t["name"] in seen:
            raise ConfigError(f"config file targets[{i}].name: duplicate target name "
                              f"{t['name']!r} (also targets[{seen[t['name']]}])")
        seen[t["name"]] = i
        file_targets.append(t)
    return file_targets


def _parse_file_target(raw: Any, i: int) -> dict[str, Any]:
    """Validate one entry of `targets:` on its own; returns the keys it set, parsed."""
    where = f"config file targets[{i}]"
    if not isinstance(raw, dict):
        raise _bad(where, "must be a mapping with at least a name", raw)
    _check_keys(raw, TARGET_KEYS, f"targets[{i}].", f"in targets[{i}]",
                "keys never go in the config file; put the key in an environment variable "
                "and set api_key_env to its name")
    out: dict[str, Any] = {}
    if "name" not in raw:
        raise ConfigError(f"{where}.name: required (letters, digits, '-', '_' or '.')")
    out["name"] = _target_name(raw["name"], f"{where}.name")
    provider = _enum(PROVIDERS)(raw.get("provider", "openai"), f"{where}.provider")
    out["provider"] = provider

    if "base_url" in raw:
        url = _url(raw["base_url"], f"{where}.base_url")
        if provider == "azure" and re.search(r"/openai(/|$)", urlsplit(url).path):
            raise ConfigError(
                f"{where}.base_url: for provider azure give the resource endpoint without "
                "/openai (such as https://NAME.openai.azure.com); the exporter adds the path")
        out["base_url"] = url
    elif provider != "openai":
        raise ConfigError(f"{where}.base_url: required for provider {provider} "
                          "(an http(s) URL)")

    if "api_key_env" in raw:
        value = raw["api_key_env"]
        if not isinstance(value, str) or not _ENV_NAME.fullmatch(value.strip()):
            # Never echo it: people paste the key itself here.
            raise ConfigError(f"{where}.api_key_env: must be the name of an environment "
                              "variable (letters, digits, '_'), not the key itself")
        out["api_key_env"] = value.strip()

    if "admin_key_env" in raw:
        if provider != "openai":
            raise ConfigError(f"{where}.admin_key_env: only for provider openai (the Usage and "
                              "Costs APIs are OpenAI's)")
        value = raw["admin_key_env"]
        if not isinstance(value, str) or not _ENV_NAME.fullmatch(value.strip()):
            raise ConfigError(f"{where}.admin_key_env: must be the name of an environment "
                              "variable (letters, digits, '_'), not the key itself")
        out["admin_key_env"] = value.strip()

    if "region" in raw:
        out["region"] = _region(raw["region"], f"{where}.region")

    if "models" in raw:
        models = raw["models"]
        if not isinstance(models, dict):
            raise _bad(f"{where}.models",
                       f"must be a mapping of model kind to model ({', '.join(MODEL_KINDS)})",
                       models)
        _check_keys(models, MODEL_KINDS, f"targets[{i}].models.", f"in targets[{i}].models",
                    None)
        parse = _deployment if provider == "azure" else _model
        out["models"] = {k: parse(v, f"{where}.models.{k}") for k, v in models.items()}

    if "probes" in raw:
        out["probes"] = _probe_list(raw["probes"], f"{where}.probes")

    if "headers" in raw:
        out["headers"] = _headers(raw["headers"], f"{where}.headers")

    for key in ("org_id", "project_id"):
        if key in raw:
            out[key] = _identifier(raw[key], f"{where}.{key}")

    if "connection" in raw:
        out["connection"] = _enum(CONNECTION_POLICIES)(raw["connection"], f"{where}.connection")

    if "api_version" in raw:
        if provider != "azure":
            raise ConfigError(f"{where}.api_version: only for provider azure")
        out["api_version"] = _identifier(raw["api_version"], f"{where}.api_version")
    elif provider == "azure":
        raise ConfigError(f"{where}.api_version: required for provider azure "
                          "(such as 2024-10-21)")
    return out


def _resolve_file_target(
    t: dict[str, Any], i: int, merged: dict[str, Any], sources: dict[str, str],
    environ: Mapping[str, str],
) -> tuple[TargetSettings, str, str]:
    """A file target with every default applied. Also returns where its probe list came
    from, and the error to raise if its key is missing ("" when it is fine).

    For provider openai, the environment's target variables (OPENAI_BASE_URL, OPENAI_ORG_ID,
    OPENAI_PROJECT_ID, OPENAI_*_MODEL, PROBE_ENDPOINTS/--probe.endpoints) fill in what the
    target leaves out. Azure deployments and compatible servers have their own model names
    and URLs, so they never read them.
    """
    where = f"config file targets[{i}]"
    provider = t["provider"]
    fill = provider == "openai"
    heavy = merged["heavy"]

    if "probes" in t:
        probes, probes_from = t["probes"], f"{where}.probes"
    elif fill and "probes" in merged:
        probes, probes_from = merged["probes"], sources["probes"]
    else:
        probes, probes_from = default_probes(provider, heavy), ""

    models: dict[str, str] = {}
    given = t.get("models", {})
    for kind in MODEL_KINDS:
        if kind in given:
            models[kind] = given[kind]
        elif fill:
            models[kind] = merged.get(f"model.{kind}", DEFAULT_MODELS[kind])
    for name in probes:
        needed = CATALOGUE[name].model_kind
        if needed and needed not in models:
            what = ("the deployment name" if provider == "azure"
                    else "the model name the server serves")
            raise ConfigError(f"{where}.models.{needed}: required for provider {provider} by "
                              f"probe {name!r} ({what})")

    base_url = t.get("base_url") or (merged.get("base_url") if fill else None) or OPENAI_BASE_URL
    key_env = t.get("api_key_env", DEFAULT_KEY_ENV[provider])
    api_key = check_secret_text(environ.get(key_env, "").strip(), key_env) if key_env else ""
    key_error = ""
    if key_env and not api_key:
        named = ("named by api_key_env" if "api_key_env" in t
                 else f"(the default api_key_env for provider {provider})")
        key_error = (f"targets[{i}] ({t['name']}): environment variable {key_env} {named} "
                     "is not set")
    # The admin key: the target's own admin_key_env, else OPENAI_ADMIN_KEY (openai only).
    admin_env, admin_key = "", ""
    if "admin_key_env" in t:
        admin_env = t["admin_key_env"]
        admin_key = environ.get(admin_env, "").strip()
        if not admin_key and not key_error:
            key_error = (f"targets[{i}] ({t['name']}): environment variable {admin_env} "
                         "named by admin_key_env is not set")
    elif fill and merged.get("admin_key"):
        admin_env, admin_key = sources["admin_key"], merged["admin_key"]
    target = TargetSettings(
        name=t["name"], provider=provider, base_url=base_url, api_key=api_key,
        api_key_env=key_env, admin_key=admin_key, admin_key_env=admin_env,
        region=t.get("region", merged["region"]), models=models,
        probes=probes, headers=t.get("headers", {}),
        org_id=t.get("org_id", merged.get("org_id", "") if fill else ""),
        project_id=t.get("project_id", merged.get("project_id", "") if fill else ""),
        api_version=t.get("api_version", ""),
        connection=t.get("connection", merged["connection"]),
    )
    return target, probes_from, key_error


def _env_target(merged: dict[str, Any], sources: dict[str, str],
                environ: Mapping[str, str]) -> tuple[TargetSettings, str, str]:
    """The single target of a configuration without `targets:` in a file."""
    probes = merged.get("probes") or default_probes("openai", merged["heavy"])
    key_error = ""
    if "base_url" in merged:
        key_error = ("OPENAI_API_KEY: not set; export it, or unset OPENAI_BASE_URL to run "
                     "the key-less demo")
    elif merged["demo"] is False:
        how = "drop" if sources["demo"].startswith("--") else "unset"
        key_error = (f"OPENAI_API_KEY: not set; export it, or {how} {sources['demo']} to run "
                     "the key-less demo")
    target = TargetSettings(
        name="openai", provider="openai",
        base_url=merged.get("base_url", OPENAI_BASE_URL),
        api_key=check_secret_text(environ.get("OPENAI_API_KEY", "").strip(), "OPENAI_API_KEY"),
        api_key_env="OPENAI_API_KEY", region=merged["region"],
        admin_key=merged.get("admin_key", ""),
        admin_key_env=sources.get("admin_key", "") if merged.get("admin_key") else "",
        models={k: merged.get(f"model.{k}", DEFAULT_MODELS[k]) for k in MODEL_KINDS},
        probes=probes, org_id=merged.get("org_id", ""),
        project_id=merged.get("project_id", ""),
        connection=merged["connection"],
    )
    return target, sources.get("probes", ""), "" if target.api_key else key_error

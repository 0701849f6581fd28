"""The objects load() returns (Settings, TargetSettings) and the one error it raises."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..catalogue import CATALOGUE
from ..usage.kinds import DEFAULT_GROUP_BY, DEFAULT_KINDS


class ConfigError(Exception):
    """A bad setting. str(err) is one readable line naming the setting and what is allowed."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split("\n")))


@dataclass(frozen=True)
class TargetSettings:
    name: str  # label value, [a-zA-Z0-9_.-]+
    provider: str  # openai | azure | openai_compatible
    base_url: str  # no trailing slash
    api_key: str = field(default="", repr=False)  # the resolved secret; never printed
    api_key_env: str = "OPENAI_API_KEY"  # "" for an openai_compatible target without a key
    region: str = "us-west-1"
    # model per model_kind in the catalogue: chat, embeddings, moderation, image
    # (for azure: the deployment name)
    models: dict[str, str] = field(default_factory=dict)
    probes: tuple[str, ...] = ()  # enabled probe keys, in catalogue order
    headers: dict[str, str] = field(default_factory=dict)  # extra request headers
    org_id: str = ""
    project_id: str = ""
    api_version: str = ""  # azure only
    # The organisation's admin key (Usage and Costs APIs), sent only to /organization/*;
    # "" when this target's organisation is not polled. Never printed.
    admin_key: str = field(default="", repr=False)
    admin_key_env: str = ""  # where admin_key came from ("" when none)
    # fresh: a new TCP (+TLS) connection every probe; reuse: the pooled warm one
    connection: str = "fresh"

    def model_for(self, endpoint: str) -> str:
        """The model (azure: deployment) a probe of `endpoint` names; "" for probes that
        take no model (models, files, ...)."""
        kind = CATALOGUE[endpoint].model_kind
        return self.models.get(kind, "") if kind else ""


@dataclass(frozen=True)
class Settings:
    targets: tuple[TargetSettings, ...]
    interval_seconds: float = 30.0
    timeout_seconds: float = 12.0
    mode: str = "roundrobin"  # roundrobin | all
    connection: str = "fresh"  # fresh | reuse: the default of targets that set none
    heavy: bool = False
    listen_host: str = "0.0.0.0"
    listen_port: int = 9188
    log_level: str = "INFO"
    log_format: str = "json"  # json | text
    demo: bool = False  # no key: probe the bundled fake upstream
    max_workers: int = 8
    # USD per 1M tokens: {model: {"input": x, "output": y}}; shipped table merged with YAML
    prices: dict[str, dict[str, float]] = field(default_factory=dict)
    # history (issue 3)
    enable_db: bool = False
    db_file: str = "data.db"
    history_retention_hours: float = 24.0
    history_max_events: int = 100_000
    web_auth_token: str = field(default="", repr=False)
    # organisation usage and spend (issue 9, docs/usage.md)
    admin_key: str = field(default="", repr=False)  # OPENAI_ADMIN_KEY
    usage_poll_interval_seconds: float = 300.0
    usage_lookback_minutes: int = 60
    usage_kinds: tuple[str, ...] = DEFAULT_KINDS
    usage_group_by: tuple[str, ...] = DEFAULT_GROUP_BY
    usage_max_series: int = 1000
    probe_budget_usd_per_day: float | None = None  # None: no cap
    # scale-out (shards.py): this instance probes the targets whose name hashes to
    # shard_index of shard_count; `primary` runs the once-per-fleet work (the organisation
    # usage poller reads this flag and nothing else about shards).
    shard_index: int = 0
    shard_count: int = 1
    primary: bool = True
    targets_on_other_shards: int = 0  # configured targets this instance leaves to others
    # The target whose organisation this instance polls (usage, spend): the first target
    # with an admin key, on the primary instance only, whichever shard probes it.
    usage_target: TargetSettings | None = field(default=None, repr=False)
    config_file: str = ""
    config_check: bool = False  # --config.check: main() validates, prints a summary, exits 0

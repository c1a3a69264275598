"""Core configuration from env vars (and a `.env`-style file named by REMEDIUM_CONFIG).

Loaded once by each entry point and passed down; nothing reads the environment at import.
Each integration declares its own settings model in its room under `activities/`
(`REMEDIUM_<SYSTEM>_*`); `Settings.of(model)` reads it the same way, so a test or the demo
can still say `Settings(prometheus_url=...)` and have the Prometheus room see it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from remedium.names import DEFAULT_NAMESPACE, DEFAULT_TASK_QUEUE

S = TypeVar("S", bound=BaseSettings)


def env_names(model: type[BaseSettings], name: str, field: FieldInfo) -> list[str]:
    """The environment variable(s) a settings field is read from, as the user spells them."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        envs = [choice for choice in alias.choices if isinstance(choice, str)]
    elif isinstance(alias, str):
        envs = [alias]
    else:
        envs = [f"{model.model_config.get('env_prefix', '')}{name}"]
    return [env.upper() for env in envs]


def _flat_names(model: type[BaseSettings], name: str, field: FieldInfo) -> list[str]:
    """`REMEDIUM_PROMETHEUS_URL` -> `prometheus_url`: the key a `Settings(...)` override uses."""
    return [env.lower().removeprefix("remedium_") for env in env_names(model, name, field)]


class Settings(BaseSettings):
    # Extra keyword arguments are kept (not read from the environment): they are overrides
    # for integration settings, named as their env var without the REMEDIUM_ prefix.
    model_config = SettingsConfigDict(env_prefix="REMEDIUM_", extra="allow")

    temporal_address: str = "localhost:7233"
    # Explicit REMEDIUM_TEMPORAL_ADDRESS / REMEDIUM_NAMESPACE win over the SDK's TEMPORAL_* env and
    # TOML profile (remedium/connection.py); set only by connection.embedded() for `up` / `demo`,
    # whose own dev server is plain gRPC, never from the environment.
    _embedded_temporal: bool = PrivateAttr(default=False)
    namespace: str = DEFAULT_NAMESPACE
    task_queue: str = DEFAULT_TASK_QUEUE
    runbooks_dir: Path = Path("./runbooks")
    policy_file: Path | None = None
    ingress_address: str = "127.0.0.1:8088"
    pagerduty_webhook_secret: SecretStr | None = Field(
        default=None, description="comma-separated to accept several during rotation"
    )
    alertmanager_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    insecure_webhooks: bool = False
    max_webhook_bytes: int = 1024 * 1024
    temporal_ui_url: str = Field(default="http://localhost:8233", description="for links in reports")
    metrics_address: str | None = Field(
        default=None,
        description="host:port where the worker serves /metrics (remedium/metrics.py); off when unset",
    )
    # Payload encryption (remedium/codec.py) and `remedium codec-server`; README "Payload encryption".
    codec_keys: SecretStr | None = Field(
        default=None, description="id:base64key,...: the first encrypts, all decrypt (rotation)"
    )
    codec_server_address: str = "127.0.0.1:8888"
    codec_server_token: SecretStr | None = None
    insecure_codec_server: bool = False
    codec_cors_origins: str = Field(
        default="http://localhost:8233,http://127.0.0.1:8233", description="comma-separated UI origins"
    )
    codec_max_request_bytes: int = 8 * 1024 * 1024
    # Worker tuning (bench/README.md has the measurements behind the defaults). The cache holds
    # each running incident's workflow in memory between its tasks; an evicted one is replayed
    # from history on its next task (an approval, a verify tick), which is fast next to a wait.
    worker_max_cached_workflows: int = Field(
        default=250, description="incident workflows kept in worker memory (0 disables the cache)"
    )
    worker_max_concurrent_workflow_tasks: int | None = Field(
        default=None, description="workflow task slots of the normal queue (SDK default when unset)"
    )
    worker_max_concurrent_activities: int | None = Field(
        default=None, description="activity slots of the normal queue (SDK default when unset)"
    )
    # Worker Deployment versioning (remedium/versioning.py): off unless a build id is set.
    worker_build_id: str | None = Field(
        default=None, description="this build's id; incidents stay pinned to the build they started on"
    )
    worker_deployment_name: str | None = Field(
        default=None, description="the Worker Deployment (no '.'); the task queue when unset"
    )

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Read the environment, plus the file named by REMEDIUM_CONFIG if set."""
        config_file = os.environ.get("REMEDIUM_CONFIG")
        if config_file:
            return cls(_env_file=config_file, **overrides)
        return cls(**overrides)

    def of(self, model: type[S]) -> S:
        """An integration's settings: its env vars and REMEDIUM_CONFIG file, then our overrides."""
        overrides: dict[str, Any] = {}
        extras = self.model_extra or {}
        for name, field in model.model_fields.items():
            for key in _flat_names(model, name, field):
                if key in extras:
                    overrides[name] = extras[key]
                    break
                if key in type(self).model_fields and key in self.model_fields_set:
                    overrides[name] = getattr(self, key)  # one of ours, e.g. slack_signing_secret
                    break
        config_file = os.environ.get("REMEDIUM_CONFIG")
        if config_file:
            return model(_env_file=config_file, **overrides)
        return model(**overrides)

    def pagerduty_secrets(self) -> list[bytes]:
        if self.pagerduty_webhook_secret is None:
            return []
        raw = self.pagerduty_webhook_secret.get_secret_value()
        return [part.strip().encode() for part in raw.split(",") if part.strip()]

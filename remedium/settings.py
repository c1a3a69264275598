"""Configuration from env vars (and a `.env`-style file named by REMEDIUM_CONFIG).

Loaded once by each entry point and passed down; nothing reads the environment at import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from remedium.names import DEFAULT_NAMESPACE, DEFAULT_TASK_QUEUE


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REMEDIUM_", extra="ignore")

    temporal_address: str = "localhost:7233"
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

    # Kubernetes: a kubeconfig file (KUBECONFIG as kubectl reads it), else in-cluster config.
    kubeconfig: Path | None = Field(
        default=None, validation_alias=AliasChoices("REMEDIUM_KUBECONFIG", "KUBECONFIG")
    )
    kube_context: str | None = None

    # Telemetry: bearer token or basic auth, whichever is set.
    prometheus_url: str | None = None
    prometheus_token: SecretStr | None = None
    prometheus_username: str | None = None
    prometheus_password: SecretStr | None = None
    loki_url: str | None = None
    loki_token: SecretStr | None = None
    loki_username: str | None = None
    loki_password: SecretStr | None = None
    loki_org_id: str | None = Field(default=None, description="X-Scope-OrgID for multi-tenant Loki")

    # Reporting.
    slack_token: SecretStr | None = None
    slack_channel: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    jira_url: str | None = None
    jira_user: str | None = None
    jira_token: SecretStr | None = None
    jira_project: str | None = None
    pagerduty_token: SecretStr | None = None
    pagerduty_from: str | None = None
    pagerduty_api_url: str = "https://api.pagerduty.com"

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Read the environment, plus the file named by REMEDIUM_CONFIG if set."""
        config_file = os.environ.get("REMEDIUM_CONFIG")
        if config_file:
            return cls(_env_file=config_file, **overrides)
        return cls(**overrides)

    def pagerduty_secrets(self) -> list[bytes]:
        if self.pagerduty_webhook_secret is None:
            return []
        raw = self.pagerduty_webhook_secret.get_secret_value()
        return [part.strip().encode() for part in raw.split(",") if part.strip()]

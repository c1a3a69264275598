"""Configuration from env vars (and a `.env`-style file named by REMEDIUM_CONFIG).

Loaded once by each entry point and passed down; nothing reads the environment at import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
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

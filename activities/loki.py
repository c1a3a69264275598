"""The `logs` diagnostic: a LogQL range query against Loki, with named-group extraction.

Params: `query` (LogQL), `since` (window ending now, default 1h), `limit` (100),
`extract` ({name: regex with named groups}). The fact's value, lines oldest first:

    {count, streams, lines: [last 50 lines], labels: [stream label sets],
     extract: {name: {count, first: {group: text} | None, last: {...} | None}}}

e.g. `facts.errors.value.extract.timeout.last.replica == "replica-2"`.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Literal, Self

import httpx
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict
from temporalio.exceptions import ApplicationError

from remedium.catalog import (
    Clients,
    Diagnostic,
    Integration,
    IntegrationSettings,
    register_diagnostic,
    register_integration,
)
from remedium.errors import ErrorType
from remedium.models.common import Duration, UserModel
from remedium.telemetry import check_patterns, extract, not_configured, read, telemetry_client

KEPT_LINES = 50


class LogsParams(UserModel):
    query: str = Field(min_length=1)
    since: Duration = timedelta(hours=1)
    limit: int = Field(default=100, ge=1, le=5000)
    direction: Literal["backward", "forward"] = "backward"
    extract: dict[str, str] = Field(default_factory=dict, description="name -> regex with named groups")

    @field_validator("extract")
    @classmethod
    def _regexes(cls, value: dict[str, str]) -> dict[str, str]:
        return check_patterns(value)


class LokiSettings(IntegrationSettings):
    """REMEDIUM_LOKI_URL, a bearer token or basic auth, and the tenant of a multi-tenant Loki."""

    model_config = SettingsConfigDict(env_prefix="REMEDIUM_LOKI_")

    url: str | None = None
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    org_id: str | None = Field(default=None, description="X-Scope-OrgID for multi-tenant Loki")


def loki_http_client(settings: LokiSettings) -> httpx.AsyncClient | None:
    headers = {"X-Scope-OrgID": settings.org_id} if settings.org_id else None
    return telemetry_client(settings.url, settings.token, settings.username, settings.password, headers)


LOKI = register_integration(
    Integration(
        name="loki",
        settings=LokiSettings,
        connect=loki_http_client,
        describe=lambda settings: settings.url or "",
    )
)


def logs_fact(data: dict[str, Any], patterns: dict[str, str]) -> dict[str, Any]:
    entries: list[tuple[int, str]] = []
    labels: list[dict[str, str]] = []
    for stream in data.get("result") or []:
        labels.append(dict(stream.get("stream", {})))
        entries.extend((int(ts), str(line)) for ts, line in stream.get("values", []))
    entries.sort(key=lambda e: e[0])
    lines = [line for _, line in entries]
    return {
        "count": len(lines),
        "streams": len(labels),
        "labels": labels,
        "lines": lines[-KEPT_LINES:],
        "extract": extract(lines, patterns),
    }


@register_diagnostic
class LogQuery(Diagnostic[LogsParams]):
    kind = "logs"
    params_model = LogsParams
    description = "LogQL range query; named-group extraction over the lines."

    def __init__(self, client: httpx.AsyncClient | None) -> None:
        self._client = client

    @classmethod
    def build(cls, clients: Clients) -> Self:
        return cls(LOKI.client(clients))

    async def run(self, params: LogsParams) -> tuple[Any, str | None]:
        if self._client is None:
            raise not_configured("Loki", "REMEDIUM_LOKI_URL")
        end = time.time_ns()
        start = end - int(params.since.total_seconds() * 10**9)
        shown = f"LogQL since {params.since}: {params.query}"
        response = await read(
            self._client,
            "Loki",
            "/loki/api/v1/query_range",
            {
                "query": params.query,
                "start": str(start),
                "end": str(end),
                "limit": str(params.limit),
                "direction": params.direction,
            },
            shown,
        )
        body = response.json()
        data = body.get("data") or {}
        if data.get("resultType") != "streams":
            raise ApplicationError(
                f"Loki returned {data.get('resultType')!r} for {shown}; `logs` takes log queries only",
                type=ErrorType.QUERY_ERROR,
                non_retryable=True,
            )
        return logs_fact(data, params.extract), shown

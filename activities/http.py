"""HTTP actions and probes: call a service's own remediation or health endpoint.

`http.request` sends one request carrying `Idempotency-Key: <workflow id>/<step id>`, so a
retried or resumed step is recognised by any endpoint that honours the header; its
checkpoint is the runbook's declared `undo` request. The `http` diagnostic GETs a URL and
keeps the status and (JSON) body as a fact.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal, Self

import httpx
from pydantic import Field, HttpUrl
from pydantic_settings import SettingsConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

from remedium.catalog import (
    Action,
    Clients,
    Diagnostic,
    Integration,
    IntegrationSettings,
    make_checkpoint,
    register_action,
    register_diagnostic,
    register_integration,
)
from remedium.errors import ErrorType
from remedium.models import ActionRequest, ActionResult, DryRun, RollbackRequest
from remedium.models.common import UserModel

HEARTBEAT_EVERY_S = 2.0


class HttpSettings(IntegrationSettings):
    """Timeouts of the shared outbound client the `http` action and diagnostic use."""

    model_config = SettingsConfigDict(env_prefix="REMEDIUM_HTTP_")

    timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)


def http_client(settings: HttpSettings) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s))


HTTP = register_integration(Integration(name="http", settings=HttpSettings, connect=http_client))


def _shared_client(clients: Clients) -> httpx.AsyncClient:
    client = HTTP.client(clients)
    if client is None:
        raise RuntimeError("the worker built no shared HTTP client")
    return client


class UndoRequest(UserModel):
    method: Literal["POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: HttpUrl
    body: Any = Field(default=None, alias="json")


class HttpRequestParams(UserModel):
    method: Literal["POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: HttpUrl
    body: Any = Field(default=None, alias="json")
    headers: dict[str, str] = Field(default_factory=dict)
    expect_status: list[int] = Field(default_factory=lambda: [200, 201, 202, 204])
    undo: UndoRequest | None = None


class HttpProbeParams(UserModel):
    url: HttpUrl
    headers: dict[str, str] = Field(default_factory=dict)


def _describe(method: str, url: Any, body: Any) -> str:
    return f"{method} {url}" + ("" if body is None else f" {json.dumps(body, sort_keys=True)}")


async def _send_with_heartbeats(
    client: httpx.AsyncClient, method: str, url: str, body: Any, headers: dict[str, str]
) -> httpx.Response:
    """Send while heartbeating, so a worker that dies mid-request is noticed in seconds."""
    task = asyncio.ensure_future(client.request(method, url, json=body, headers=headers))
    while True:
        done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY_S)
        if done:
            return task.result()
        if activity.in_activity():
            activity.heartbeat(f"waiting for {method} {url}")


def _check_status(response: httpx.Response, expected: list[int], what: str) -> None:
    if response.status_code in expected:
        return
    message = f"{what} answered {response.status_code}: {response.text[:500]}"
    retryable = response.status_code >= 500 or response.status_code in (408, 429)
    raise ApplicationError(
        message, type=ErrorType.http_status(response.status_code), non_retryable=not retryable
    )


@register_action
class HttpRequest(Action[HttpRequestParams]):
    name = "http.request"
    params_model = HttpRequestParams
    description = "Call a remediation endpoint (idempotency-keyed); rollback sends the declared undo."

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    @classmethod
    def build(cls, clients: Clients) -> Self:
        return cls(_shared_client(clients))

    async def dry_run(self, request: ActionRequest, params: HttpRequestParams) -> DryRun:
        undo = (
            f"rollback: {_describe(params.undo.method, params.undo.url, params.undo.body)}"
            if params.undo
            else "no undo declared: a rollback would need a human"
        )
        return DryRun(
            action=self.name,
            step_id=request.step_id,
            target=str(params.url),
            summary=f"would send {_describe(params.method, params.url, params.body)}",
            diff=f"+ {_describe(params.method, params.url, params.body)}\n  {undo}",
        )

    async def execute(self, request: ActionRequest, params: HttpRequestParams) -> ActionResult:
        headers = {**params.headers, "Idempotency-Key": request.idempotency_key}
        what = _describe(params.method, params.url, params.body)
        response = await _send_with_heartbeats(
            self._client, params.method, str(params.url), params.body, headers
        )
        _check_status(response, params.expect_status, what)
        checkpoint = None
        if params.undo is not None:
            checkpoint = make_checkpoint(
                request,
                str(params.url),
                undo=f"send {_describe(params.undo.method, params.undo.url, params.undo.body)}",
                undo_request=params.undo.model_dump(mode="json", by_alias=True),
            )
        return ActionResult(
            action=self.name,
            step_id=request.step_id,
            idempotency_key=request.idempotency_key,
            target=str(params.url),
            changed=True,
            summary=f"sent {what}: {response.status_code}",
            output={"status": response.status_code, "body": _body(response)},
            checkpoint=checkpoint,
        )

    async def rollback(self, request: RollbackRequest) -> ActionResult:
        undo = UndoRequest.model_validate(request.checkpoint.captured["undo_request"])
        what = _describe(undo.method, undo.url, undo.body)
        response = await _send_with_heartbeats(
            self._client,
            undo.method,
            str(undo.url),
            undo.body,
            {"Idempotency-Key": request.idempotency_key},
        )
        _check_status(response, [200, 201, 202, 204], what)
        return ActionResult(
            action=self.name,
            step_id=request.checkpoint.step_id,
            idempotency_key=request.idempotency_key,
            target=request.checkpoint.target,
            changed=True,
            summary=f"rolled back with {what}: {response.status_code}",
            output={"status": response.status_code},
        )


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:2000]


@register_diagnostic
class HttpProbe(Diagnostic[HttpProbeParams]):
    kind = "http"
    params_model = HttpProbeParams
    description = "GET a URL; the fact is {status, body}."

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    @classmethod
    def build(cls, clients: Clients) -> Self:
        return cls(_shared_client(clients))

    async def run(self, params: HttpProbeParams) -> tuple[Any, str | None]:
        try:
            response = await self._client.get(str(params.url), headers=params.headers)
        except httpx.HTTPError as exc:
            raise ApplicationError(f"GET {params.url} failed: {exc!r}", type=ErrorType.UNREACHABLE) from exc
        return {"status": response.status_code, "body": _body(response)}, f"GET {params.url}"

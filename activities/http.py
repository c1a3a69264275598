"""HTTP actions and probes: call a service's own remediation or health endpoint.

`http.request` sends one request carrying `Idempotency-Key: <workflow id>/<step id>`, so a
retried or resumed step is recognised by any endpoint that honours the header; its
checkpoint is the runbook's declared `undo` request. The `http` diagnostic GETs a URL and
keeps the status and (JSON) body as a fact.

Every request goes only where the policy's `http.allow` says (checked before anything is
sent, the host resolved off the event loop so a name pointing at loopback or a metadata
address is refused too), never follows a redirect, and reads at most MAX_BODY_BYTES of an
answer: an alert cannot aim the worker at an internal endpoint or flood an incident.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

import httpx
from pydantic import AfterValidator, Field, HttpUrl
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
from remedium.guards import HTTP_SCOPE, outbound_refusal, url_parts
from remedium.models import ActionRequest, ActionResult, DryRun, RollbackRequest, TargetScope
from remedium.models.common import UserModel
from remedium.summary import redact

HEARTBEAT_EVERY_S = 2.0
MAX_BODY_BYTES = 64 * 1024  # what an answer may bring into a fact or an action's output
TEXT_PREVIEW = 2000  # a body that is not JSON (or is cut) is kept as this much text


class HttpSettings(IntegrationSettings):
    """Timeouts of the shared outbound client the `http` action and diagnostic use."""

    model_config = SettingsConfigDict(env_prefix="REMEDIUM_HTTP_")

    timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)


def http_client(settings: HttpSettings) -> httpx.AsyncClient:
    """Redirects are never followed: a 302 to an internal address is an answer, not a request."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
        follow_redirects=False,
    )


HTTP = register_integration(Integration(name="http", settings=HttpSettings, connect=http_client))


def _shared_client(clients: Clients) -> httpx.AsyncClient:
    client = HTTP.client(clients)
    if client is None:
        raise RuntimeError("the worker built no shared HTTP client")
    return client


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address a host name resolves to; getaddrinfo runs in the loop's executor thread."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class OutboundGuard:
    """The policy's `http.allow`, applied by the activities themselves before any request.

    The workflow already refuses a disallowed `http.request` step before approval (from the
    dry run's scope); this is the second wall, and the only one for `http` diagnostics.
    """

    def __init__(self, allow: list[str], resolve: Resolver = resolve_host) -> None:
        self._allow = list(allow)
        self._resolve = resolve

    async def addresses(self, url: str) -> dict[str, list[str]]:
        """What the URL's host resolves to (nothing for an IP literal or a name that does not resolve)."""
        parts = url_parts(url)
        if parts is None or parts.address is not None:
            return {}
        try:
            return {parts.host: await self._resolve(parts.host, parts.port)}
        except OSError:
            return {}

    async def check(self, url: str) -> None:
        """Raise the non-retryable GUARD_REFUSED error unless the policy allows this URL."""
        refusal = outbound_refusal(self._allow, url)
        if refusal is None:
            parts = url_parts(url)
            resolved = (await self.addresses(url)).get(parts.host) if parts is not None else None
            refusal = outbound_refusal(self._allow, url, resolved)
        if refusal is not None:
            raise ApplicationError(refusal, type=ErrorType.GUARD_REFUSED, non_retryable=True)


def _no_host_header(headers: dict[str, str]) -> dict[str, str]:
    """A templated `Host` header would reach another virtual host behind an allowed address."""
    if any(name.strip().lower() == "host" for name in headers):
        raise ValueError("the Host header is set from the URL, which http.allow checks; it cannot be given")
    return headers


Headers = Annotated[dict[str, str], AfterValidator(_no_host_header)]


class UndoRequest(UserModel):
    method: Literal["POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: HttpUrl
    body: Any = Field(default=None, alias="json")


class HttpRequestParams(UserModel):
    method: Literal["POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: HttpUrl
    body: Any = Field(default=None, alias="json")
    headers: Headers = Field(default_factory=dict)
    expect_status: list[int] = Field(default_factory=lambda: [200, 201, 202, 204])
    undo: UndoRequest | None = None


class HttpProbeParams(UserModel):
    url: HttpUrl
    headers: Headers = Field(default_factory=dict)


def _describe(method: str, url: Any, body: Any) -> str:
    return f"{method} {url}" + ("" if body is None else f" {json.dumps(body, sort_keys=True)}")


@dataclass(frozen=True)
class Answer:
    """An HTTP answer read up to MAX_BODY_BYTES: what a fact or an action's output may keep."""

    status: int
    text: str
    truncated: bool

    def body(self) -> Any:
        """The JSON body, or the start of the text (marked when the answer or the text was cut)."""
        if not self.truncated:
            try:
                return json.loads(self.text)
            except ValueError:
                pass
            if len(self.text) <= TEXT_PREVIEW:
                return self.text
        return self.text[:TEXT_PREVIEW] + " …[truncated]"


async def _fetch(
    client: httpx.AsyncClient, method: str, url: str, body: Any, headers: dict[str, str]
) -> Answer:
    """One request, no redirects followed, reading no more of the answer than MAX_BODY_BYTES."""
    async with client.stream(method, url, json=body, headers=headers, follow_redirects=False) as response:
        chunks: list[bytes] = []
        size = 0
        truncated = False
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                truncated = True
                break
        content = b"".join(chunks)[:MAX_BODY_BYTES]
        text = content.decode(response.encoding or "utf-8", errors="replace")
        return Answer(response.status_code, text, truncated)


async def _send_with_heartbeats(
    client: httpx.AsyncClient, method: str, url: str, body: Any, headers: dict[str, str]
) -> Answer:
    """Send while heartbeating, so a worker that dies mid-request is noticed in seconds."""
    task = asyncio.ensure_future(_fetch(client, method, url, body, headers))
    while True:
        done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY_S)
        if done:
            return task.result()
        if activity.in_activity():
            activity.heartbeat(f"waiting for {method} {url}")


def _check_status(answer: Answer, expected: list[int], what: str) -> None:
    if answer.status in expected:
        return
    # this text reaches the audit trail and the channels: no secrets, no floods
    message = f"{what} answered {answer.status}: {redact(answer.text[:500])}"
    retryable = answer.status >= 500 or answer.status in (408, 429)
    raise ApplicationError(message, type=ErrorType.http_status(answer.status), non_retryable=not retryable)


@register_action
class HttpRequest(Action[HttpRequestParams]):
    name = "http.request"
    params_model = HttpRequestParams
    description = "Call a remediation endpoint (idempotency-keyed); rollback sends the declared undo."

    def __init__(self, client: httpx.AsyncClient, guard: OutboundGuard | None = None) -> None:
        self._client = client
        self._guard = guard or OutboundGuard([])

    @classmethod
    def build(cls, clients: Clients) -> Self:
        return cls(_shared_client(clients), OutboundGuard(clients.policy.http.allow))

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
            scope=await self._scope(params),
        )

    async def _scope(self, params: HttpRequestParams) -> TargetScope:
        """Every URL the step may reach and what their hosts resolve to: the workflow checks http.allow."""
        urls = [str(params.url)] + ([str(params.undo.url)] if params.undo else [])
        addresses: dict[str, list[str]] = {}
        for url in urls:
            addresses.update(await self._guard.addresses(url))
        return TargetScope(kind=HTTP_SCOPE, name=str(params.url), urls=urls, addresses=addresses)

    async def execute(self, request: ActionRequest, params: HttpRequestParams) -> ActionResult:
        await self._guard.check(str(params.url))
        if params.undo is not None:  # acting without a way back would be worse than not acting
            await self._guard.check(str(params.undo.url))
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
            summary=f"sent {what}: {response.status}",
            output={"status": response.status, "body": response.body()},
            checkpoint=checkpoint,
        )

    async def rollback(self, request: RollbackRequest) -> ActionResult:
        undo = UndoRequest.model_validate(request.checkpoint.captured["undo_request"])
        await self._guard.check(str(undo.url))
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
            summary=f"rolled back with {what}: {response.status}",
            output={"status": response.status},
        )


@register_diagnostic
class HttpProbe(Diagnostic[HttpProbeParams]):
    kind = "http"
    params_model = HttpProbeParams
    description = "GET a URL; the fact is {status, body}."

    def __init__(self, client: httpx.AsyncClient, guard: OutboundGuard | None = None) -> None:
        self._client = client
        self._guard = guard or OutboundGuard([])

    @classmethod
    def build(cls, clients: Clients) -> Self:
        return cls(_shared_client(clients), OutboundGuard(clients.policy.http.allow))

    async def run(self, params: HttpProbeParams) -> tuple[Any, str | None]:
        await self._guard.check(str(params.url))
        try:
            answer = await _fetch(self._client, "GET", str(params.url), None, params.headers)
        except httpx.HTTPError as exc:
            raise ApplicationError(f"GET {params.url} failed: {exc!r}", type=ErrorType.UNREACHABLE) from exc
        return {"status": answer.status, "body": answer.body()}, f"GET {params.url}"

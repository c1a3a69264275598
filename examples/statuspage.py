"""A status page as a Remedium integration: post a notice while an incident is handled.

Copy this file into `activities/` and runbooks can use `statuspage.post_notice`; the worker
finds it on its own. Settings: REMEDIUM_STATUSPAGE_URL, REMEDIUM_STATUSPAGE_TOKEN.
"""

from __future__ import annotations

from typing import Self

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict
from temporalio.exceptions import ApplicationError

from remedium.catalog import (
    Action,
    Clients,
    Integration,
    IntegrationSettings,
    make_checkpoint,
    register_action,
    register_integration,
)
from remedium.errors import ErrorType
from remedium.models import ActionRequest, ActionResult, DryRun, RollbackRequest
from remedium.models.common import UserModel


class StatusPageSettings(IntegrationSettings):
    model_config = SettingsConfigDict(env_prefix="REMEDIUM_STATUSPAGE_")

    url: str | None = None
    token: SecretStr | None = None


def statuspage_client(settings: StatusPageSettings) -> httpx.AsyncClient | None:
    """None when no URL is set: the system is simply not configured."""
    if not settings.url:
        return None
    token = settings.token.get_secret_value() if settings.token else ""
    return httpx.AsyncClient(base_url=settings.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


STATUSPAGE = register_integration(
    Integration(name="statuspage", settings=StatusPageSettings, connect=statuspage_client)
)


class NoticeParams(UserModel):
    component: str = Field(min_length=1, pattern=r"^[a-z0-9-]+$")
    message: str = Field(min_length=1, max_length=500)


@register_action
class PostNotice(Action[NoticeParams]):
    name = "statuspage.post_notice"
    params_model = NoticeParams
    description = "Show a notice on a status page component; rollback puts the previous one back."

    def __init__(self, client: httpx.AsyncClient | None) -> None:
        self._client = client

    @classmethod
    def build(cls, clients: Clients) -> Self:
        return cls(STATUSPAGE.client(clients))

    def _api(self) -> httpx.AsyncClient:
        if self._client is None:
            raise ApplicationError(
                "the status page is not configured (REMEDIUM_STATUSPAGE_URL)",
                type=ErrorType.NOT_CONFIGURED,
                non_retryable=True,
            )
        return self._client

    async def dry_run(self, request: ActionRequest, params: NoticeParams) -> DryRun:
        return DryRun(
            action=self.name,
            step_id=request.step_id,
            target=f"statuspage/{params.component}",
            summary=f"would post notice on {params.component}: {params.message!r}",
        )

    async def execute(self, request: ActionRequest, params: NoticeParams) -> ActionResult:
        api = self._api()
        path = f"/components/{params.component}/notice"
        before = await api.get(path)
        before.raise_for_status()
        previous = before.json().get("message")
        if previous != params.message:  # the same step run twice changes nothing more
            response = await api.put(
                path, json={"message": params.message}, headers={"Idempotency-Key": request.idempotency_key}
            )
            response.raise_for_status()
        target = f"statuspage/{params.component}"
        return ActionResult(
            action=self.name,
            step_id=request.step_id,
            idempotency_key=request.idempotency_key,
            target=target,
            changed=previous != params.message,
            summary=f"notice posted on {params.component}",
            checkpoint=make_checkpoint(
                request,
                target,
                undo=f"put back the previous notice of {params.component}",
                component=params.component,
                previous=previous,
            ),
        )

    async def rollback(self, request: RollbackRequest) -> ActionResult:
        captured = request.checkpoint.captured
        path = f"/components/{captured['component']}/notice"
        api = self._api()
        if captured["previous"] is None:
            response = await api.delete(path)
        else:
            response = await api.put(path, json={"message": captured["previous"]})
        response.raise_for_status()
        return ActionResult(
            action=self.name,
            step_id=request.checkpoint.step_id,
            idempotency_key=request.idempotency_key,
            target=request.checkpoint.target,
            changed=True,
            summary=f"previous notice of {captured['component']} put back",
        )

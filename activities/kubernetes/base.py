"""What every Kubernetes action and the diagnostic share, so each action module holds only its verbs.

An action is built from the worker's `Clients`; without a configured cluster it still builds
and fails on first use with a non-retryable error naming the setting to add, so the worker
starts and the incident's audit trail says what is missing. Results, rollbacks and dry runs
are shaped here once, and so is the polling of the read-only waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Self, TypeVar

import kubernetes.client
from pydantic import BaseModel, Field
from temporalio.exceptions import ApplicationError

from activities.kubernetes.client import KUBERNETES, NOT_CONFIGURED, Kube, heartbeat
from activities.kubernetes.objects import meta
from remedium.catalog import Action, Clients
from remedium.errors import ErrorType
from remedium.models import ActionRequest, ActionResult, Checkpoint, DryRun, RollbackRequest
from remedium.models.common import Duration, UserModel
from remedium.models.incident import TargetScope

P = TypeVar("P", bound=BaseModel)
DRY = {"dry_run": "All"}
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class Target(UserModel):
    namespace: str = Field(min_length=1)
    name: str = Field(min_length=1)


class WaitParams(Target):
    timeout: Duration = timedelta(minutes=5)
    poll: Duration = timedelta(seconds=2)


def _now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _invalid(message: str, kind: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


class _KubeBase:
    def __init__(self, api: kubernetes.client.ApiClient | None) -> None:
        self._kube = Kube(api) if api is not None else None

    @classmethod
    def build(cls, clients: Clients) -> Self:
        return cls(KUBERNETES.client(clients))

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            raise ApplicationError(
                NOT_CONFIGURED, type=ErrorType.KUBERNETES_NOT_CONFIGURED, non_retryable=True
            )
        return self._kube


class _KubeAction(_KubeBase, Action[P]):
    def _result(
        self,
        request: ActionRequest,
        target: str,
        changed: bool,
        summary: str,
        output: dict[str, Any] | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> ActionResult:
        return ActionResult(
            action=self.name,
            step_id=request.step_id,
            idempotency_key=request.idempotency_key,
            target=target,
            changed=changed,
            summary=summary,
            output=output or {},
            checkpoint=checkpoint,
        )

    def _rolled_back(self, request: RollbackRequest, changed: bool, summary: str) -> ActionResult:
        return ActionResult(
            action=self.name,
            step_id=request.checkpoint.step_id,
            idempotency_key=request.idempotency_key,
            target=request.checkpoint.target,
            changed=changed,
            summary=summary,
        )

    def _dry(
        self, request: ActionRequest, target: str, summary: str, diff: str, scope: TargetScope | None
    ) -> DryRun:
        return DryRun(
            action=self.name,
            step_id=request.step_id,
            target=target,
            summary=summary,
            diff=diff,
            would_change=bool(diff),
            scope=scope,
        )

    # ---- deployments (restart, rollback and the rollout wait all read and patch them)

    async def _deployment(self, namespace: str, name: str) -> dict[str, Any]:
        what = f"get deployment {namespace}/{name}"
        result: dict[str, Any] = await self.kube.call(
            what, self.kube.apps.read_namespaced_deployment, name, namespace
        )
        return result

    async def _patch_deployment(
        self, d: dict[str, Any], body: Any, content_type: str | None, dry: bool
    ) -> dict[str, Any]:
        namespace, name = str(meta(d).get("namespace")), str(meta(d).get("name"))
        extra: dict[str, Any] = {"_content_type": content_type} if content_type else {}
        result: dict[str, Any] = await self.kube.call(
            f"patch deployment {namespace}/{name}",
            self.kube.apps.patch_namespaced_deployment,
            name,
            namespace,
            body,
            **extra,
            **(DRY if dry else {}),
        )
        return result


class _Wait(_KubeAction[WaitParams]):
    state_changing = False
    noun = ""

    async def dry_run(self, request: ActionRequest, params: WaitParams) -> DryRun:
        target = f"{self.noun} {params.namespace}/{params.name}"
        return DryRun(
            action=self.name,
            step_id=request.step_id,
            target=target,
            summary=f"would wait up to {params.timeout} for {target}",
            would_change=False,
        )

    async def _poll(
        self,
        request: ActionRequest,
        params: WaitParams,
        check: Callable[[], Awaitable[tuple[str, str, dict[str, Any]]]],
    ) -> ActionResult:
        target = f"{self.noun} {params.namespace}/{params.name}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + params.timeout.total_seconds()
        while True:
            verdict, message, fact = await check()
            if verdict in ("complete", "succeeded"):
                return self._result(
                    request, target, False, f"{target}: {message}", {"state": verdict, "status": fact}
                )
            if verdict == "failed":
                raise ApplicationError(
                    f"{target} failed: {message}", fact, type=self.failure_type, non_retryable=True
                )
            if loop.time() >= deadline:
                raise ApplicationError(
                    f"{target} not done after {params.timeout}: {message}",
                    fact,
                    type=self.timeout_type,
                    non_retryable=True,
                )
            heartbeat(f"{target}: {message}")
            await asyncio.sleep(min(params.poll.total_seconds(), max(0.0, deadline - loop.time())))

    failure_type = ""
    timeout_type = ""

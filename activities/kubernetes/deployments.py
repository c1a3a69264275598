"""Deployment (and StatefulSet) actions: restart, rollback, scale, and waiting for a rollout.

Each does what kubectl does for the same verb, so an operator reading the audit trail sees
the change they would have made by hand: `rollout restart`'s strategic-merge patch, `rollout
undo`'s JSON Patch, a PATCH of the `scale` subresource, `rollout status`'s verdict. Restart
and rollback are undone by restoring the pod template they replaced (revisions.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from activities.kubernetes.base import (
    DRY,
    JSON_PATCH,
    MERGE,
    Target,
    WaitParams,
    _KubeAction,
    _now_rfc3339,
    _Wait,
)
from activities.kubernetes.facts import deployment_fact
from activities.kubernetes.objects import labels_of, marker, meta, recorded, yaml_diff
from activities.kubernetes.revisions import (
    _deployment_checkpoint,
    _refuse_paused,
    _UndoMixin,
    restart_patch,
    revision,
    rollout_state,
    template_of,
)
from remedium.catalog import make_checkpoint, register_action
from remedium.errors import ErrorType
from remedium.models import ActionRequest, ActionResult, DryRun, RollbackRequest
from remedium.models.incident import TargetScope


class RolloutRestartParams(Target):
    pass


class ScaleParams(Target):
    replicas: int | None = Field(default=None, ge=0)
    delta: int | None = None
    kind: Literal["Deployment", "StatefulSet"] = "Deployment"

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.replicas is None) == (self.delta is None):
            raise ValueError("give exactly one of replicas or delta")
        return self


class RollbackParams(Target):
    revision: int | None = Field(default=None, ge=1, description="default: the previous revision")


def _deployment_scope(d: dict[str, Any]) -> TargetScope:
    replicas = int((d.get("spec") or {}).get("replicas", 1))
    return TargetScope(
        kind="Deployment",
        namespace=str(meta(d).get("namespace")),
        name=str(meta(d).get("name")),
        labels=labels_of(d),
        replicas_before=replicas,
        replicas_after=replicas,
    )


@register_action
class RolloutRestart(_UndoMixin[RolloutRestartParams]):
    name = "kubernetes.rollout_restart"
    params_model = RolloutRestartParams
    description = "kubectl rollout restart of a Deployment; rollback = rollout undo to the revision before."

    async def dry_run(self, request: ActionRequest, params: RolloutRestartParams) -> DryRun:
        d = await self._deployment(params.namespace, params.name)
        _refuse_paused(d, "restart")
        target = f"deployment {params.namespace}/{params.name}"
        if recorded(d, request.idempotency_key) is not None:
            return self._dry(
                request, target, f"{target} was already restarted by this step", "", _deployment_scope(d)
            )
        body = {**restart_patch(_now_rfc3339()), "metadata": {"annotations": marker(request.idempotency_key)}}
        would = await self._patch_deployment(d, body, None, dry=True)
        diff = yaml_diff(
            {"spec": {"template": template_of(d)}}, {"spec": {"template": template_of(would)}}, target
        )
        return self._dry(
            request,
            target,
            f"would restart every pod of {target} (a new revision after {revision(d)}), rolling them",
            diff,
            _deployment_scope(d),
        )

    async def execute(self, request: ActionRequest, params: RolloutRestartParams) -> ActionResult:
        d = await self._deployment(params.namespace, params.name)
        target = f"deployment {params.namespace}/{params.name}"
        why = "the pod template before the restart"
        state = recorded(d, request.idempotency_key)
        if state is not None:
            checkpoint = await self._checkpoint_for(request, d, state.get("revision"), why)
            return self._result(
                request,
                target,
                False,
                f"{target} was already restarted by this step at {state.get('restartedAt')}",
                {"restarted_at": state.get("restartedAt"), "revision_before": state.get("revision")},
                checkpoint,
            )
        _refuse_paused(d, "restart")
        before = revision(d)
        at = _now_rfc3339()
        body = {
            "metadata": {
                "annotations": marker(request.idempotency_key, {"revision": before, "restartedAt": at})
            },
            **restart_patch(at),
        }
        await self._patch_deployment(d, body, None, dry=False)
        checkpoint = _deployment_checkpoint(request, d, before, template_of(d), why)
        return self._result(
            request,
            target,
            True,
            f"restarted {target} at {at} (was revision {before})",
            {"restarted_at": at, "revision_before": before},
            checkpoint,
        )


@register_action
class Rollback(_UndoMixin[RollbackParams]):
    name = "kubernetes.rollback"
    params_model = RollbackParams
    description = "kubectl rollout undo (to the previous revision unless one is named)."

    async def dry_run(self, request: ActionRequest, params: RollbackParams) -> DryRun:
        d = await self._deployment(params.namespace, params.name)
        target = f"deployment {params.namespace}/{params.name}"
        if recorded(d, request.idempotency_key) is not None:
            return self._dry(
                request, target, f"{target} was already rolled back by this step", "", _deployment_scope(d)
            )
        _refuse_paused(d, "roll back")
        plan = await self._plan(d, params.revision or 0, None)
        if not plan.needed:
            summary = f"{target} already runs the template of revision {plan.revision}; kubectl would skip"
            return self._dry(request, target, summary, "", _deployment_scope(d))
        would = await self._patch_deployment(d, plan.patch(request.idempotency_key, {}), JSON_PATCH, dry=True)
        diff = yaml_diff(
            {"spec": {"template": template_of(d)}}, {"spec": {"template": template_of(would)}}, target
        )
        summary = f"would roll {target} back from revision {revision(d)} to revision {plan.revision}"
        return self._dry(request, target, summary, diff, _deployment_scope(d))

    async def execute(self, request: ActionRequest, params: RollbackParams) -> ActionResult:
        d = await self._deployment(params.namespace, params.name)
        target = f"deployment {params.namespace}/{params.name}"
        why = "the pod template before this rollback"
        state = recorded(d, request.idempotency_key)
        if state is not None:
            checkpoint = await self._checkpoint_for(request, d, state.get("revision"), why)
            summary = f"{target} was already rolled back by this step (from revision {state.get('revision')})"
            return self._result(
                request, target, False, summary, {"revision_before": state.get("revision")}, checkpoint
            )
        _refuse_paused(d, "roll back")
        plan = await self._plan(d, params.revision or 0, None)
        before = revision(d)
        if not plan.needed:
            summary = f"skipped: {target} already runs the template of revision {plan.revision}"
            return self._result(request, target, False, summary, {"revision_before": before})
        await self._patch_deployment(
            d, plan.patch(request.idempotency_key, {"revision": before}), JSON_PATCH, dry=False
        )
        checkpoint = _deployment_checkpoint(request, d, before, template_of(d), why)
        summary = f"rolled {target} back from revision {before} to the template of revision {plan.revision}"
        return self._result(
            request,
            target,
            True,
            summary,
            {"revision_before": before, "to_revision": plan.revision},
            checkpoint,
        )


@register_action
class Scale(_KubeAction[ScaleParams]):
    name = "kubernetes.scale"
    params_model = ScaleParams
    description = (
        "Set (or change by delta) the replicas of a Deployment or StatefulSet via its scale subresource."
    )

    def _api(self, kind: str) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
        apps = self.kube.apps
        if kind == "StatefulSet":
            return (
                apps.read_namespaced_stateful_set,
                apps.patch_namespaced_stateful_set,
                apps.patch_namespaced_stateful_set_scale,
            )
        return (
            apps.read_namespaced_deployment,
            apps.patch_namespaced_deployment,
            apps.patch_namespaced_deployment_scale,
        )

    async def _workload(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        read, _, _ = self._api(kind)
        result: dict[str, Any] = await self.kube.call(
            f"get {kind.lower()} {namespace}/{name}", read, name, namespace
        )
        return result

    async def _scale(self, kind: str, namespace: str, name: str, replicas: int, dry: bool) -> dict[str, Any]:
        _, _, patch_scale = self._api(kind)
        result: dict[str, Any] = await self.kube.call(
            f"scale {kind.lower()} {namespace}/{name}",
            patch_scale,
            name,
            namespace,
            {"spec": {"replicas": replicas}},
            **(DRY if dry else {}),
        )
        return result

    @staticmethod
    def _wanted(params: ScaleParams, current: int) -> int:
        return params.replicas if params.replicas is not None else max(0, current + (params.delta or 0))

    async def dry_run(self, request: ActionRequest, params: ScaleParams) -> DryRun:
        w = await self._workload(params.kind, params.namespace, params.name)
        target = f"{params.kind.lower()} {params.namespace}/{params.name}"
        current = int((w.get("spec") or {}).get("replicas", 1))
        state = recorded(w, request.idempotency_key)
        after = int(state["after"]) if state and "after" in state else self._wanted(params, current)
        would = await self._scale(params.kind, params.namespace, params.name, after, dry=True)
        would_replicas = int((would.get("spec") or {}).get("replicas", after))
        diff = yaml_diff({"spec": {"replicas": current}}, {"spec": {"replicas": would_replicas}}, target)
        scope = TargetScope(
            kind=params.kind,
            namespace=params.namespace,
            name=params.name,
            labels=labels_of(w),
            replicas_before=current,
            replicas_after=would_replicas,
        )
        summary = (
            f"would scale {target} from {current} to {would_replicas} replicas"
            if diff
            else f"{target} already has {current} replicas; nothing to change"
        )
        return self._dry(request, target, summary, diff, scope)

    async def execute(self, request: ActionRequest, params: ScaleParams) -> ActionResult:
        w = await self._workload(params.kind, params.namespace, params.name)
        target = f"{params.kind.lower()} {params.namespace}/{params.name}"
        current = int((w.get("spec") or {}).get("replicas", 1))
        state = recorded(w, request.idempotency_key)
        if state is not None and "before" in state and "after" in state:
            before, after = int(state["before"]), int(state["after"])  # a retry: the first attempt's numbers
        else:
            before, after = current, self._wanted(params, current)
            if before != after:  # record first, so a retry of a delta never applies it twice
                _, patch, _ = self._api(params.kind)
                await self.kube.call(
                    f"annotate {target}",
                    patch,
                    params.name,
                    params.namespace,
                    {
                        "metadata": {
                            "annotations": marker(request.idempotency_key, {"before": before, "after": after})
                        }
                    },
                    _content_type=MERGE,
                )
        changed = current != after
        if changed:
            await self._scale(params.kind, params.namespace, params.name, after, dry=False)
        checkpoint = None
        if before != after:
            checkpoint = make_checkpoint(
                request,
                target,
                undo=f"scale {target} back to {before} replicas",
                kind=params.kind,
                namespace=params.namespace,
                name=params.name,
                replicas=before,
            )
        summary = (
            f"scaled {target} from {before} to {after} replicas"
            if changed
            else f"{target} already had {after} replicas"
        )
        return self._result(request, target, changed, summary, {"before": before, "after": after}, checkpoint)

    async def rollback(self, request: RollbackRequest) -> ActionResult:
        captured = request.checkpoint.captured
        kind, namespace, name = str(captured["kind"]), str(captured["namespace"]), str(captured["name"])
        replicas = int(captured["replicas"])
        w = await self._workload(kind, namespace, name)
        current = int((w.get("spec") or {}).get("replicas", 1))
        target = f"{kind.lower()} {namespace}/{name}"
        if current == replicas:
            return self._rolled_back(request, False, f"{target} already has {current} replicas")
        await self._scale(kind, namespace, name, replicas, dry=False)
        return self._rolled_back(request, True, f"scaled {target} back from {current} to {replicas} replicas")


@register_action
class WaitRollout(_Wait):
    name = "kubernetes.wait_rollout"
    params_model = WaitParams
    description = "Wait until a Deployment rollout completes (kubectl rollout status); fail on its deadline."
    noun = "deployment"
    failure_type = ErrorType.KUBERNETES_ROLLOUT_FAILED
    timeout_type = ErrorType.KUBERNETES_ROLLOUT_TIMEOUT

    async def execute(self, request: ActionRequest, params: WaitParams) -> ActionResult:
        async def check() -> tuple[str, str, dict[str, Any]]:
            d = await self._deployment(params.namespace, params.name)
            state, message = rollout_state(d)
            return state, message, deployment_fact(d)

        return await self._poll(request, params, check)

"""Kubernetes remediation actions and the `kubernetes` diagnostic, done the way kubectl does them.

Actions (params; Checkpoint.captured; what rollback does):

- `kubernetes.rollout_restart` {namespace, name}: kubectl's strategic-merge patch of
  `spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]`.
  captured `{kind: "Deployment", namespace, name, revision, template}` (the revision and pod
  template before the restart); rollback = `kubectl rollout undo --to-revision=<revision>`.
- `kubernetes.scale` {namespace, name, replicas | delta, kind: Deployment|StatefulSet}: PATCH of
  the `scale` subresource. captured `{kind, namespace, name, replicas}`; rollback scales back.
- `kubernetes.rollback` {namespace, name, revision?}: `kubectl rollout undo` (default: the
  previous revision). captured as for rollout_restart; rollback undoes to that revision again.
- `kubernetes.delete_pod` {namespace, name | selector, count}: DELETE with a uid precondition.
  captured `{namespace, pods: [{name, uid, owner}]}`; rollback restores nothing (the pods'
  controllers recreate them), which the checkpoint's undo text says.
- `kubernetes.patch_configmap` {namespace, name, data}: JSON merge patch of `data`.
  captured `{namespace, name, previous: {key: old value | None}}`; rollback writes the old
  values back and removes keys that did not exist (None).
- `jobs.rerun` {namespace, name}: a failed Job re-created as `<name>-rerun-<hash of step key>`.
  captured `{namespace, job, rerun_of}`; rollback deletes that Job and its pods.
- `jobs.trigger_cronjob` {namespace, name}: `kubectl create job --from=cronjob/<name>` as
  `<name>-manual-<hash of step key>`. captured `{namespace, job, cronjob}`; rollback deletes it.
- `kubernetes.wait_rollout` {namespace, name, timeout, poll} and `jobs.wait` {namespace, name,
  timeout, poll}: read-only; succeed with the final status in `output`, or fail
  (non-retryable: KubernetesRolloutFailed/KubernetesRolloutTimeout, KubernetesJobFailed/
  KubernetesJobTimeout) with the reason.

Every state-changing dry run asks the apiserver itself (`dryRun=All`) and diffs YAML of the
current against the would-be object. Steps are idempotent by `<incident>/<step>`: the key is
written to the `remedium.io/last-step` annotation of the object changed (for pods, of their
controller; for Jobs, the name is derived from it), and a step that finds its own key does
nothing again.

Diagnostic `kubernetes` {resource, namespace, name?, selector?, container?, previous?, tail?};
the fact's value by resource:

- deployment: `{namespace, name, replicas, current, updated, ready, available, unavailable,
  generation, observed_generation, revision, paused, images, rollout: complete|progressing|failed,
  rollout_message, conditions: [{type, status, reason, message}]}`
- pods (name = a Deployment, or selector): `{namespace, selector, total, ready, not_ready, pending,
  crashlooping, oomkilled, image_pull_errors, restarts, reasons, pods: [{name, phase, ready,
  restarts, reason, last_reason, node, terminating, created, containers: [{name, ready, restarts,
  state: waiting|running|terminated, reason, message, exit_code, last_reason, last_exit_code}]}]}`,
  least healthy pod first; e.g. `facts.pods.value.crashlooping > 0`.
- events (name optional: the object and those named `<name>-...`): `{namespace, name, count,
  warnings, reasons, events: [{type, reason, message, object, count, last_seen}]}`, newest first.
- logs (name = a pod, or a Deployment / selector whose least healthy pod is read): `{pod,
  container, previous, count, lines, text}`, the last `tail` lines.
- job (`latest_run: true`: the newest of the Job and its `jobs.rerun` re-runs): `{namespace, name,
  state: succeeded|failed|running|suspended, message, active, succeeded,
  failed, backoff_limit, start_time, completion_time, conditions}`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Self, TypeVar

import kubernetes.client
from pydantic import BaseModel, Field, model_validator
from temporalio.exceptions import ApplicationError

from activities.registry import (
    Action,
    Clients,
    Diagnostic,
    make_checkpoint,
    register_action,
    register_diagnostic,
)
from remedium.kube import facts
from remedium.kube.calls import NOT_CONFIGURED, Kube, heartbeat, reason_of
from remedium.kube.config import kubernetes_api_client
from remedium.kube.jobs import cronjob_manifest, derived_name, job_state, rerun_manifest
from remedium.kube.objects import (
    LAST_STEP,
    RERUN_OF,
    annotations_of,
    labels_of,
    marker,
    meta,
    recorded,
    selector_string,
    yaml_diff,
)
from remedium.kube.rollout import (
    bare_template,
    find_template,
    owned,
    pick,
    restart_patch,
    revision,
    rollout_state,
    template_of,
    undo_annotations,
    undo_patch,
)
from remedium.models import ActionRequest, ActionResult, Checkpoint, DryRun, RollbackRequest
from remedium.models.common import Duration, UserModel
from remedium.models.incident import TargetScope

__all__ = ["kubernetes_api_client"]

P = TypeVar("P", bound=BaseModel)
DRY = {"dry_run": "All"}
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


# --------------------------------------------------------------------------- params


class Target(UserModel):
    namespace: str = Field(min_length=1)
    name: str = Field(min_length=1)


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


class DeletePodParams(UserModel):
    namespace: str = Field(min_length=1)
    name: str | None = None
    selector: str | None = None
    count: int = Field(default=1, ge=1, le=20, description="most pods deleted by a selector")
    grace_period_seconds: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.name is None) == (self.selector is None):
            raise ValueError("give exactly one of name or selector")
        return self


class PatchConfigMapParams(Target):
    data: dict[str, str] = Field(min_length=1)


class JobTarget(Target):
    pass


class WaitParams(Target):
    timeout: Duration = timedelta(minutes=5)
    poll: Duration = timedelta(seconds=2)


class KubernetesFactParams(UserModel):
    resource: Literal["deployment", "pods", "events", "logs", "job"]
    namespace: str = Field(min_length=1)
    name: str | None = None
    selector: str | None = None
    container: str | None = None
    previous: bool = False
    tail: int = Field(default=50, ge=1, le=5000)
    latest_run: bool = Field(
        default=False, description="job: the newest of the Job `name` and its re-runs (jobs.rerun)"
    )


# --------------------------------------------------------------------------- shared


def _now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _invalid(message: str, kind: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


class _KubeBase:
    def __init__(self, api: kubernetes.client.ApiClient | None) -> None:
        self._kube = Kube(api) if api is not None else None

    @classmethod
    def build(cls, clients: Clients) -> Self:
        return cls(clients.kubernetes)

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            raise ApplicationError(NOT_CONFIGURED, type="KubernetesNotConfigured", non_retryable=True)
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

    # ---- deployments

    async def _deployment(self, namespace: str, name: str) -> dict[str, Any]:
        what = f"get deployment {namespace}/{name}"
        result: dict[str, Any] = await self.kube.call(
            what, self.kube.apps.read_namespaced_deployment, name, namespace
        )
        return result

    async def _replicasets(self, d: dict[str, Any]) -> list[dict[str, Any]]:
        namespace = str(meta(d).get("namespace"))
        selector = selector_string((d.get("spec") or {}).get("selector"))
        listing = await self.kube.call(
            f"list replicasets of deployment {namespace}/{meta(d).get('name')}",
            self.kube.apps.list_namespaced_replica_set,
            namespace,
            label_selector=selector,
        )
        return owned(list(listing.get("items") or []), d)

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


def _refuse_paused(d: dict[str, Any], verb: str) -> None:
    if (d.get("spec") or {}).get("paused"):
        raise _invalid(
            f"deployment {meta(d).get('namespace')}/{meta(d).get('name')} is paused; like kubectl, "
            f"remedium will not {verb} a paused deployment (resume it first)",
            "KubernetesPaused",
        )


@dataclass
class _UndoPlan:
    deployment: dict[str, Any]
    source: dict[str, Any] | None  # the ReplicaSet whose template is restored, if it still exists
    template: dict[str, Any]
    revision: int | None

    @property
    def needed(self) -> bool:
        return template_of(self.deployment) != bare_template(self.template)

    def patch(self, key: str, state: dict[str, Any]) -> list[dict[str, Any]]:
        return undo_patch(
            self.deployment,
            self.template,
            {**undo_annotations(self.deployment, self.source), **marker(key, state)},
        )


def _undo_text(namespace: str, name: str, rev: int | None, why: str) -> str:
    to = f"revision {rev}" if rev is not None else "the recorded pod template"
    flag = f" --to-revision={rev}" if rev is not None else ""
    return f"roll deployment {namespace}/{name} back to {to} ({why}), as `kubectl rollout undo{flag}` does"


def _deployment_checkpoint(
    request: ActionRequest, d: dict[str, Any], before: int | None, template: dict[str, Any] | None, why: str
) -> Checkpoint:
    """What undoes a change to a Deployment's pod template: its revision and template before."""
    namespace, name = str(meta(d).get("namespace")), str(meta(d).get("name"))
    return make_checkpoint(
        request,
        f"deployment {namespace}/{name}",
        undo=_undo_text(namespace, name, before, why),
        kind="Deployment",
        namespace=namespace,
        name=name,
        revision=before,
        template=template,
    )


class _UndoMixin(_KubeAction[P]):
    async def _plan(
        self, d: dict[str, Any], to_revision: int | None, template: dict[str, Any] | None
    ) -> _UndoPlan:
        replicasets = await self._replicasets(d)
        source = pick(replicasets, to_revision) if to_revision is not None else None
        if template is not None and (source is None or template_of(source) != bare_template(template)):
            source = find_template(replicasets, template)  # revision renumbered or pruned: match by template
        if source is None and template is None:
            wanted = f"revision {to_revision}" if to_revision else "a previous revision"
            raise _invalid(
                f"deployment {meta(d).get('namespace')}/{meta(d).get('name')} has no {wanted} "
                f"in its rollout history (revisions: {[revision(rs) for rs in replicasets]})",
                "KubernetesNoRevision",
            )
        chosen = template_of(source) if source is not None else bare_template(template or {})
        return _UndoPlan(d, source, chosen, revision(source) if source is not None else None)

    async def _checkpoint_for(
        self, request: ActionRequest, d: dict[str, Any], before: int | None, why: str
    ) -> Checkpoint:
        """The checkpoint of a step that left revision `before` behind (template looked up if renumbered)."""
        source = pick(await self._replicasets(d), before) if before else None
        return _deployment_checkpoint(
            request, d, before, template_of(source) if source is not None else None, why
        )

    async def rollback(self, request: RollbackRequest) -> ActionResult:
        captured = request.checkpoint.captured
        namespace, name = str(captured["namespace"]), str(captured["name"])
        d = await self._deployment(namespace, name)
        key = request.idempotency_key
        if recorded(d, key) is not None:
            return self._rolled_back(request, False, f"deployment {namespace}/{name} was already rolled back")
        _refuse_paused(d, "roll back")
        rev = captured.get("revision")
        plan = await self._plan(d, int(rev) if rev else None, captured.get("template"))
        if not plan.needed:
            return self._rolled_back(
                request, False, f"deployment {namespace}/{name} already runs the checkpoint's pod template"
            )
        await self._patch_deployment(d, plan.patch(key, {"revision": revision(d)}), JSON_PATCH, dry=False)
        return self._rolled_back(
            request, True, f"rolled deployment {namespace}/{name} back to revision {plan.revision or rev}"
        )


# --------------------------------------------------------------------------- rollout restart


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


# --------------------------------------------------------------------------- rollback


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


# --------------------------------------------------------------------------- scale


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


# --------------------------------------------------------------------------- delete pod

_OWNER_API = {
    "ReplicaSet": ("apps", "read_namespaced_replica_set", "patch_namespaced_replica_set"),
    "StatefulSet": ("apps", "read_namespaced_stateful_set", "patch_namespaced_stateful_set"),
    "DaemonSet": ("apps", "read_namespaced_daemon_set", "patch_namespaced_daemon_set"),
    "Job": ("batch", "read_namespaced_job", "patch_namespaced_job"),
}


def _controller(pod: dict[str, Any]) -> tuple[str, str] | None:
    for ref in meta(pod).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("kind")), str(ref.get("name"))
    return None


def _pod_line(pod: dict[str, Any]) -> dict[str, Any]:
    fact = facts.pod_fact(pod)
    return {k: fact[k] for k in ("phase", "ready", "restarts", "reason")}


@register_action
class DeletePod(_KubeAction[DeletePodParams]):
    name = "kubernetes.delete_pod"
    params_model = DeletePodParams
    description = (
        "Delete a pod (or the `count` least healthy pods of a selector) so its controller recreates it."
    )

    async def _owner(self, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
        if kind not in _OWNER_API:
            return None
        group, read, _ = _OWNER_API[kind]
        api = getattr(self.kube, group)
        try:
            result: dict[str, Any] = await self.kube.call(
                f"get {kind} {namespace}/{name}", getattr(api, read), name, namespace
            )
        except ApplicationError as exc:
            if reason_of(exc)[0] == 404:
                return None
            raise
        return result

    async def _pods(
        self, params: DeletePodParams, key: str
    ) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        """(candidate pods, owners to look for this step's marker on)."""
        if params.name is not None:
            try:
                pod = await self.kube.call(
                    f"get pod {params.namespace}/{params.name}",
                    self.kube.core.read_namespaced_pod,
                    params.name,
                    params.namespace,
                )
            except ApplicationError as exc:
                if reason_of(exc)[0] != 404:
                    raise
                guessed = params.name.rsplit("-", 1)[
                    0
                ]  # <replicaset>-<suffix>: where a retry's marker would be
                owner = (
                    await self._owner(params.namespace, "ReplicaSet", guessed) if "-" in params.name else None
                )
                if owner is not None and recorded(owner, key) is not None:
                    return [], [("ReplicaSet", guessed)]
                raise
            owners = [c for c in [_controller(pod)] if c is not None]
            return [pod], owners
        listing = await self.kube.call(
            f"list pods {params.namespace} -l {params.selector}",
            self.kube.core.list_namespaced_pod,
            params.namespace,
            label_selector=params.selector,
        )
        pods = list(listing.get("items") or [])
        owners = sorted({c for c in (_controller(p) for p in pods) if c is not None})
        live = sorted(
            (p for p in pods if not meta(p).get("deletionTimestamp")),
            key=lambda p: facts.unhealthy_first(facts.pod_fact(p)),
        )
        return live[: params.count], owners

    async def _already(
        self, namespace: str, owners: list[tuple[str, str]], key: str
    ) -> dict[str, Any] | None:
        for kind, name in owners:
            owner = await self._owner(namespace, kind, name)
            state = recorded(owner, key) if owner is not None else None
            if state is not None:
                return state
        return None

    async def _delete(self, namespace: str, pod: dict[str, Any], grace: int | None, dry: bool) -> bool:
        """Delete exactly this pod (by uid); False when it is already gone or replaced."""
        name, uid = str(meta(pod).get("name")), str(meta(pod).get("uid"))
        extra: dict[str, Any] = {"grace_period_seconds": grace} if grace is not None else {}
        try:
            await self.kube.call(
                f"delete pod {namespace}/{name}",
                self.kube.core.delete_namespaced_pod,
                name,
                namespace,
                body={"preconditions": {"uid": uid}},
                **extra,
                **(DRY if dry else {}),
            )
        except ApplicationError as exc:
            if reason_of(exc)[0] in (404, 409) and not dry:
                return False
            raise
        return True

    def _target(self, params: DeletePodParams) -> str:
        return (
            f"pod {params.namespace}/{params.name}"
            if params.name
            else f"pods {params.namespace} -l {params.selector}"
        )

    async def dry_run(self, request: ActionRequest, params: DeletePodParams) -> DryRun:
        pods, owners = await self._pods(params, request.idempotency_key)
        target = self._target(params)
        if await self._already(params.namespace, owners, request.idempotency_key) is not None:
            return self._dry(request, target, f"{target}: already deleted by this step", "", None)
        for pod in pods:
            await self._delete(params.namespace, pod, params.grace_period_seconds, dry=True)
        diff = yaml_diff({"pods": {meta(p)["name"]: _pod_line(p) for p in pods}}, {}, target)
        names = ", ".join(str(meta(p).get("name")) for p in pods) or "no pods"
        first = pods[0] if pods else {}
        scope = TargetScope(
            kind="Pod",
            namespace=params.namespace,
            name=str(meta(first).get("name", "")),
            labels=labels_of(first),
        )
        return self._dry(
            request, target, f"would delete {names}; their controllers recreate them", diff, scope
        )

    def _checkpoint(
        self, request: ActionRequest, target: str, namespace: str, deleted: list[dict[str, Any]]
    ) -> Checkpoint:
        owners = sorted({str(p["owner"]) for p in deleted if p["owner"]})
        orphans = [str(p["name"]) for p in deleted if not p["owner"]]
        undo = "nothing to restore: deleted pods are not brought back"
        if owners:
            undo += f"; their controller ({', '.join(owners)}) recreates them"
        if orphans:
            undo += f"; {', '.join(orphans)} had no controller, so nothing recreates it"
        return make_checkpoint(request, target, undo=undo, namespace=namespace, pods=deleted)

    async def execute(self, request: ActionRequest, params: DeletePodParams) -> ActionResult:
        pods, owners = await self._pods(params, request.idempotency_key)
        target = self._target(params)
        state = await self._already(params.namespace, owners, request.idempotency_key)
        if state is not None:
            recorded_pods = list(state.get("pods") or [])
            return self._result(
                request,
                target,
                False,
                f"already deleted by this step: {', '.join(p['name'] for p in recorded_pods)}",
                {"deleted": [p["name"] for p in recorded_pods]},
                self._checkpoint(request, target, params.namespace, recorded_pods),
            )
        if not pods:
            raise _invalid(f"no running pods match {target}", "KubernetesNotFound")
        chosen = [
            {
                "name": meta(p).get("name"),
                "uid": meta(p).get("uid"),
                "owner": "/".join(_controller(p) or ()) or None,
            }
            for p in pods
        ]
        for kind, owner_name in sorted({c for c in (_controller(p) for p in pods) if c is not None}):
            if kind in _OWNER_API:
                group, _, patch = _OWNER_API[kind]
                await self.kube.call(
                    f"annotate {kind} {params.namespace}/{owner_name}",
                    getattr(getattr(self.kube, group), patch),
                    owner_name,
                    params.namespace,
                    {"metadata": {"annotations": marker(request.idempotency_key, {"pods": chosen})}},
                    _content_type=MERGE,
                )
        deleted = [
            p for p in pods if await self._delete(params.namespace, p, params.grace_period_seconds, dry=False)
        ]
        names = [str(meta(p).get("name")) for p in deleted]
        return self._result(
            request,
            target,
            bool(deleted),
            f"deleted {', '.join(names) or 'nothing (already gone)'}",
            {"deleted": names},
            self._checkpoint(request, target, params.namespace, chosen),
        )

    async def rollback(self, request: RollbackRequest) -> ActionResult:
        return self._rolled_back(request, False, request.checkpoint.undo)


# --------------------------------------------------------------------------- configmap


@register_action
class PatchConfigMap(_KubeAction[PatchConfigMapParams]):
    name = "kubernetes.patch_configmap"
    params_model = PatchConfigMapParams
    description = "Set keys of a ConfigMap (JSON merge patch); rollback restores the previous values."

    async def _read(self, namespace: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.kube.call(
            f"get configmap {namespace}/{name}", self.kube.core.read_namespaced_config_map, name, namespace
        )
        return result

    async def _patch(self, namespace: str, name: str, body: dict[str, Any], dry: bool) -> dict[str, Any]:
        result: dict[str, Any] = await self.kube.call(
            f"patch configmap {namespace}/{name}",
            self.kube.core.patch_namespaced_config_map,
            name,
            namespace,
            body,
            _content_type=MERGE,
            **(DRY if dry else {}),
        )
        return result

    @staticmethod
    def _undo(target: str, previous: dict[str, str | None]) -> str:
        restored = sorted(k for k, v in previous.items() if v is not None)
        removed = sorted(k for k, v in previous.items() if v is None)
        parts = []
        if restored:
            parts.append(f"restore {', '.join(restored)} to the previous values")
        if removed:
            parts.append(f"remove {', '.join(removed)} (absent before)")
        return f"{' and '.join(parts)} in {target}"

    async def dry_run(self, request: ActionRequest, params: PatchConfigMapParams) -> DryRun:
        cm = await self._read(params.namespace, params.name)
        target = f"configmap {params.namespace}/{params.name}"
        body = {"metadata": {"annotations": marker(request.idempotency_key)}, "data": params.data}
        would = await self._patch(params.namespace, params.name, body, dry=True)
        diff = yaml_diff({"data": cm.get("data") or {}}, {"data": would.get("data") or {}}, target)
        keys = ", ".join(sorted(params.data))
        summary = f"would set {keys} in {target}" if diff else f"{target} already has these values for {keys}"
        scope = TargetScope(
            kind="ConfigMap", namespace=params.namespace, name=params.name, labels=labels_of(cm)
        )
        return self._dry(request, target, summary, diff, scope)

    async def execute(self, request: ActionRequest, params: PatchConfigMapParams) -> ActionResult:
        cm = await self._read(params.namespace, params.name)
        target = f"configmap {params.namespace}/{params.name}"
        state = recorded(cm, request.idempotency_key)
        data = dict(cm.get("data") or {})
        if state is not None:
            previous: dict[str, str | None] = dict(state.get("previous") or {})
            changed, summary = False, f"{target} was already patched by this step"
        else:
            previous = {k: data.get(k) for k in params.data}
            if all(data.get(k) == v for k, v in params.data.items()):
                return self._result(request, target, False, f"{target} already has these values")
            body = {
                "metadata": {"annotations": marker(request.idempotency_key, {"previous": previous})},
                "data": params.data,
            }
            await self._patch(params.namespace, params.name, body, dry=False)
            changed, summary = True, f"set {', '.join(sorted(params.data))} in {target}"
        checkpoint = make_checkpoint(
            request,
            target,
            undo=self._undo(target, previous),
            namespace=params.namespace,
            name=params.name,
            previous=previous,
        )
        return self._result(request, target, changed, summary, {"keys": sorted(params.data)}, checkpoint)

    async def rollback(self, request: RollbackRequest) -> ActionResult:
        captured = request.checkpoint.captured
        namespace, name = str(captured["namespace"]), str(captured["name"])
        previous: dict[str, str | None] = dict(captured.get("previous") or {})
        cm = await self._read(namespace, name)
        data = dict(cm.get("data") or {})
        if all(data.get(k) == v for k, v in previous.items()):
            return self._rolled_back(
                request, False, f"configmap {namespace}/{name} already has the previous values"
            )
        body = {"metadata": {"annotations": marker(request.idempotency_key)}, "data": previous}
        await self._patch(namespace, name, body, dry=False)
        keys = ", ".join(sorted(previous))
        return self._rolled_back(request, True, f"restored {keys} of configmap {namespace}/{name}")


# --------------------------------------------------------------------------- jobs


class _JobCreator(_KubeAction[JobTarget]):
    """Create a Job with a name derived from the step's key; rollback deletes it."""

    async def _create(self, namespace: str, manifest: dict[str, Any], dry: bool) -> dict[str, Any] | None:
        """The created (or would-be) Job, or None when one of that name already exists."""
        try:
            result: dict[str, Any] = await self.kube.call(
                f"create job {namespace}/{manifest['metadata']['name']}",
                self.kube.batch.create_namespaced_job,
                namespace,
                manifest,
                **(DRY if dry else {}),
            )
        except ApplicationError as exc:
            if reason_of(exc) == (409, "AlreadyExists"):
                return None
            raise
        return result

    async def _job(self, namespace: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.kube.call(
            f"get job {namespace}/{name}", self.kube.batch.read_namespaced_job, name, namespace
        )
        return result

    def _manifest_diff(self, would: dict[str, Any], what: str) -> str:
        m = meta(would)
        shown = {
            "metadata": {k: m[k] for k in ("name", "labels", "annotations", "ownerReferences") if m.get(k)},
            "spec": would.get("spec") or {},
        }
        return yaml_diff({}, shown, what)

    async def rollback(self, request: RollbackRequest) -> ActionResult:
        captured = request.checkpoint.captured
        namespace, name = str(captured["namespace"]), str(captured["job"])
        try:
            await self.kube.call(
                f"delete job {namespace}/{name}",
                self.kube.batch.delete_namespaced_job,
                name,
                namespace,
                propagation_policy="Background",
            )
        except ApplicationError as exc:
            if reason_of(exc)[0] == 404:
                return self._rolled_back(request, False, f"job {namespace}/{name} is already gone")
            raise
        return self._rolled_back(request, True, f"deleted job {namespace}/{name} and its pods")


@register_action
class RerunJob(_JobCreator):
    name = "jobs.rerun"
    params_model = JobTarget
    description = "Re-run a failed Job under a new name; rollback deletes the re-run."

    async def _prepare(self, request: ActionRequest, params: JobTarget) -> dict[str, Any]:
        job = await self._job(params.namespace, params.name)
        state, message = job_state(job)
        if state != "failed":
            raise _invalid(
                f"job {params.namespace}/{params.name} has not failed ({state}: {message}); "
                "only failed Jobs are re-run",
                "KubernetesJobNotFailed",
            )
        return rerun_manifest(
            job, derived_name(params.name, "rerun", request.idempotency_key), request.idempotency_key
        )

    async def dry_run(self, request: ActionRequest, params: JobTarget) -> DryRun:
        manifest = await self._prepare(request, params)
        new = manifest["metadata"]["name"]
        target = f"job {params.namespace}/{params.name}"
        would = await self._create(params.namespace, manifest, dry=True)
        scope = TargetScope(
            kind="Job",
            namespace=params.namespace,
            name=params.name,
            labels=manifest["metadata"].get("labels") or {},
        )
        if would is None:
            return self._dry(request, target, f"already re-run as job {params.namespace}/{new}", "", scope)
        diff = self._manifest_diff(would, f"job {params.namespace}/{new}")
        return self._dry(request, target, f"would re-run {target} as job {new}", diff, scope)

    async def execute(self, request: ActionRequest, params: JobTarget) -> ActionResult:
        target = f"job {params.namespace}/{params.name}"
        new = derived_name(params.name, "rerun", request.idempotency_key)
        try:
            manifest = await self._prepare(request, params)
        except ApplicationError as exc:  # the original may be gone by the time a retry comes
            existing = await self._existing_rerun(params.namespace, new, request.idempotency_key)
            if existing is None:
                raise exc from None
            manifest = existing
        created = await self._create(params.namespace, manifest, dry=False)
        if (
            created is None
            and await self._existing_rerun(params.namespace, new, request.idempotency_key) is None
        ):
            raise _invalid(
                f"job {params.namespace}/{new} exists but was not created by this step", "KubernetesConflict"
            )
        checkpoint = make_checkpoint(
            request,
            f"job {params.namespace}/{new}",
            undo=f"delete job {params.namespace}/{new} (the re-run of {params.name}) and its pods",
            namespace=params.namespace,
            job=new,
            rerun_of=params.name,
        )
        summary = f"re-ran {target} as job {new}" if created else f"{target} was already re-run as job {new}"
        return self._result(request, target, created is not None, summary, {"job": new}, checkpoint)

    async def _existing_rerun(self, namespace: str, name: str, key: str) -> dict[str, Any] | None:
        try:
            job = await self._job(namespace, name)
        except ApplicationError as exc:
            if reason_of(exc)[0] == 404:
                return None
            raise
        return job if annotations_of(job).get(LAST_STEP) == key else None


@register_action
class TriggerCronJob(_JobCreator):
    name = "jobs.trigger_cronjob"
    params_model = JobTarget
    description = "Run a CronJob now (kubectl create job --from=cronjob/...); rollback deletes that Job."

    async def _prepare(
        self, request: ActionRequest, params: JobTarget
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        cronjob: dict[str, Any] = await self.kube.call(
            f"get cronjob {params.namespace}/{params.name}",
            self.kube.batch.read_namespaced_cron_job,
            params.name,
            params.namespace,
        )
        return cronjob, cronjob_manifest(
            cronjob, derived_name(params.name, "manual", request.idempotency_key)
        )

    async def dry_run(self, request: ActionRequest, params: JobTarget) -> DryRun:
        cronjob, manifest = await self._prepare(request, params)
        new = manifest["metadata"]["name"]
        target = f"cronjob {params.namespace}/{params.name}"
        scope = TargetScope(
            kind="CronJob", namespace=params.namespace, name=params.name, labels=labels_of(cronjob)
        )
        would = await self._create(params.namespace, manifest, dry=True)
        if would is None:
            return self._dry(request, target, f"already triggered as job {params.namespace}/{new}", "", scope)
        diff = self._manifest_diff(would, f"job {params.namespace}/{new}")
        return self._dry(request, target, f"would start job {new} from {target} now", diff, scope)

    async def execute(self, request: ActionRequest, params: JobTarget) -> ActionResult:
        cronjob, manifest = await self._prepare(request, params)
        new = manifest["metadata"]["name"]
        target = f"cronjob {params.namespace}/{params.name}"
        created = await self._create(params.namespace, manifest, dry=False)
        if created is None:
            existing = await self._job(params.namespace, new)
            uid = meta(cronjob).get("uid")
            if not any(ref.get("uid") == uid for ref in meta(existing).get("ownerReferences") or []):
                raise _invalid(
                    f"job {params.namespace}/{new} exists but is not a run of {target}", "KubernetesConflict"
                )
        checkpoint = make_checkpoint(
            request,
            f"job {params.namespace}/{new}",
            undo=f"delete job {params.namespace}/{new} (the manual run of {target}) and its pods",
            namespace=params.namespace,
            job=new,
            cronjob=params.name,
        )
        summary = (
            f"started job {new} from {target}" if created else f"{target} was already triggered as job {new}"
        )
        return self._result(request, target, created is not None, summary, {"job": new}, checkpoint)


# --------------------------------------------------------------------------- waits


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


@register_action
class WaitRollout(_Wait):
    name = "kubernetes.wait_rollout"
    params_model = WaitParams
    description = "Wait until a Deployment rollout completes (kubectl rollout status); fail on its deadline."
    noun = "deployment"
    failure_type = "KubernetesRolloutFailed"
    timeout_type = "KubernetesRolloutTimeout"

    async def execute(self, request: ActionRequest, params: WaitParams) -> ActionResult:
        async def check() -> tuple[str, str, dict[str, Any]]:
            d = await self._deployment(params.namespace, params.name)
            state, message = rollout_state(d)
            return state, message, facts.deployment_fact(d)

        return await self._poll(request, params, check)


@register_action
class WaitJob(_Wait):
    name = "jobs.wait"
    params_model = WaitParams
    description = "Wait until a Job completes; fail when it fails."
    noun = "job"
    failure_type = "KubernetesJobFailed"
    timeout_type = "KubernetesJobTimeout"

    async def execute(self, request: ActionRequest, params: WaitParams) -> ActionResult:
        async def check() -> tuple[str, str, dict[str, Any]]:
            job: dict[str, Any] = await self.kube.call(
                f"get job {params.namespace}/{params.name}",
                self.kube.batch.read_namespaced_job,
                params.name,
                params.namespace,
            )
            state, message = job_state(job)
            return state, message, facts.job_fact(job)

        return await self._poll(request, params, check)


# --------------------------------------------------------------------------- diagnostic


@register_diagnostic
class KubernetesFacts(_KubeBase, Diagnostic[KubernetesFactParams]):
    kind = "kubernetes"
    params_model = KubernetesFactParams
    description = (
        "Deployment status, pods (restarts, CrashLoopBackOff/OOMKilled/ImagePull), events, logs, Job status."
    )

    async def run(self, params: KubernetesFactParams) -> tuple[Any, str | None]:
        ns = params.namespace
        if params.resource == "deployment":
            d = await self._get(params, "deployment", self.kube.apps.read_namespaced_deployment)
            return facts.deployment_fact(d), f"kubectl get deployment {params.name} -n {ns} -o json"
        if params.resource == "job" and params.latest_run:
            job = await self._latest_run(params)
            return facts.job_fact(job), f"kubectl get jobs -n {ns} (newest run of {params.name})"
        if params.resource == "job":
            job = await self._get(params, "job", self.kube.batch.read_namespaced_job)
            return facts.job_fact(job), f"kubectl get job {params.name} -n {ns} -o json"
        if params.resource == "events":
            listing = await self.kube.call(f"list events {ns}", self.kube.core.list_namespaced_event, ns)
            value = facts.events_fact(ns, params.name, list(listing.get("items") or []), params.tail)
            return value, f"kubectl get events -n {ns}" + (f" (for {params.name})" if params.name else "")
        selector = await self._selector(params)
        if params.resource == "pods":
            pods = await self._list_pods(ns, selector)
            return facts.pods_fact(ns, selector, pods), f"kubectl get pods -n {ns} -l {selector}"
        return await self._logs(params, selector)

    async def _get(
        self, params: KubernetesFactParams, noun: str, method: Callable[..., Any]
    ) -> dict[str, Any]:
        if not params.name:
            raise ApplicationError(f"the {noun} fact needs a name", type="InvalidParams", non_retryable=True)
        result: dict[str, Any] = await self.kube.call(
            f"get {noun} {params.namespace}/{params.name}", method, params.name, params.namespace
        )
        return result

    async def _latest_run(self, params: KubernetesFactParams) -> dict[str, Any]:
        """The Job itself or its newest re-run, so verify can follow a re-run whose name it cannot know."""
        listing = await self.kube.call(
            f"list jobs {params.namespace}", self.kube.batch.list_namespaced_job, params.namespace
        )
        runs = [
            job
            for job in listing.get("items") or []
            if meta(job).get("name") == params.name
            or (meta(job).get("annotations") or {}).get(RERUN_OF) == params.name
        ]
        if not runs:
            raise _invalid(
                f"no job {params.namespace}/{params.name} nor any re-run of it", "KubernetesNotFound"
            )
        newest: dict[str, Any] = max(
            runs,
            key=lambda job: (
                str(meta(job).get("creationTimestamp") or ""),
                meta(job).get("name") != params.name,
            ),
        )
        return newest

    async def _selector(self, params: KubernetesFactParams) -> str:
        if params.selector:
            return params.selector
        if params.resource == "logs" and params.name:
            return ""  # a pod name; resolved in _logs
        d = await self._get(params, "deployment", self.kube.apps.read_namespaced_deployment)
        return selector_string((d.get("spec") or {}).get("selector"))

    async def _list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        listing = await self.kube.call(
            f"list pods {namespace} -l {selector}",
            self.kube.core.list_namespaced_pod,
            namespace,
            label_selector=selector,
        )
        return list(listing.get("items") or [])

    async def _logs(self, params: KubernetesFactParams, selector: str) -> tuple[Any, str | None]:
        ns = params.namespace
        pod_name = params.name or ""
        if selector:
            pods = sorted(
                (facts.pod_fact(p) for p in await self._list_pods(ns, selector)), key=facts.unhealthy_first
            )
            if not pods:
                raise ApplicationError(
                    f"no pods match {selector} in {ns}", type="KubernetesNotFound", non_retryable=True
                )
            pod_name = str(pods[0]["name"])
        else:
            try:
                await self.kube.call(
                    f"get pod {ns}/{pod_name}", self.kube.core.read_namespaced_pod, pod_name, ns
                )
            except ApplicationError as exc:  # not a pod: maybe the Deployment's name
                if reason_of(exc)[0] != 404:
                    raise
                deployment = params.model_copy(update={"resource": "pods"})
                return await self._logs(params, await self._selector(deployment))
        extra: dict[str, Any] = {"tail_lines": params.tail, "previous": params.previous}
        if params.container:
            extra["container"] = params.container
        text = await self.kube.call(
            f"logs of pod {ns}/{pod_name}", self.kube.core.read_namespaced_pod_log, pod_name, ns, **extra
        )
        text = text if isinstance(text, str) else json.dumps(text)
        lines = text.splitlines()[-params.tail :]
        query = f"kubectl logs {pod_name} -n {ns} --tail={params.tail}" + (
            " --previous" if params.previous else ""
        )
        if params.container:
            query += f" -c {params.container}"
        value = {
            "pod": pod_name,
            "container": params.container,
            "previous": params.previous,
            "count": len(lines),
            "lines": lines,
            "text": "\n".join(lines),
        }
        return value, query

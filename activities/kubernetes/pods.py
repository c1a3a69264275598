"""Deleting pods so their controllers recreate them, the least healthy first.

A pod has no state of its own to mark, so the step's key is written to its controller
(ReplicaSet, StatefulSet, DaemonSet, Job) before the delete, and each delete carries the pod's
uid as a precondition: a retry never deletes the replacement its first attempt caused.
Nothing brings a deleted pod back, so rollback restores nothing and its checkpoint says so.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import Field, model_validator
from temporalio.exceptions import ApplicationError

from activities.kubernetes.base import DRY, MERGE, _invalid, _KubeAction
from activities.kubernetes.client import reason_of
from activities.kubernetes.facts import pod_fact, unhealthy_first
from activities.kubernetes.objects import labels_of, marker, meta, recorded, yaml_diff
from remedium.catalog import make_checkpoint, register_action
from remedium.errors import ErrorType
from remedium.models import ActionRequest, ActionResult, Checkpoint, DryRun, RollbackRequest
from remedium.models.common import UserModel
from remedium.models.incident import TargetScope


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
    fact = pod_fact(pod)
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
            key=lambda p: unhealthy_first(pod_fact(p)),
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
            raise _invalid(f"no running pods match {target}", ErrorType.KUBERNETES_NOT_FOUND)
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

"""Deployment revisions: `kubectl rollout undo` and `kubectl rollout status`, over apiserver JSON.

A restart or rollback is undone by restoring the pod template it replaced, so both actions
share the undo here (`_UndoMixin`) and record the same checkpoint. Undo follows kubectl's
rollback.go: the target is the owned ReplicaSet of the wanted revision (revision 0 = the one
before the current), its template minus the `pod-template-hash` label replaces the
Deployment's, and the Deployment's annotations become its own rollout bookkeeping ones plus
every other annotation of that ReplicaSet, sent as one JSON Patch. When the revision was
renumbered or pruned, the recorded template is matched instead. Status follows
rollout_status.go.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from activities.kubernetes.base import JSON_PATCH, P, _invalid, _KubeAction
from activities.kubernetes.objects import annotations_of, marker, meta, recorded, selector_string
from remedium.catalog import make_checkpoint
from remedium.errors import ErrorType
from remedium.models import ActionRequest, ActionResult, Checkpoint, RollbackRequest

REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
KEPT_ON_UNDO = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        "deployment.kubernetes.io/revision",
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)

RolloutState = Literal["complete", "progressing", "failed"]


def revision(obj: dict[str, Any]) -> int | None:
    value = annotations_of(obj).get(REVISION)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def owned(replicasets: list[dict[str, Any]], deployment: dict[str, Any]) -> list[dict[str, Any]]:
    """ReplicaSets whose controller is this Deployment, oldest revision first."""
    uid = meta(deployment).get("uid")
    mine = [
        rs
        for rs in replicasets
        if any(
            ref.get("controller") and ref.get("uid") == uid for ref in meta(rs).get("ownerReferences") or []
        )
    ]
    return sorted(mine, key=lambda rs: revision(rs) or 0)


def bare_template(template: dict[str, Any]) -> dict[str, Any]:
    """A pod template without the ReplicaSet's `pod-template-hash` label (what kubectl compares)."""
    result = copy.deepcopy(template)
    labels = (result.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return result


def template_of(obj: dict[str, Any]) -> dict[str, Any]:
    return bare_template((obj.get("spec") or {}).get("template") or {})


def pick(replicasets: list[dict[str, Any]], to_revision: int) -> dict[str, Any] | None:
    """The ReplicaSet of `to_revision`; 0 means the second-highest revision, as kubectl does."""
    if to_revision == 0:
        numbered = [rs for rs in replicasets if revision(rs)]
        return numbered[-2] if len(numbered) >= 2 else None
    return next((rs for rs in replicasets if revision(rs) == to_revision), None)


def find_template(replicasets: list[dict[str, Any]], template: dict[str, Any]) -> dict[str, Any] | None:
    wanted = bare_template(template)
    return next((rs for rs in reversed(replicasets) if template_of(rs) == wanted), None)


def undo_annotations(deployment: dict[str, Any], source: dict[str, Any] | None) -> dict[str, str]:
    current = annotations_of(deployment)
    result = {k: v for k, v in current.items() if k in KEPT_ON_UNDO}
    if source is not None:
        result.update({k: v for k, v in annotations_of(source).items() if k not in KEPT_ON_UNDO})
    return result


def undo_patch(
    deployment: dict[str, Any], template: dict[str, Any], new_annotations: dict[str, str]
) -> list[dict[str, Any]]:
    """kubectl's two-operation JSON Patch (replace the template, replace the annotations)."""
    op = "replace" if "annotations" in meta(deployment) else "add"
    return [
        {"op": "replace", "path": "/spec/template", "value": bare_template(template)},
        {"op": op, "path": "/metadata/annotations", "value": new_annotations},
    ]


def restart_patch(at: str) -> dict[str, Any]:
    """kubectl rollout restart's strategic-merge patch body."""
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}}


def rollout_state(deployment: dict[str, Any]) -> tuple[RolloutState, str]:
    """kubectl rollout status's verdict and its message for one Deployment read."""
    name = meta(deployment).get("name", "")
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    generation = int(meta(deployment).get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    if generation > observed:
        return "progressing", "waiting for the deployment spec update to be observed"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return "failed", f'deployment "{name}" exceeded its progress deadline'
    wanted = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < wanted:
        return "progressing", f"{updated} out of {wanted} new replicas have been updated"
    if total > updated:
        return "progressing", f"{total - updated} old replicas are pending termination"
    if available < updated:
        return "progressing", f"{available} of {updated} updated replicas are available"
    return "complete", f'deployment "{name}" successfully rolled out'


def _refuse_paused(d: dict[str, Any], verb: str) -> None:
    if (d.get("spec") or {}).get("paused"):
        raise _invalid(
            f"deployment {meta(d).get('namespace')}/{meta(d).get('name')} is paused; like kubectl, "
            f"remedium will not {verb} a paused deployment (resume it first)",
            ErrorType.KUBERNETES_PAUSED,
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
                ErrorType.KUBERNETES_NO_REVISION,
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

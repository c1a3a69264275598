"""Deployment revisions, `kubectl rollout undo` and `kubectl rollout status`, over apiserver JSON.

Undo follows kubectl's rollback.go: the target is the owned ReplicaSet of the wanted
revision (revision 0 = the one before the current), its template minus the
`pod-template-hash` label replaces the Deployment's, and the Deployment's annotations
become its own rollout bookkeeping ones plus every other annotation of that ReplicaSet,
sent as one JSON Patch. Status follows rollout_status.go.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from remedium.kube.objects import annotations_of, meta

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

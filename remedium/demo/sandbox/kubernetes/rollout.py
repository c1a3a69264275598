"""The Deployment and ReplicaSet controllers, following kube-controller-manager's rolling-update arithmetic.

A pod-template change makes (or, on rollback, reuses) a ReplicaSet named by the template
hash and gives it the next `deployment.kubernetes.io/revision`; the new ReplicaSet grows
by `maxSurge` while old ones shrink only as far as `maxUnavailable` and the new pods'
availability allow, so a rollout onto crashing pods stalls exactly where a real one does
and then reports `ProgressDeadlineExceeded`.
"""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime
from typing import Any

from remedium.demo.sandbox.kubernetes import events, kinds
from remedium.demo.sandbox.kubernetes.pods import Kubelet
from remedium.demo.sandbox.kubernetes.store import Store, now

DEPLOYMENT = kinds.BY_PATH[("apps", "v1", "deployments")]
REPLICASET = kinds.BY_PATH[("apps", "v1", "replicasets")]
POD = kinds.BY_PATH[("", "v1", "pods")]
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
NOT_COPIED = {
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
}
_SAFE = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(template: dict[str, Any], collisions: int = 0) -> str:
    """FNV-32a over the template, spelled with the apimachinery `SafeEncodeString` alphabet."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")) + (
        str(collisions) if collisions else ""
    )
    value = 0x811C9DC5
    for byte in data.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE[ord(c) % len(_SAFE)] for c in str(value))


def controller_uid(obj: dict[str, Any]) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def owner_ref(owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def revision(rs: dict[str, Any]) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _without_hash(template: dict[str, Any]) -> dict[str, Any]:
    stripped = copy.deepcopy(template)
    labels = (stripped.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return stripped


def _resolve(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        exact = int(value[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value or 0)


def _compact(status: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """Drop zero counters, as the API's `omitempty` integer fields do."""
    return {k: v for k, v in status.items() if v != 0 or k in keep}


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


class Rollouts:
    def __init__(self, store: Store, kubelet: Kubelet) -> None:
        self.store = store
        self.kubelet = kubelet

    # --------------------------------------------------------- ReplicaSets

    def sync_replicaset(self, rs: dict[str, Any]) -> None:
        meta, ns = rs["metadata"], rs["metadata"]["namespace"]
        pods = [p for p in self.store.objects(POD, ns) if controller_uid(p) == meta["uid"]]
        active = [
            p
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        want = int(rs["spec"].get("replicas", 1))
        if not meta.get("deletionTimestamp"):
            for _ in range(want - len(active)):
                active.append(self._create_pod(rs))
            if len(active) > want:
                victims = sorted(active, key=lambda p: (_ready(p), p["metadata"]["creationTimestamp"]))
                for pod in victims[: len(active) - want]:
                    self._delete_pod(rs, pod)
                    active.remove(pod)
        min_ready = int(rs["spec"].get("minReadySeconds", 0))
        ready = [p for p in active if _ready(p)]
        available = [p for p in ready if self.kubelet.sim(p).available(min_ready)]
        status = _compact(
            {
                "replicas": len(active),
                "fullyLabeledReplicas": len(active),
                "readyReplicas": len(ready),
                "availableReplicas": len(available),
                "observedGeneration": meta.get("generation", 1),
            },
            keep=("replicas",),
        )
        if status != rs.get("status"):
            rs["status"] = status
            self.store.write(rs)

    def _create_pod(self, rs: dict[str, Any]) -> dict[str, Any]:
        template = copy.deepcopy(rs["spec"]["template"])
        tmeta = template.get("metadata") or {}
        ns = rs["metadata"]["namespace"]
        body = {
            "metadata": {
                "generateName": f"{rs['metadata']['name']}-",
                "labels": tmeta.get("labels") or {},
                "ownerReferences": [owner_ref(rs)],
            },
            "spec": template.get("spec") or {},
        }
        if tmeta.get("annotations"):
            body["metadata"]["annotations"] = tmeta["annotations"]
        pod = self.store.create(POD, ns, body)
        stored = self.store.find(POD, ns, pod["metadata"]["name"])
        assert stored is not None
        deploy_uid = controller_uid(rs)
        deployment = self.store.by_uid(deploy_uid) if deploy_uid else None
        owner = deployment["metadata"]["name"] if deployment else rs["metadata"]["name"]
        self.kubelet.adopt(stored, owner, revision(rs) or None)
        events.record(
            self.store,
            rs,
            "SuccessfulCreate",
            f"Created pod: {pod['metadata']['name']}",
            component="replicaset-controller",
        )
        return stored

    def _delete_pod(self, owner: dict[str, Any], pod: dict[str, Any]) -> None:
        self.store.delete(POD, pod["metadata"]["namespace"], pod["metadata"]["name"], {})
        events.record(
            self.store,
            owner,
            "SuccessfulDelete",
            f"Deleted pod: {pod['metadata']['name']}",
            component="replicaset-controller" if owner["kind"] == "ReplicaSet" else "job-controller",
        )
        name = ((pod["spec"].get("containers") or [{}])[0]).get("name", "")
        events.record(self.store, pod, "Killing", f"Stopping container {name}")

    # --------------------------------------------------------- Deployments

    def sync_deployment(self, d: dict[str, Any]) -> None:
        meta, spec = d["metadata"], d["spec"]
        if meta.get("deletionTimestamp"):
            return
        ns = meta["namespace"]
        rses = [rs for rs in self.store.objects(REPLICASET, ns) if controller_uid(rs) == meta["uid"]]
        template = spec["template"]
        new_rs = next((rs for rs in rses if _without_hash(rs["spec"]["template"]) == template), None)
        old = [rs for rs in rses if rs is not new_rs]
        paused = bool(spec.get("paused"))
        created = False
        if new_rs is None and not paused:
            new_rs = self._create_replicaset(d, max((revision(rs) for rs in old), default=0) + 1)
            rses.append(new_rs)
            created = True
        elif new_rs is not None and old and revision(new_rs) <= max(revision(rs) for rs in old):
            self._bump_revision(new_rs, max(revision(rs) for rs in old) + 1)
        if new_rs is not None:
            annotations = meta.setdefault("annotations", {})
            if annotations.get(REVISION) != str(revision(new_rs)):
                annotations[REVISION] = str(revision(new_rs))
                self.store.write(d)
        desired = int(spec.get("replicas", 1))
        if new_rs is not None and not paused:
            if (spec.get("strategy") or {}).get("type") == "Recreate":
                self._recreate(d, new_rs, old, desired)
            else:
                self._rolling(d, new_rs, old, desired)
            self._cleanup(d, old)
        self._status(d, rses, new_rs, desired, created)

    def _create_replicaset(self, d: dict[str, Any], number: int) -> dict[str, Any]:
        meta, spec = d["metadata"], d["spec"]
        collisions = int((d.get("status") or {}).get("collisionCount", 0))
        pod_hash = template_hash(spec["template"], collisions)
        template = copy.deepcopy(spec["template"])
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
        selector = copy.deepcopy(spec["selector"])
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in NOT_COPIED}
        annotations.update({REVISION: str(number), **self._size_annotations(d)})
        body = {
            "metadata": {
                "name": f"{meta['name']}-{pod_hash}",
                "labels": dict(template["metadata"]["labels"]),
                "annotations": annotations,
                "ownerReferences": [owner_ref(d)],
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": int(spec.get("minReadySeconds", 0)),
                "selector": selector,
                "template": template,
            },
        }
        rs = self.store.create(REPLICASET, meta["namespace"], body)
        stored = self.store.find(REPLICASET, meta["namespace"], rs["metadata"]["name"])
        assert stored is not None
        return stored

    def _size_annotations(self, d: dict[str, Any]) -> dict[str, str]:
        desired = int(d["spec"].get("replicas", 1))
        rolling = (d["spec"].get("strategy") or {}).get("rollingUpdate") or {}
        surge = _resolve(rolling.get("maxSurge", 0), desired, round_up=True)
        return {DESIRED: str(desired), MAX_REPLICAS: str(desired + surge)}

    def _bump_revision(self, rs: dict[str, Any], number: int) -> None:
        annotations = rs["metadata"].setdefault("annotations", {})
        previous = annotations.get(REVISION)
        if previous:
            history = [h for h in annotations.get(REVISION_HISTORY, "").split(",") if h]
            annotations[REVISION_HISTORY] = ",".join([*history, previous])
        annotations[REVISION] = str(number)
        self.store.write(rs)

    def _scale(self, d: dict[str, Any], rs: dict[str, Any], replicas: int) -> None:
        current = int(rs["spec"].get("replicas", 0))
        if current == replicas:
            return
        rs["spec"]["replicas"] = replicas
        rs["metadata"].setdefault("annotations", {}).update(self._size_annotations(d))
        rs["metadata"]["generation"] = int(rs["metadata"].get("generation", 1)) + 1
        self.store.write(rs)
        direction = "up" if replicas > current else "down"
        events.record(
            self.store,
            d,
            "ScalingReplicaSet",
            f"Scaled {direction} replica set {rs['metadata']['name']} from {current} to {replicas}",
            component="deployment-controller",
        )

    def _rolling(
        self, d: dict[str, Any], new: dict[str, Any], old: list[dict[str, Any]], desired: int
    ) -> None:
        rolling = (d["spec"].get("strategy") or {}).get("rollingUpdate") or {}
        surge = _resolve(rolling.get("maxSurge", "25%"), desired, round_up=True)
        unavailable = _resolve(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1

        def spec_total() -> int:
            return sum(int(rs["spec"].get("replicas", 0)) for rs in [new, *old])

        new_replicas = int(new["spec"].get("replicas", 0))
        if new_replicas > desired:
            self._scale(d, new, desired)
        elif new_replicas < desired:
            room = desired + surge - spec_total()
            if room > 0:
                self._scale(d, new, new_replicas + min(room, desired - new_replicas))
        if not any(int(rs["spec"].get("replicas", 0)) for rs in old):
            return
        min_available = desired - unavailable
        new_unavailable = int(new["spec"].get("replicas", 0)) - int(
            (new.get("status") or {}).get("availableReplicas", 0)
        )
        budget = spec_total() - min_available - max(new_unavailable, 0)
        oldest_first = sorted(old, key=lambda rs: rs["metadata"]["creationTimestamp"])
        for rs in oldest_first:  # first drop old replicas that are not available anyway
            if budget <= 0:
                break
            replicas = int(rs["spec"].get("replicas", 0))
            unhealthy = replicas - int((rs.get("status") or {}).get("availableReplicas", 0))
            if replicas and unhealthy > 0:
                cut = min(budget, unhealthy)
                self._scale(d, rs, replicas - cut)
                budget -= cut
        available = sum(int((rs.get("status") or {}).get("availableReplicas", 0)) for rs in [new, *old])
        excess = available - min_available
        for rs in oldest_first:
            if excess <= 0:
                break
            replicas = int(rs["spec"].get("replicas", 0))
            if replicas:
                cut = min(replicas, excess)
                self._scale(d, rs, replicas - cut)
                excess -= cut

    def _recreate(
        self, d: dict[str, Any], new: dict[str, Any], old: list[dict[str, Any]], desired: int
    ) -> None:
        if any(int(rs["spec"].get("replicas", 0)) for rs in old):
            for rs in old:
                self._scale(d, rs, 0)
            return
        if any(int((rs.get("status") or {}).get("replicas", 0)) for rs in old):
            return  # wait for the old pods to be gone
        self._scale(d, new, desired)

    def _cleanup(self, d: dict[str, Any], old: list[dict[str, Any]]) -> None:
        limit = int(d["spec"].get("revisionHistoryLimit", 10))
        idle = [
            rs
            for rs in old
            if not int(rs["spec"].get("replicas", 0)) and not int((rs.get("status") or {}).get("replicas", 0))
        ]
        for rs in sorted(idle, key=revision)[: max(len(idle) - limit, 0)]:
            self.store.delete(REPLICASET, rs["metadata"]["namespace"], rs["metadata"]["name"], {})

    def _status(
        self,
        d: dict[str, Any],
        rses: list[dict[str, Any]],
        new: dict[str, Any] | None,
        desired: int,
        created: bool,
    ) -> None:
        def total(field: str, items: list[dict[str, Any]]) -> int:
            return sum(int((rs.get("status") or {}).get(field, 0)) for rs in items)

        previous = d.get("status") or {}
        available = total("availableReplicas", rses)
        spec_total = sum(int(rs["spec"].get("replicas", 0)) for rs in rses)
        counters = {
            "observedGeneration": int(d["metadata"].get("generation", 1)),
            "replicas": total("replicas", rses),
            "updatedReplicas": total("replicas", [new]) if new else 0,
            "readyReplicas": total("readyReplicas", rses),
            "availableReplicas": available,
            "unavailableReplicas": max(spec_total - available, 0),
        }
        status = _compact(counters)
        if previous.get("collisionCount"):
            status["collisionCount"] = previous["collisionCount"]
        conditions = {c["type"]: c for c in previous.get("conditions") or []}
        rolling = (d["spec"].get("strategy") or {}).get("rollingUpdate") or {}
        min_available = desired - _resolve(rolling.get("maxUnavailable", 0), desired, round_up=False)
        if available >= min_available:
            _set(
                conditions,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        else:
            _set(
                conditions,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        name = new["metadata"]["name"] if new else d["metadata"]["name"]
        current = conditions.get("Progressing")
        complete = (
            counters["updatedReplicas"] == desired
            and counters["replicas"] == desired
            and available == desired
        )
        progressed = any(
            counters[k] > int(previous.get(k, 0))
            for k in ("updatedReplicas", "readyReplicas", "availableReplicas")
        ) or counters["replicas"] - counters["updatedReplicas"] < int(previous.get("replicas", 0)) - int(
            previous.get("updatedReplicas", 0)
        )
        if d["spec"].get("paused"):
            _set(conditions, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused")
        elif created:
            _set(
                conditions,
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                f'Created new replica set "{name}"',
                True,
            )
        elif complete:
            _set(
                conditions,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{name}" has successfully progressed.',
            )
        elif progressed:
            _set(
                conditions,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                f'ReplicaSet "{name}" is progressing.',
                True,
            )
        elif current is None:
            _set(conditions, "Progressing", "True", "FoundNewReplicaSet", f'Found new replica set "{name}"')
        elif current.get("reason") not in ("NewReplicaSetAvailable", "ProgressDeadlineExceeded") and _expired(
            current, int(d["spec"].get("progressDeadlineSeconds", 600))
        ):
            _set(
                conditions,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{name}" has timed out progressing.',
            )
        status["conditions"] = [
            conditions[t] for t in ("Available", "Progressing", "ReplicaFailure") if t in conditions
        ]
        if status != previous:
            d["status"] = status
            self.store.write(d)


def _set(
    conditions: dict[str, dict[str, Any]],
    kind: str,
    value: str,
    reason: str,
    message: str,
    touch: bool = False,
) -> None:
    current = conditions.get(kind)
    if current and current["status"] == value and current.get("reason") == reason and not touch:
        return
    stamp = now()
    transition = current["lastTransitionTime"] if current and current["status"] == value else stamp
    conditions[kind] = {
        "type": kind,
        "status": value,
        "lastUpdateTime": stamp,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message,
    }


def _expired(condition: dict[str, Any], deadline: int) -> bool:
    updated = datetime.strptime(condition["lastUpdateTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (datetime.now(UTC) - updated).total_seconds() > deadline

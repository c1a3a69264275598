"""Typed facts about workloads, shaped for runbook conditions (see activities/kubernetes.py)."""

from __future__ import annotations

from typing import Any

from remedium.kube.jobs import job_state
from remedium.kube.objects import meta
from remedium.kube.rollout import revision, rollout_state

CRASHLOOP = "CrashLoopBackOff"
OOMKILLED = "OOMKilled"
IMAGE_PULL = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})


def _conditions(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "type": c.get("type"),
            "status": c.get("status"),
            "reason": c.get("reason"),
            "message": c.get("message"),
        }
        for c in status.get("conditions") or []
    ]


def deployment_fact(d: dict[str, Any]) -> dict[str, Any]:
    spec, status = d.get("spec") or {}, d.get("status") or {}
    state, message = rollout_state(d)
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    return {
        "namespace": meta(d).get("namespace"),
        "name": meta(d).get("name"),
        "replicas": int(spec.get("replicas", 1)),
        "current": int(status.get("replicas") or 0),
        "updated": int(status.get("updatedReplicas") or 0),
        "ready": int(status.get("readyReplicas") or 0),
        "available": int(status.get("availableReplicas") or 0),
        "unavailable": int(status.get("unavailableReplicas") or 0),
        "generation": int(meta(d).get("generation") or 0),
        "observed_generation": int(status.get("observedGeneration") or 0),
        "revision": revision(d),
        "paused": bool(spec.get("paused")),
        "images": [str(c.get("image")) for c in containers],
        "rollout": state,
        "rollout_message": message,
        "conditions": _conditions(status),
    }


def _container(status: dict[str, Any]) -> dict[str, Any]:
    state = status.get("state") or {}
    last = (status.get("lastState") or {}).get("terminated") or {}
    kind = next((k for k in ("waiting", "terminated", "running") if k in state), "unknown")
    detail = state.get(kind) or {}
    return {
        "name": status.get("name"),
        "ready": bool(status.get("ready")),
        "restarts": int(status.get("restartCount") or 0),
        "state": kind,
        "reason": detail.get("reason"),
        "message": detail.get("message"),
        "exit_code": detail.get("exitCode"),
        "last_reason": last.get("reason"),
        "last_exit_code": last.get("exitCode"),
    }


def pod_fact(pod: dict[str, Any]) -> dict[str, Any]:
    status = pod.get("status") or {}
    containers = [_container(c) for c in status.get("containerStatuses") or []]
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    reasons = [c["reason"] for c in containers if c["reason"] and c["state"] != "running"]
    return {
        "name": meta(pod).get("name"),
        "phase": status.get("phase"),
        "ready": ready,
        "restarts": sum(c["restarts"] for c in containers),
        "reason": reasons[0] if reasons else status.get("reason"),
        "last_reason": next((c["last_reason"] for c in containers if c["last_reason"]), None),
        "node": (pod.get("spec") or {}).get("nodeName"),
        "terminating": bool(meta(pod).get("deletionTimestamp")),
        "created": meta(pod).get("creationTimestamp"),
        "containers": containers,
    }


def _crashlooping(p: dict[str, Any]) -> bool:
    return any(c["reason"] == CRASHLOOP for c in p["containers"])


def _oomkilled(p: dict[str, Any]) -> bool:
    return any(OOMKILLED in (c["reason"], c["last_reason"]) for c in p["containers"])


def _image_pull(p: dict[str, Any]) -> bool:
    return any(c["reason"] in IMAGE_PULL for c in p["containers"])


def unhealthy_first(p: dict[str, Any]) -> tuple[int, int, str]:
    """Sort key putting the pods most worth looking at (or deleting) first."""
    return (0 if not p["ready"] else 1, -int(p["restarts"]), str(p["name"]))


def pods_fact(namespace: str, selector: str, pods: list[dict[str, Any]]) -> dict[str, Any]:
    items = sorted((pod_fact(p) for p in pods), key=unhealthy_first)
    return {
        "namespace": namespace,
        "selector": selector,
        "total": len(items),
        "ready": sum(1 for p in items if p["ready"]),
        "not_ready": sum(1 for p in items if not p["ready"]),
        "pending": sum(1 for p in items if p["phase"] == "Pending"),
        "crashlooping": sum(1 for p in items if _crashlooping(p)),
        "oomkilled": sum(1 for p in items if _oomkilled(p)),
        "image_pull_errors": sum(1 for p in items if _image_pull(p)),
        "restarts": sum(int(p["restarts"]) for p in items),
        "reasons": sorted({str(p["reason"]) for p in items if p["reason"]}),
        "pods": items,
    }


def _event_time(e: dict[str, Any]) -> str:
    return str(
        e.get("lastTimestamp")
        or e.get("eventTime")
        or e.get("firstTimestamp")
        or meta(e).get("creationTimestamp")
        or ""
    )


def _involved(e: dict[str, Any]) -> str:
    ref = e.get("involvedObject") or {}
    return f"{ref.get('kind')}/{ref.get('name')}"


def events_fact(namespace: str, name: str | None, events: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    def related(e: dict[str, Any]) -> bool:
        involved = str((e.get("involvedObject") or {}).get("name") or "")
        return name is None or involved == name or involved.startswith(f"{name}-")

    chosen = sorted((e for e in events if related(e)), key=_event_time, reverse=True)[:limit]
    items = [
        {
            "type": e.get("type"),
            "reason": e.get("reason"),
            "message": e.get("message"),
            "object": "{kind}/{name}".format(
                **{"kind": None, "name": None, **(e.get("involvedObject") or {})}
            ),
            "count": int(e.get("count") or 1),
            "last_seen": _event_time(e) or None,
        }
        for e in chosen
    ]
    return {
        "namespace": namespace,
        "name": name,
        "count": len(items),
        "warnings": sum(1 for e in items if e["type"] == "Warning"),
        "reasons": sorted({str(e["reason"]) for e in items if e["reason"]}),
        "events": items,
    }


def job_fact(job: dict[str, Any]) -> dict[str, Any]:
    status = job.get("status") or {}
    state, message = job_state(job)
    return {
        "namespace": meta(job).get("namespace"),
        "name": meta(job).get("name"),
        "state": state,
        "message": message,
        "active": int(status.get("active") or 0),
        "succeeded": int(status.get("succeeded") or 0),
        "failed": int(status.get("failed") or 0),
        "backoff_limit": (job.get("spec") or {}).get("backoffLimit"),
        "start_time": status.get("startTime"),
        "completion_time": status.get("completionTime"),
        "conditions": _conditions(status),
    }

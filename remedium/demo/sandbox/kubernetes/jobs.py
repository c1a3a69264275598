"""The Job controller: pods run to the scenario's outcome until enough succeed or `backoffLimit` passes."""

from __future__ import annotations

import copy
from typing import Any

from remedium.demo.sandbox.kubernetes import events, kinds
from remedium.demo.sandbox.kubernetes.pods import Kubelet
from remedium.demo.sandbox.kubernetes.rollout import POD, controller_uid, owner_ref
from remedium.demo.sandbox.kubernetes.store import Store, now

JOB = kinds.BY_PATH[("batch", "v1", "jobs")]


def finished(job: dict[str, Any]) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def _condition(kind: str, reason: str, message: str) -> dict[str, Any]:
    stamp = now()
    return {
        "type": kind,
        "status": "True",
        "lastProbeTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }


class Jobs:
    def __init__(self, store: Store, kubelet: Kubelet) -> None:
        self.store = store
        self.kubelet = kubelet

    def sync(self, job: dict[str, Any]) -> None:
        meta, spec = job["metadata"], job["spec"]
        if meta.get("deletionTimestamp") or finished(job) or spec.get("suspend"):
            return
        status = copy.deepcopy(job.get("status") or {})
        pods = [p for p in self.store.objects(POD, meta["namespace"]) if controller_uid(p) == meta["uid"]]
        phases = [(p.get("status") or {}).get("phase") for p in pods]
        succeeded, failed = phases.count("Succeeded"), phases.count("Failed")
        active = [
            p
            for p, phase in zip(pods, phases, strict=True)
            if phase not in ("Succeeded", "Failed") and not p["metadata"].get("deletionTimestamp")
        ]
        completions = int(spec.get("completions") or 1)
        status.setdefault("startTime", now())
        conditions = list(status.get("conditions") or [])
        if failed > int(spec.get("backoffLimit", 6)):
            message = "Job has reached the specified backoff limit"
            conditions += [
                _condition("FailureTarget", "BackoffLimitExceeded", message),
                _condition("Failed", "BackoffLimitExceeded", message),
            ]
            for pod in active:
                self.store.delete(POD, meta["namespace"], pod["metadata"]["name"], {})
            active = []
            events.record(self.store, job, "BackoffLimitExceeded", message, "Warning", "job-controller")
        elif succeeded >= completions:
            message = "Reached expected number of succeeded pods"
            conditions += [
                _condition("SuccessCriteriaMet", "CompletionsReached", message),
                _condition("Complete", "CompletionsReached", message),
            ]
            status["completionTime"] = now()
            events.record(self.store, job, "Completed", "Job completed", component="job-controller")
        else:
            wanted = min(int(spec.get("parallelism") or 1), completions - succeeded)
            for _ in range(wanted - len(active)):
                active.append(self._create_pod(job))
        status.update(
            {
                "active": len(active),
                "succeeded": succeeded,
                "failed": failed,
                "ready": sum(1 for p in active if self.kubelet.sim(p).ready_since is not None),
                "terminating": 0,
                "uncountedTerminatedPods": {},
            }
        )
        for counter in ("active", "succeeded", "failed"):
            if not status[counter]:
                del status[counter]
        if conditions:
            status["conditions"] = conditions
        if status != job.get("status"):
            job["status"] = status
            self.store.write(job)

    def _create_pod(self, job: dict[str, Any]) -> dict[str, Any]:
        template = copy.deepcopy(job["spec"]["template"])
        tmeta = template.get("metadata") or {}
        ns = job["metadata"]["namespace"]
        body: dict[str, Any] = {
            "metadata": {
                "generateName": f"{job['metadata']['name']}-",
                "labels": tmeta.get("labels") or {},
                "ownerReferences": [owner_ref(job)],
            },
            "spec": template.get("spec") or {},
        }
        if tmeta.get("annotations"):
            body["metadata"]["annotations"] = tmeta["annotations"]
        pod = self.store.create(POD, ns, body)
        stored = self.store.find(POD, ns, pod["metadata"]["name"])
        assert stored is not None
        self.kubelet.adopt(stored, job["metadata"]["name"], None, job=True)
        events.record(
            self.store,
            job,
            "SuccessfulCreate",
            f"Created pod: {pod['metadata']['name']}",
            component="job-controller",
        )
        return stored

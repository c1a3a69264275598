"""The `kubernetes` diagnostic: typed facts about workloads, shaped for runbook conditions.

A runbook asks `facts.pods.value.crashlooping > 0`, not how a container status nests, so the
apiserver's JSON is read into flat, stable values here (the shapes are listed in the
package's docstring). The waits and `delete_pod` read pods and rollouts through the same
functions, so what a runbook sees and what an action decides on never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field
from temporalio.exceptions import ApplicationError

from activities.kubernetes.base import _invalid, _KubeBase
from activities.kubernetes.client import reason_of
from activities.kubernetes.jobspec import job_state
from activities.kubernetes.objects import RERUN_OF, meta, selector_string
from activities.kubernetes.revisions import revision, rollout_state
from remedium.catalog import Diagnostic, register_diagnostic
from remedium.errors import ErrorType
from remedium.models.common import UserModel

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
            return deployment_fact(d), f"kubectl get deployment {params.name} -n {ns} -o json"
        if params.resource == "job" and params.latest_run:
            job = await self._latest_run(params)
            return job_fact(job), f"kubectl get jobs -n {ns} (newest run of {params.name})"
        if params.resource == "job":
            job = await self._get(params, "job", self.kube.batch.read_namespaced_job)
            return job_fact(job), f"kubectl get job {params.name} -n {ns} -o json"
        if params.resource == "events":
            listing = await self.kube.call(f"list events {ns}", self.kube.core.list_namespaced_event, ns)
            value = events_fact(ns, params.name, list(listing.get("items") or []), params.tail)
            return value, f"kubectl get events -n {ns}" + (f" (for {params.name})" if params.name else "")
        selector = await self._selector(params)
        if params.resource == "pods":
            pods = await self._list_pods(ns, selector)
            return pods_fact(ns, selector, pods), f"kubectl get pods -n {ns} -l {selector}"
        return await self._logs(params, selector)

    async def _get(
        self, params: KubernetesFactParams, noun: str, method: Callable[..., Any]
    ) -> dict[str, Any]:
        if not params.name:
            raise ApplicationError(
                f"the {noun} fact needs a name", type=ErrorType.INVALID_PARAMS, non_retryable=True
            )
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
                f"no job {params.namespace}/{params.name} nor any re-run of it",
                ErrorType.KUBERNETES_NOT_FOUND,
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
            pods = sorted((pod_fact(p) for p in await self._list_pods(ns, selector)), key=unhealthy_first)
            if not pods:
                raise ApplicationError(
                    f"no pods match {selector} in {ns}",
                    type=ErrorType.KUBERNETES_NOT_FOUND,
                    non_retryable=True,
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

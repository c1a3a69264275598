"""A Deployment in CrashLoopBackOff after its database connection wedged: restart it, or undo.

The world: `payments/api` (2 replicas) crash-loops (revision 1). Variants: `recovering`
(the restarted revision 2 comes up Ready: resolved) and `worsening` (revision 2 is
OOM-killed, which is worse: the restart is rolled back to the previous revision at once and
the incident escalates).
"""

from __future__ import annotations

from typing import Any

from remedium.demo.sandbox.kubernetes import deployment
from remedium.demo.scenarios import ScenarioWorld
from remedium.models import Alert

NAME = "crashloop-restart"
RUNBOOK = "crashloop-restart"
EXPECTED_OUTCOME = "resolved"
EXPECTED_OUTCOMES = {"recovering": "resolved", "worsening": "escalated"}

NAMESPACE = "payments"
DEPLOYMENT = "api"
IMAGE = "registry.local/payments/api:3.14.2"

CRASH_LOGS = [
    "starting api 3.14.2",
    "connecting to postgres at payments-db:5432",
    "fatal: connection pool exhausted: stale connections after failover",
]


def alert(incident_id: str) -> Alert:
    """What the PagerDuty ingress makes of the page."""
    return Alert(
        source="pagerduty",
        id=incident_id,
        title=f"Deployment {NAMESPACE}/{DEPLOYMENT} pods in CrashLoopBackOff",
        service="payments-api",
        severity="P1",
        labels={"urgency": "high"},
    )


def deployment_manifest() -> dict[str, Any]:
    return deployment(NAMESPACE, DEPLOYMENT, replicas=2, image=IMAGE, labels={"app": DEPLOYMENT})


def seed(world: ScenarioWorld, variant: str = "recovering") -> None:
    if variant not in EXPECTED_OUTCOMES:
        raise ValueError(f"unknown variant {variant!r} of {NAME}; known: {', '.join(EXPECTED_OUTCOMES)}")
    kube = world.kube
    kube.set_pod_behaviour(NAMESPACE, DEPLOYMENT, "crashloop")  # every revision unless said otherwise
    kube.set_pod_logs(NAMESPACE, DEPLOYMENT, CRASH_LOGS)
    kube.set_pod_behaviour(
        NAMESPACE, DEPLOYMENT, "ready" if variant == "recovering" else "oomkilled", revision=2
    )
    kube.apply(deployment_manifest())
    kube.wait_until(lambda: _crashlooping(world) > 0, timeout=30)


def _crashlooping(world: ScenarioWorld) -> int:
    pods = world.kube.list_objects("v1", "Pod", NAMESPACE)
    count = 0
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if ((status.get("state") or {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff":
                count += 1
    return count

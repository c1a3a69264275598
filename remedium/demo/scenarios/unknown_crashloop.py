"""A crash-looping Deployment behind an alert no runbook knows: the LLM investigator's demo.

The world: `web/checkout` (2 replicas) crash-loops at start-up because its payment-gateway
certificate expired; its logs (in the Kubernetes sandbox and in Loki) end in the fatal
error. The page is a `KubePodRestartsHigh` alert whose title matches no runbook (it says
"restarted", not "crash loop"), so without an LLM it escalates with "no runbook matches".

With the demo's LLM sandbox on the `sandbox-crashloop` model the incident runs an
investigation under its circuit breaker: the model reads the pods (`kubernetes`) and the
logs (`logs`), then submits a finding (confidence 0.85) proposing the library runbook
`crashloop-restart` for `web/checkout`. The proposal is only an approval request; the demo
approves it as `demo-operator` (self-declared, as from the CLI) once it is pending, so the
timeline shows the investigation, the breaker's accounting, the proposal, the approval and
the restart, whose revision 2 comes up Ready: resolved. Variant `unapproved`: the demo
rejects the proposal instead, and the incident ends `rejected` with the finding, having changed
nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

from temporalio.client import Client

from remedium.demo.sandbox.kubernetes import deployment
from remedium.demo.sandbox.llm import CRASHLOOP
from remedium.demo.scenarios import ScenarioWorld
from remedium.models import Alert
from remedium.names import STATUS_QUERY

NAME = "unknown-crashloop"
RUNBOOK = "crashloop-restart"  # what the investigator proposes; no runbook matches the alert itself
LLM_MODEL = CRASHLOOP
EXPECTED_OUTCOME = "resolved"
EXPECTED_OUTCOMES = {"approved": "resolved", "unapproved": "rejected"}
APPROVER = "demo-operator"
APPROVAL_WAIT_S = 300.0

NAMESPACE = "web"
DEPLOYMENT = "checkout"
IMAGE = "registry.local/web/checkout:5.2.0"

CRASH_LOGS = [
    "checkout 5.2.0 starting",
    "loading payment gateway client certificate from /etc/checkout/tls",
    "fatal: payment gateway TLS handshake failed: certificate has expired (notAfter 2026-11-30)",
]


def alert(incident_id: str) -> Alert:
    """What the PagerDuty ingress makes of the page: no runbook's `match` fits its title."""
    return Alert(
        source="pagerduty",
        id=incident_id,
        title=f"KubePodRestartsHigh: pods of {NAMESPACE}/{DEPLOYMENT} restarted 14 times in 10 minutes",
        service="checkout",
        severity="P2",
        labels={"urgency": "high"},
    )


def deployment_manifest() -> dict[str, Any]:
    return deployment(NAMESPACE, DEPLOYMENT, replicas=2, image=IMAGE, labels={"app": DEPLOYMENT})


def loki_labels() -> dict[str, str]:
    """The stream the `logs` tool's query `{namespace="web", app="checkout"}` selects."""
    return {"namespace": NAMESPACE, "app": DEPLOYMENT, "container": DEPLOYMENT}


def push_logs(loki_url: str, labels: dict[str, str], lines: list[str]) -> None:
    """Through Loki's push API, as Promtail's JSON client would, stamped over the last minutes."""
    now = time.time_ns()
    values = [[str(now - (len(lines) - i) * 15 * 10**9), line] for i, line in enumerate(lines)]
    body = json.dumps({"streams": [{"stream": labels, "values": values}]}).encode()
    request = urllib.request.Request(
        f"{loki_url.rstrip('/')}/loki/api/v1/push",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 204:
            raise RuntimeError(f"Loki push answered {response.status}")


def seed(world: ScenarioWorld, variant: str = "approved") -> None:
    if variant not in EXPECTED_OUTCOMES:
        raise ValueError(f"unknown variant {variant!r} of {NAME}; known: {', '.join(EXPECTED_OUTCOMES)}")
    kube = world.kube
    kube.set_pod_behaviour(NAMESPACE, DEPLOYMENT, "crashloop")
    kube.set_pod_logs(NAMESPACE, DEPLOYMENT, CRASH_LOGS)
    kube.set_pod_behaviour(NAMESPACE, DEPLOYMENT, "ready", revision=2)  # a restart picks up the renewed cert
    kube.apply(deployment_manifest())
    push_logs(world.loki_url, loki_labels(), CRASH_LOGS)
    kube.wait_until(lambda: _crashlooping(world) > 0, timeout=30)


async def drive(client: Client, workflow_id: str, variant: str | None = None) -> str:
    """Play the human: once the proposal waits for approval, approve (or reject) it.

    Returns what the incident answered. Goes through the same `decide` update the CLI uses,
    so the audit shows `approved by demo-operator via update, self-declared`.
    """
    from remedium.incidents import decide
    from remedium.models import DecideRequest, IncidentStatus

    handle = client.get_workflow_handle(workflow_id)
    deadline = time.monotonic() + APPROVAL_WAIT_S
    while time.monotonic() < deadline:
        try:
            status = await handle.query(STATUS_QUERY, result_type=IncidentStatus)
        except Exception:  # not started yet, or a query racing the first task
            status = None
        if status is not None and status.pending_approval is not None:
            pending = status.pending_approval
            verb = "reject" if variant == "unapproved" else "approve"
            print(f"  demo: {APPROVER} will {verb} step {pending.step!r}; {breaker_line(status)}", flush=True)
            request = DecideRequest(
                decision=verb,
                by=APPROVER,
                step=pending.step,
                request=pending.request,
                reason=f"demo: {verb} the investigator's proposal",
            )
            return await decide(client, workflow_id, request)
        await asyncio.sleep(0.5)
    return "no approval was requested"


def breaker_line(status: Any) -> str:
    """The breaker's accounting as one line (the `status` query's `breaker`)."""
    b = status.breaker
    if b is None:
        return "no investigation ran"
    return (
        f"breaker {b.state}: {b.llm_calls} LLM call(s), {b.tool_calls} tool call(s), "
        f"{b.prompt_tokens} prompt + {b.completion_tokens} completion tokens, ${b.cost_usd:.6f}"
    )


def _crashlooping(world: ScenarioWorld) -> int:
    pods = world.kube.list_objects("v1", "Pod", NAMESPACE)
    count = 0
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if ((status.get("state") or {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff":
                count += 1
    return count

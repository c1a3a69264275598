"""A page behind a storm: seconds from a P1's delivery to its first diagnostic, with and without a backlog.

Builds its own production-shaped stack (dev server, `remedium worker`, `remedium ingress`, each
its own process; bench/_stack.py), with an auto-approved restart runbook whose diagnostic and
action reach a loopback target (one pool per incident), so every incident does real work:

1. baseline: one signed P1 PagerDuty delivery with nothing queued; its latency is the
   seconds from sending the delivery to the server time of its first completed `diagnose.*`
   activity (read from the workflow history, which needs no worker to answer);
2. storm: `--incidents` distinct signed P3 deliveries from `--clients` concurrent clients
   (ack p50/p99 recorded), then at once the same kind of P1 behind that backlog.

The figure is the two P1 latencies. `--rank-none` writes a policy that ranks nothing urgent,
so the P1 queues on the normal task queue like every other incident: the behaviour before
the reserved urgent queue, measured on the same code and machine.

    .venv/bin/python bench/storm.py [--incidents 300] [--clients 32] [--rank-none]

Last line: `p1 behind N: X s (no backlog: Y s)`; the record goes to bench/results/storm.json
(storm-rank-none.json with --rank-none).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml
from temporalio.api.enums.v1 import EventType

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import PD_SECRET, IncidentTarget, Stack, write_result

from remedium.ingress.pagerduty import sign
from remedium.names import incident_workflow_id

VECTOR = (
    Path(__file__).resolve().parents[2] / "shared" / "vectors" / "pagerduty_webhook_incident_triggered.json"
)
SERVICE = "API Service"  # the vector's service; the runbook matches it


def runbook(target: IncidentTarget) -> dict[str, Any]:
    """Diagnose the incident's own pool, restart it (low risk: no approval), verify it."""
    pool = f"{target.url}/p/{{{{ alert.id }}}}"
    return {
        "apiVersion": "remedium/v1",
        "kind": "Runbook",
        "metadata": {"name": "storm-restart"},
        "match": {"source": ["pagerduty"], "service": [SERVICE]},
        "diagnose": [{"id": "health", "kind": "http", "with": {"url": f"{pool}/health"}, "timeout": "30s"}],
        "decide": {"when": ["facts.health.ok and facts.health.value.status >= 500"]},
        "plan": [
            {
                "id": "restart",
                "action": "http.request",
                "risk": "low",
                "with": {"url": f"{pool}/admin/restart", "json": {}},
            }
        ],
        "verify": {
            "checks": [{"id": "after", "kind": "http", "with": {"url": f"{pool}/health"}}],
            "success": ["facts.after.ok and facts.after.value.status == 200"],
            "every": "1s",
            "within": "60s",
        },
    }


def write_config(workdir: Path, target: IncidentTarget, rank_none: bool) -> tuple[Path, Path]:
    rb_dir = workdir / "runbooks"
    rb_dir.mkdir(parents=True, exist_ok=True)
    (rb_dir / "storm.yaml").write_text(yaml.safe_dump(runbook(target), sort_keys=False))
    policy: dict[str, Any] = {
        "apiVersion": "remedium/v1",
        "kind": "Policy",
        "approval": {"approvers": ["*"], "required_for": ["medium", "high"]},
        "http": {"allow": [target.url]},
    }
    if rank_none:
        policy["priority"] = {"urgent": {"severity": []}}
    path = workdir / "policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return rb_dir, path


class Deliveries:
    """Signed `incident.triggered` bodies from the captured vector, one incident id each."""

    def __init__(self) -> None:
        vector = json.loads(VECTOR.read_text())
        self.template = json.loads(vector["raw_body"])
        self.headers = {k: v for k, v in vector["http"]["headers"].items() if k != "X-PagerDuty-Signature"}

    def body(self, incident_id: str, priority: str) -> bytes:
        body = copy.deepcopy(self.template)
        body["event"]["id"] = str(uuid.uuid4())
        body["event"]["data"]["id"] = incident_id
        body["event"]["data"]["priority"]["summary"] = priority
        return json.dumps(body).encode()

    async def send(self, http: httpx.AsyncClient, body: bytes) -> float:
        """POST one delivery; the seconds to its 202."""
        headers = {**self.headers, "X-PagerDuty-Signature": sign(body, PD_SECRET.encode())}
        started = time.perf_counter()
        reply = await http.post("/webhooks/pagerduty", content=body, headers=headers)
        elapsed = time.perf_counter() - started
        assert reply.status_code == 202 and reply.json()["started"], reply.text
        return elapsed


async def first_diagnostic_at(stack: Stack, workflow_id: str, wait_s: float) -> float | None:
    """Server time (epoch s) of the first completed `diagnose.*` activity; None if none in time."""
    handle = stack.client.get_workflow_handle(workflow_id)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        scheduled: dict[int, str] = {}
        try:
            async for event in handle.fetch_history_events():
                if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                    attrs = event.activity_task_scheduled_event_attributes
                    scheduled[event.event_id] = attrs.activity_type.name
                elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                    attrs_done = event.activity_task_completed_event_attributes
                    if scheduled.get(attrs_done.scheduled_event_id, "").startswith("diagnose."):
                        return event.event_time.ToDatetime().timestamp()
        except Exception:  # not started yet as far as the history goes
            pass
        await asyncio.sleep(0.2)
    return None


async def p1_latency(
    stack: Stack, http: httpx.AsyncClient, deliveries: Deliveries, wait_s: float
) -> float | None:
    incident_id = f"P1{uuid.uuid4().hex[:10].upper()}"
    sent = time.time()
    await deliveries.send(http, deliveries.body(incident_id, "P1"))
    done = await first_diagnostic_at(stack, incident_workflow_id("pagerduty", incident_id), wait_s)
    return None if done is None else done - sent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def storm(
    stack: Stack, http: httpx.AsyncClient, deliveries: Deliveries, count: int, clients: int
) -> dict[str, Any]:
    bodies = [deliveries.body(f"S{i:05d}{uuid.uuid4().hex[:6].upper()}", "P3") for i in range(count)]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    acks: list[float] = []

    async def client() -> None:
        while not queue.empty():
            acks.append(await deliveries.send(http, queue.get_nowait()))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return {
        "deliveries": count,
        "seconds": round(elapsed, 2),
        "deliveries_per_s": round(count / elapsed, 1),
        "ack_p50_s": round(statistics.median(acks), 3),
        "ack_p99_s": round(percentile(acks, 0.99), 3),
        "ack_max_s": round(max(acks), 3),
    }


async def main(incidents: int, clients: int, rank_none: bool, p1_timeout: float) -> None:
    with tempfile.TemporaryDirectory(prefix="storm-") as tmp, IncidentTarget() as target:
        workdir = Path(tmp)
        rb_dir, policy = write_config(workdir, target, rank_none)
        async with Stack(workdir, runbooks_dir=rb_dir, policy_file=policy) as stack:
            limits = httpx.Limits(max_connections=clients + 4)
            async with httpx.AsyncClient(base_url=stack.ingress_url, timeout=60, limits=limits) as http:
                deliveries = Deliveries()
                warm = await p1_latency(stack, http, deliveries, 60)  # first incident pays start-up costs
                baseline = await p1_latency(stack, http, deliveries, 60)
                load = await storm(stack, http, deliveries, incidents, clients)
                behind = await p1_latency(stack, http, deliveries, p1_timeout)
                running = await stack.client.count_workflows(
                    'WorkflowType = "IncidentWorkflow" AND ExecutionStatus = "Running"'
                )
    record = {
        "mode": "rank-none (before: P1 on the normal queue)" if rank_none else "urgent queue",
        "incidents": incidents,
        "clients": clients,
        "p1_no_backlog_s": None if baseline is None else round(baseline, 2),
        "p1_first_warm_s": None if warm is None else round(warm, 2),
        "p1_behind_storm_s": None if behind is None else round(behind, 2),
        "p1_timeout_s": p1_timeout,
        "incidents_still_running_after_p1": running.count,
        "storm": load,
    }
    path = write_result("storm-rank-none" if rank_none else "storm", record)
    print(json.dumps(record, indent=2))
    print(f"written to {path}")
    shown = f"{behind:.2f}" if behind is not None else f"> {p1_timeout:.0f} (not reached)"
    base = f"{baseline:.2f}" if baseline is not None else "not reached"
    print(f"p1 behind {incidents}: {shown} s (no backlog: {base} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--incidents", type=int, default=300, help="distinct storm incidents (issue: 2000)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent delivering clients")
    parser.add_argument("--rank-none", action="store_true", help="policy ranks nothing urgent (before)")
    parser.add_argument("--p1-timeout", type=float, default=180.0, help="give up on the P1 after this")
    args = parser.parse_args()
    asyncio.run(main(args.incidents, args.clients, args.rank_none, args.p1_timeout))

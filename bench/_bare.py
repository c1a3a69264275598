"""The baseline of bench/loop.py: a bare workflow with the incident's shape and nothing else.

Nine activities in sequence, as an auto-approved one-step http incident runs them
(prepare, diagnose, decide, dry-run, execute, verify probe, verify, report, close), three
of which make the same HTTP calls on the same target (GET health, POST restart with an
Idempotency-Key, GET health). No runbook, policy, templates, guard, limiter or status: the
difference between this and the product is what Remedium costs per incident.

Run as its own process, like `remedium worker`, with the same pydantic data converter and
the workflow sandbox on:  python bench/_bare.py  (env REMEDIUM_TEMPORAL_ADDRESS, _TASK_QUEUE)
"""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import httpx
    from pydantic import BaseModel

BARE_WORKFLOW = "BenchBareIncident"


class BareInput(BaseModel):
    incident_id: str
    base_url: str


class BareStep(BaseModel):
    incident_id: str
    base_url: str
    data: dict[str, Any] = {}


class BareResult(BaseModel):
    ok: bool
    status: int = 0


_client: httpx.AsyncClient | None = None


def _http() -> httpx.AsyncClient:
    global _client
    if _client is None:
        _client = httpx.AsyncClient(timeout=10)
    return _client


@activity.defn(name="bare.noop")
async def noop(step: BareStep) -> BareResult:
    return BareResult(ok=True)


@activity.defn(name="bare.get")
async def get(step: BareStep) -> BareResult:
    reply = await _http().get(f"{step.base_url}/health")
    return BareResult(ok=True, status=reply.status_code)


@activity.defn(name="bare.post")
async def post(step: BareStep) -> BareResult:
    reply = await _http().post(
        f"{step.base_url}/admin/restart",
        json={"pool": "web"},
        headers={"Idempotency-Key": f"{step.incident_id}/restart"},
    )
    return BareResult(ok=reply.is_success, status=reply.status_code)


@workflow.defn(name=BARE_WORKFLOW)
class BareIncident:
    @workflow.run
    async def run(self, given: BareInput) -> str:
        step = BareStep(incident_id=given.incident_id, base_url=given.base_url)
        timeout = timedelta(seconds=30)
        plan: list[Any] = [noop, get, noop, noop, post, get, noop, noop, noop]
        statuses = []
        for fn in plan:
            result = await workflow.execute_activity(
                fn, step, start_to_close_timeout=timeout, result_type=BareResult
            )
            statuses.append(result.status)
        return "resolved" if statuses[1] != 200 and statuses[5] == 200 else "escalated"


async def main() -> None:
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.worker import Worker

    client = await Client.connect(
        os.environ["REMEDIUM_TEMPORAL_ADDRESS"], data_converter=pydantic_data_converter
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(
        client,
        task_queue=os.environ["REMEDIUM_TASK_QUEUE"],
        workflows=[BareIncident],
        activities=[noop, get, post],
    )
    async with worker:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())

"""What incidents waiting for approval cost the worker, and how fast an approval acts.

A storm of alerts whose runbook needs approval leaves many incidents parked at
`awaiting_approval` for minutes or hours. Each one the worker keeps cached holds its workflow
state in memory; one evicted from the cache is replayed from history on its next task. This
bench opens N such incidents through the Alertmanager webhook of `remedium ingress` (a
one-step http runbook whose step needs approval), waits until all N show
`IncidentStage = awaiting_approval`, then reads `remedium worker`'s RSS (VmRSS from
/proc/<pid>/status) against the RSS it had idle (started, before any incident), and approves
the OLDEST incident (the first opened, so the likeliest evicted) through the `decide` update
as `remedium approve` does: the figure is the time from the approval call to the target
receiving the step's POST. `--cache N` sets REMEDIUM_WORKER_MAX_CACHED_WORKFLOWS for this
run (default: the worker's own default), which is how the default was chosen.

    .venv/bin/python bench/idle.py [--incidents 300] [--cache 1000] [--concurrency 16]

Targets on this machine at 5,000 waiting: RSS < 300 MB and approve->action < 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stack import AM_HEADERS, IncidentTarget, Stack, alertmanager_body, write_result

from remedium.demo.recording import restart_runbook, write_config
from remedium.incidents import decide
from remedium.models import DecideRequest
from remedium.names import SA_STAGE
from remedium.settings import Settings


def waiting_runbook() -> dict[str, Any]:
    runbook = restart_runbook(approval_required=True, approval_timeout="6h", every="1s", within="1m")
    runbook["match"]["source"] = ["alertmanager"]
    return runbook


async def count_waiting(stack: Stack) -> int:
    query = f'{SA_STAGE.name} = "awaiting_approval" AND ExecutionStatus = "Running"'
    return (await stack.client.count_workflows(query)).count


async def main(incidents: int, cache: int | None, concurrency: int) -> None:
    env = {} if cache is None else {"REMEDIUM_WORKER_MAX_CACHED_WORKFLOWS": str(cache)}
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp, IncidentTarget() as target:
        work = Path(tmp)
        rb_dir, policy = write_config(work, [waiting_runbook()], allow=[target.url])
        async with Stack(work, runbooks_dir=rb_dir, policy_file=policy, env=env) as stack:
            assert stack.worker is not None
            await asyncio.sleep(2)  # let the worker settle after its first polls
            idle_kb = stack.worker.rss_kb()
            fingerprints = [f"{uuid.uuid4().hex[:8]}{i:08x}" for i in range(incidents)]
            gate = asyncio.Semaphore(concurrency)
            started = time.perf_counter()
            async with httpx.AsyncClient(base_url=stack.ingress_url, timeout=60) as http:

                async def deliver(i: int) -> None:
                    body = alertmanager_body(fingerprints[i], {"base_url": target.pool_url(f"p{i}")})
                    async with gate:
                        reply = await http.post("/webhooks/alertmanager", content=body, headers=AM_HEADERS)
                    assert reply.status_code == 202, reply.text

                await deliver(0)  # alone first, so incident 0 really is the oldest
                await asyncio.gather(*(deliver(i) for i in range(1, incidents)))
            delivered_s = time.perf_counter() - started
            peak_kb = idle_kb
            while (waiting := await count_waiting(stack)) < incidents:
                stack.worker.check_alive()
                peak_kb = max(peak_kb, stack.worker.rss_kb())
                await asyncio.sleep(1)
            reached_s = time.perf_counter() - started
            await asyncio.sleep(3)  # the last workflow tasks complete; the worker goes quiet
            waiting_kb = stack.worker.rss_kb()
            peak_kb = max(peak_kb, waiting_kb)
            oldest = f"incident-alertmanager-{fingerprints[0]}"
            pool = "p0"
            asked = time.monotonic()
            await decide(
                stack.client,
                oldest,
                DecideRequest(decision="approve", by="alice", step="restart-pool", reason="bench"),
            )
            while pool not in target.first_action_at:
                await asyncio.sleep(0.005)
                assert time.monotonic() - asked < 60, "the approved step never reached the target"
            latency = target.first_action_at[pool] - asked
    per_kb = (waiting_kb - idle_kb) / incidents
    write_result(
        "idle",
        {
            "incidents_waiting": waiting,
            "max_cached_workflows": cache if cache is not None else Settings().worker_max_cached_workflows,
            "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX", "glibc default"),
            "worker_rss_idle_mb": round(idle_kb / 1024, 1),
            "worker_rss_waiting_mb": round(waiting_kb / 1024, 1),
            "worker_rss_peak_mb": round(peak_kb / 1024, 1),
            "per_incident_kb": round(per_kb, 1),
            "delivered_s": round(delivered_s, 1),
            "all_awaiting_approval_s": round(reached_s, 1),
            "incidents_per_s_to_awaiting": round(incidents / reached_s, 2),
            "approve_to_action_s": round(latency, 3),
            "targets_at_5000": {"rss_mb": 300, "approve_to_action_s": 1.0},
        },
    )
    print(
        f"per incident {per_kb:.1f} KB; peak {peak_kb / 1024:.0f} MB; all waiting after {reached_s:.0f} s",
        file=sys.stderr,
    )
    print(
        f"idle: {waiting} waiting, RSS {waiting_kb / 1024:.0f} MB (idle {idle_kb / 1024:.0f} MB), "
        f"approve->action {latency:.2f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--incidents", type=int, default=300)
    parser.add_argument("--cache", type=int, default=None, help="REMEDIUM_WORKER_MAX_CACHED_WORKFLOWS")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.incidents, args.cache, args.concurrency))

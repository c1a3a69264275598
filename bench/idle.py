"""What incidents waiting for approval cost the worker, and how fast an approval acts.

A storm of alerts whose runbook needs approval leaves many incidents parked at
`awaiting_approval` for minutes or hours. Each one the worker keeps cached holds its workflow
state in memory; one evicted from the cache is replayed from history on its next task. This
bench opens N such incidents through the Alertmanager webhook of `remedium ingress` (a
one-step http runbook whose step needs approval), waits until all N show
`IncidentStage = awaiting_approval`, then reads `remedium worker`'s RSS (VmRSS from
/proc/<pid>/status) against the RSS it had idle (started, before any incident), and approves
the OLDEST incident (the first opened: with N above the cache size it has been evicted, so its
approval replays it first) through the `decide` update as `remedium approve` does: the figure
is the time from the approval call to the target receiving the step's POST. The newest
incident (still cached) is approved the same way, for comparison.

Delivery keeps at most `--window` incidents delivered but not yet awaiting approval (it polls
`count_workflows`), so a 5,000 storm reaches the worker at the pace it drains and the
incidents in flight stay inside its cache instead of thrashing it. `--cache N` sets
REMEDIUM_WORKER_MAX_CACHED_WORKFLOWS for this run (default: the worker's own default).
`--trace-memory` runs the worker under tracemalloc (`bench/_memprobe.py`, much slower) and
adds what Python holds once all are waiting (top files, lines, object types) to the record.

    .venv/bin/python bench/idle.py [--incidents 300] [--cache 1000] [--window 200] [--trace-memory]

Targets on this machine at 5,000 waiting: RSS < 300 MB and approve->action < 1 s. The record
goes to bench/results/idle-<N>[-cache<C>][-tracemalloc].json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stack import AM_HEADERS, BENCH_DIR, IncidentTarget, Proc, Stack, alertmanager_body, write_result

from remedium.demo.recording import restart_runbook, write_config
from remedium.incidents import decide
from remedium.models import DecideRequest
from remedium.names import SA_STAGE, WORKFLOW_TYPE
from remedium.settings import Settings

REACH_DEADLINE_S = 3600.0  # for all N to be awaiting approval: a stall fails the bench, slowness does not


def waiting_runbook() -> dict[str, Any]:
    runbook = restart_runbook(approval_required=True, approval_timeout="6h", every="1s", within="1m")
    runbook["match"]["source"] = ["alertmanager"]
    return runbook


async def count_waiting(stack: Stack) -> int:
    query = f'{SA_STAGE.name} = "awaiting_approval" AND ExecutionStatus = "Running"'
    return (await stack.client.count_workflows(query)).count


async def count_closed(stack: Stack) -> int:
    """Incidents that ended instead of waiting (e.g. a diagnostic timed out on a starved worker)."""
    query = f'WorkflowType = "{WORKFLOW_TYPE}" AND ExecutionStatus != "Running"'
    return (await stack.client.count_workflows(query)).count


async def approve_and_time(stack: Stack, target: IncidentTarget, fingerprint: str, pool: str) -> float:
    """Seconds from the `decide` call to the target receiving the step's POST."""
    asked = time.monotonic()
    await decide(
        stack.client,
        f"incident-alertmanager-{fingerprint}",
        DecideRequest(decision="approve", by="alice", step="restart-pool", reason="bench"),
    )
    while pool not in target.first_action_at:
        await asyncio.sleep(0.005)
        if time.monotonic() - asked > 60:
            raise RuntimeError(f"the approved step of {pool} never reached the target")
    return target.first_action_at[pool] - asked


def _read_probe(out: Path) -> dict[str, Any] | None:
    return dict(json.loads(out.read_text())) if out.exists() else None


async def probe_memory(worker: Proc, out: Path) -> dict[str, Any]:
    """SIGUSR1 to the tracemalloc'd worker; its dump (bench/_memprobe.py, written atomically)."""
    os.kill(worker.pid, signal.SIGUSR1)
    for _ in range(1200):
        if (found := _read_probe(out)) is not None:
            return found
        await asyncio.sleep(0.25)
    raise RuntimeError("the worker wrote no memory probe in 300 s")


async def main(incidents: int, cache: int | None, concurrency: int, window: int, trace: bool) -> None:
    env = {} if cache is None else {"REMEDIUM_WORKER_MAX_CACHED_WORKFLOWS": str(cache)}
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp, IncidentTarget() as target:
        work = Path(tmp)
        probe_out = work / "memprobe.json"
        if trace:
            env["REMEDIUM_BENCH_MEMPROBE_OUT"] = str(probe_out)
        rb_dir, policy = write_config(work, [waiting_runbook()], allow=[target.url])
        async with Stack(work, runbooks_dir=rb_dir, policy_file=policy, env=env, worker=False) as stack:
            argv = [sys.executable, str(BENCH_DIR / "_memprobe.py")] if trace else None
            worker = stack.spawn("worker", argv) if argv else await stack.start_worker()
            await stack.wait_worker_polling()
            await asyncio.sleep(2)  # let the worker settle after its first polls
            idle_kb = worker.rss_kb()
            fingerprints = [f"{uuid.uuid4().hex[:8]}{i:08x}" for i in range(incidents)]
            gate = asyncio.Semaphore(concurrency)
            samples: list[dict[str, float]] = []
            started = time.perf_counter()
            async with httpx.AsyncClient(base_url=stack.ingress_url, timeout=60) as http:

                async def deliver(i: int) -> None:
                    body = alertmanager_body(fingerprints[i], {"base_url": target.pool_url(f"p{i}")})
                    async with gate:
                        reply = await http.post("/webhooks/alertmanager", content=body, headers=AM_HEADERS)
                    if reply.status_code != 202:
                        raise RuntimeError(f"delivery {i}: {reply.status_code} {reply.text}")

                await deliver(0)  # alone first, so incident 0 really is the oldest
                delivered, waiting, peak_kb, last_sample = 1, 0, idle_kb, 0.0
                while waiting < incidents:
                    worker.check_alive()
                    waiting = await count_waiting(stack)
                    rss = worker.rss_kb()
                    peak_kb = max(peak_kb, rss)
                    now = time.perf_counter() - started
                    if now - last_sample >= 10 or waiting == incidents:
                        samples.append(
                            {"t_s": round(now, 1), "waiting": waiting, "rss_mb": round(rss / 1024, 1)}
                        )
                        last_sample = now
                        print(
                            f"  {now:6.0f} s: {waiting} waiting, {delivered} delivered, RSS {rss // 1024} MB",
                            file=sys.stderr,
                        )
                    if closed := await count_closed(stack):
                        raise RuntimeError(
                            f"{closed} incidents ended instead of awaiting approval: see worker.log"
                        )
                    if now > REACH_DEADLINE_S:
                        raise RuntimeError(
                            f"only {waiting} of {incidents} awaiting approval after {now:.0f} s"
                        )
                    room = min(incidents - delivered, window - (delivered - waiting))
                    if room > 0:
                        await asyncio.gather(*(deliver(i) for i in range(delivered, delivered + room)))
                        delivered += room
                    else:
                        await asyncio.sleep(1)
            reached_s = time.perf_counter() - started
            await asyncio.sleep(3)  # the last workflow tasks complete; the worker goes quiet
            waiting_kb = worker.rss_kb()
            peak_kb = max(peak_kb, waiting_kb)
            memory = await probe_memory(worker, probe_out) if trace else None
            oldest_s = await approve_and_time(stack, target, fingerprints[0], "p0")
            newest_s = await approve_and_time(stack, target, fingerprints[-1], f"p{incidents - 1}")
    per_kb = (waiting_kb - idle_kb) / incidents
    cache_used = cache if cache is not None else Settings().worker_max_cached_workflows
    name = (
        f"idle-{incidents}"
        + (f"-cache{cache}" if cache is not None else "")
        + ("-tracemalloc" if trace else "")
    )
    record: dict[str, Any] = {
        "incidents_waiting": waiting,
        "max_cached_workflows": cache_used,
        "delivery_window": window,
        "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX", "glibc default"),
        "tracemalloc": trace,
        "worker_rss_idle_mb": round(idle_kb / 1024, 1),
        "worker_rss_waiting_mb": round(waiting_kb / 1024, 1),
        "worker_rss_peak_mb": round(peak_kb / 1024, 1),
        "per_incident_kb": round(per_kb, 1),
        "all_awaiting_approval_s": round(reached_s, 1),
        "incidents_per_s_to_awaiting": round(incidents / reached_s, 2),
        "approve_to_action_s": round(oldest_s, 3),
        "oldest_evicted": incidents > cache_used,
        "approve_to_action_newest_s": round(newest_s, 3),
        "rss_by_waiting": samples,
        "targets_at_5000": {"rss_mb": 300, "approve_to_action_s": 1.0},
    }
    if memory is not None:
        record["python_memory_when_waiting"] = memory
    write_result(name, record)
    print(
        f"per incident {per_kb:.1f} KB; peak {peak_kb / 1024:.0f} MB; all waiting after {reached_s:.0f} s; "
        f"newest approve->action {newest_s:.2f} s",
        file=sys.stderr,
    )
    print(
        f"idle: {waiting} waiting, RSS {waiting_kb / 1024:.0f} MB (idle {idle_kb / 1024:.0f} MB), "
        f"approve->action {oldest_s:.2f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--incidents", type=int, default=300)
    parser.add_argument("--cache", type=int, default=None, help="REMEDIUM_WORKER_MAX_CACHED_WORKFLOWS")
    parser.add_argument("--concurrency", type=int, default=16, help="deliveries in flight at once")
    parser.add_argument("--window", type=int, default=200, help="most incidents delivered, not yet waiting")
    parser.add_argument("--trace-memory", action="store_true", help="worker under tracemalloc (slow)")
    args = parser.parse_args()
    asyncio.run(main(args.incidents, args.cache, args.concurrency, args.window, args.trace_memory))

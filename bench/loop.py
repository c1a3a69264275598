"""The full incident loop against a bare workflow doing the same Temporal and HTTP work.

Product: N firing alerts POSTed to the Alertmanager webhook of `remedium ingress`, each
matching an auto-approved one-step http runbook (policy: no approval for `medium`, http.allow
for the loopback target): diagnose GET health, decide, dry-run, POST restart, verify GET
health, report; run by `remedium worker`. Baseline: the same N incidents started directly
with `start_workflow` as `bench/_bare.py`'s workflow (nine activities in sequence, the same
three HTTP calls on the same target), run by its own worker process on its own task queue
with the same data converter and sandbox. Both run in one stack (dev server, target, load
generator), rounds alternating so drift hits both; figure = median incidents/s of each and
the ratio product/baseline (target >= 0.8).

    .venv/bin/python bench/loop.py [--incidents 50] [--rounds 1] [--concurrency 16]

`--py-spy PATH` samples the product worker with py-spy (not a dependency: `pip install
py-spy` anywhere) during the timed product rounds, writes bench/results/loop-worker.folded
(collapsed stacks, for any flamegraph tool) and prints the top costs to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bare import BARE_WORKFLOW, BareInput
from _stack import (
    AM_HEADERS,
    RESULTS,
    IncidentTarget,
    Stack,
    alertmanager_body,
    write_result,
)

from remedium.demo.recording import restart_runbook, write_config
from remedium.models import IncidentResult


def loop_runbook() -> dict[str, Any]:
    """The recording's restart runbook, auto-approved, matching Alertmanager, verifying fast."""
    runbook = restart_runbook(approval_required=False, every="1s", within="1m")
    runbook["match"]["source"] = ["alertmanager"]
    return runbook


async def _gated(n: int, concurrency: int, job: Any) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Any:
        async with gate:
            return await job(i)

    return await asyncio.gather(*(one(i) for i in range(n)))


async def product_round(
    stack: Stack, target: IncidentTarget, n: int, concurrency: int, tag: str
) -> tuple[float, list[str]]:
    """Seconds from the first delivery to the last incident closed, and the outcomes."""
    fingerprints = [f"{uuid.uuid4().hex[:8]}{i:08x}" for i in range(n)]

    async with httpx.AsyncClient(base_url=stack.ingress_url, timeout=60) as http:
        started = time.perf_counter()

        async def deliver(i: int) -> str:
            fp = fingerprints[i]
            body = alertmanager_body(fp, {"base_url": target.pool_url(f"{tag}-{i}")})
            reply = await http.post("/webhooks/alertmanager", content=body, headers=AM_HEADERS)
            assert reply.status_code == 202, reply.text
            return f"incident-alertmanager-{fp}"

        ids = await _gated(n, concurrency, deliver)

    async def outcome(wid: str) -> str:
        result = await stack.client.get_workflow_handle(wid, result_type=IncidentResult).result()
        return f"{result.outcome}" if result.outcome == "resolved" else f"{result.outcome}: {result.reason}"

    outcomes = await asyncio.gather(*(outcome(w) for w in ids))
    last_id[:] = ids[:1]
    return time.perf_counter() - started, list(outcomes)


last_id: list[str] = []


async def activity_names(stack: Stack, workflow_id: str) -> list[str]:
    """The activities one product incident scheduled: the bare workflow must match the count."""
    history = await stack.client.get_workflow_handle(workflow_id).fetch_history()
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]


async def bare_round(
    stack: Stack, target: IncidentTarget, queue: str, n: int, concurrency: int, tag: str
) -> tuple[float, list[str]]:
    started = time.perf_counter()

    async def begin(i: int) -> Any:
        return await stack.client.start_workflow(
            BARE_WORKFLOW,
            BareInput(incident_id=f"bare-{tag}-{i}", base_url=target.pool_url(f"bare-{tag}-{i}")),
            id=f"bare-{tag}-{i}",
            task_queue=queue,
        )

    handles = await _gated(n, concurrency, begin)
    outcomes = await asyncio.gather(*(h.result() for h in handles))
    return time.perf_counter() - started, list(outcomes)


def start_py_spy(py_spy: str | None, stack: Stack, round_no: int) -> subprocess.Popen[bytes] | None:
    if not py_spy:
        return None
    assert stack.worker is not None
    out = RESULTS / f"loop-worker-{round_no}.folded"
    RESULTS.mkdir(exist_ok=True)
    argv = [py_spy, "record", "-p", str(stack.worker.pid), "-r", "200", "-f", "raw", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def stop_py_spy(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        await asyncio.to_thread(spy.wait, 30)


def top_costs(limit: int = 25) -> list[tuple[str, float, float]]:
    """(frame, inclusive %, self %) over every folded file of the last run, busiest first."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for path in RESULTS.glob("loop-worker-*.folded"):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")[1:]  # the first is the process/thread
            n = int(count)
            total += n
            for frame in set(frames):
                inclusive[frame] += n
            if frames:
                own[frames[-1]] += n
    rows = [(f, 100 * c / total, 100 * own[f] / total) for f, c in inclusive.most_common(limit)]
    return rows + [
        (f"SELF {f}", 100 * inclusive[f] / total, 100 * c / total) for f, c in own.most_common(limit)
    ]


async def main(incidents: int, rounds: int, concurrency: int, py_spy: str | None) -> None:
    for old in RESULTS.glob("loop-worker-*.folded"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp, IncidentTarget() as target:
        work = Path(tmp)
        rb_dir, policy = write_config(work, [loop_runbook()], required_for=["high"], allow=[target.url])
        bare_queue = f"bare-{uuid.uuid4().hex[:6]}"
        async with Stack(work, runbooks_dir=rb_dir, policy_file=policy) as stack:
            stack.spawn(
                "bare-worker",
                [sys.executable, str(Path(__file__).with_name("_bare.py"))],
                env={"REMEDIUM_TASK_QUEUE": bare_queue},
            )
            # Warm both paths (imports, sandbox, connections) before anything is timed.
            await product_round(stack, target, 3, concurrency, "warm")
            await bare_round(stack, target, bare_queue, 3, concurrency, "warm")
            product_s: list[float] = []
            bare_s: list[float] = []
            for r in range(rounds):
                seconds, outcomes = await bare_round(
                    stack, target, bare_queue, incidents, concurrency, f"r{r}"
                )
                assert all(o == "resolved" for o in outcomes), outcomes[:3]
                bare_s.append(seconds)
                spy = start_py_spy(py_spy, stack, r)
                seconds, outcomes = await product_round(stack, target, incidents, concurrency, f"r{r}")
                await stop_py_spy(spy)
                bad = [o for o in outcomes if o != "resolved"]
                assert not bad, f"{len(bad)} not resolved, e.g. {bad[0]}"
                product_s.append(seconds)
                print(
                    f"round {r}: product {incidents / seconds:.2f}/s, bare {incidents / bare_s[-1]:.2f}/s",
                    file=sys.stderr,
                )
            activities = await activity_names(stack, last_id[0])
    product_rate = incidents / statistics.median(product_s)
    bare_rate = incidents / statistics.median(bare_s)
    ratio = product_rate / bare_rate
    write_result(
        "loop",
        {
            "incidents": incidents,
            "rounds": rounds,
            "concurrency": concurrency,
            "product_seconds": product_s,
            "bare_seconds": bare_s,
            "product_incidents_per_s": round(product_rate, 3),
            "bare_incidents_per_s": round(bare_rate, 3),
            "ratio": round(ratio, 3),
            "product_activities": activities,
            "target_ratio": 0.8,
        },
    )
    if py_spy:
        for frame, incl, self_pct in top_costs():
            print(f"{incl:5.1f}% incl {self_pct:5.1f}% self  {frame}", file=sys.stderr)
    print(f"product incident activities ({len(activities)}): {', '.join(activities)}", file=sys.stderr)
    print(f"loop: {product_rate:.2f} incidents/s vs bare {bare_rate:.2f}/s = {ratio:.2f}×")  # noqa: RUF001 - the figure as the issue writes it


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--incidents", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--py-spy", metavar="PATH", help="sample the product worker with this py-spy")
    args = parser.parse_args()
    asyncio.run(main(args.incidents, args.rounds, args.concurrency, args.py_spy))

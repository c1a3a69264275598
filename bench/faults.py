"""The fault campaign: incidents must end right however often the worker or the server dies.

A crash must never cost an incident (lost), never run an action twice, and never turn into
a wrong decision (an `escalated` because a diagnostic's attempt died with its worker). This
builds the production shape (`bench/_stack.py`: a dev server with its state in a sqlite
file, so a SIGKILLed server starts again with its workflows; two or more `remedium worker`
processes, each started again after it dies) and a target service with one pool per
incident, whose `/admin/restart` takes 0.5-2 s and applies each Idempotency-Key once.
Incidents are started directly (`start_incident`), a few hundred milliseconds apart.

Kills come at seeded random moments *while an attempt is in flight*: when the target sees
a diagnostic's GET (held 0.2-0.6 s) or a restart's POST, the worker process that owns that
connection (found through /proc) is SIGKILLed a moment later, and now and then the dev
server is SIGKILLed during an action and started again on the same port and file.

`--integrations` is the other campaign: no crashes, the target misbehaves instead — a
restart or a probe answered 500/503, 429 with Retry-After, no answer until the client
times out, and outages where the port refuses connections — and every incident must still
end resolved, each restart applied once. The incidents come from PagerDuty and report to
the Slack, Jira and PagerDuty sandboxes, which misbehave the same way (5xx, 5xx after the
write landed, 429 with Retry-After, held past the client timeout, stopped and started again
on the same port; `bench/_reporting_faults.py`), and `--dead-pagerduty` incidents' PagerDuty
incidents answer 503 for good: per reporter, each incident's outcome must be delivered or
its failure be a `report_failed` audit entry, never silently missing, never posted twice.

At the end: each incident's outcome and reason; the last line is
`faults seed S: R resolved, E escalated (reasons), T acted twice, L lost` (with
`--integrations`, followed by `| slack D delivered/F failed-with-audit/M missing/T twice; jira
...; pagerduty ...`), and the record goes to bench/results/faults-<seed>.json
(faults-integrations-<seed>.json).

    .venv/bin/python bench/faults.py --seed 1 --incidents 50 --worker-kills 20 --server-kills 3
    .venv/bin/python bench/faults.py --seed 1 --incidents 30 --integrations
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _reporting_faults import ReportingSandboxes, reporter_line
from _stack import REMEDIUM, Proc, Stack, write_result
from temporalio.client import WorkflowFailureError

from remedium.demo.recording import TargetService, restart_runbook, write_config
from remedium.incidents import show_incident, start_incident
from remedium.models import Alert, AuditEntry, IncidentResult

INTEGRATION_FAULTS = [
    ("restart", "503"),
    ("restart", "500"),
    ("restart", "429"),
    ("restart", "timeout"),
    ("health", "timeout"),
    ("health", "503"),
    ("health", "429"),
]
CLIENT_TIMEOUT_S = 3.0  # the workers' outbound HTTP timeout in --integrations


@dataclass
class Campaign:
    seed: int
    incidents: int = 50
    worker_kills: int = 20
    server_kills: int = 3
    workers: int = 2
    integrations: bool = False
    outages: int = 3
    sandbox_faults: int = 2  # --integrations: of each kind, per reporting sandbox
    dead_pagerduty: int = 2  # --integrations: incidents whose PagerDuty incident always answers 503
    spread_s: float = 0.4  # between two incident starts
    deadline_s: float = 240.0  # after the last start, for every incident to end
    kill_probability: float | None = None  # per in-flight attempt; None spreads the kills out
    workdir: Path | None = None


@dataclass
class Chaos:
    """What the campaign did, and the moments it did it at."""

    worker_kills: list[dict[str, Any]] = field(default_factory=list)
    server_kills: list[float] = field(default_factory=list)
    worker_restarts: int = 0
    outages: list[float] = field(default_factory=list)
    faults_planned: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Outcome:
    incident: str
    outcome: str
    reason: str
    restarts_applied: int
    restart_requests: int
    faults_hit: list[str] = field(default_factory=list)
    closed_s: float | None = None  # from the campaign's start to the incident's result

    @property
    def acted_twice(self) -> bool:
        return self.restarts_applied > 1


def socket_owner(local_port: int, pids: list[int]) -> int | None:
    """The process (among `pids`) holding the loopback socket bound to `local_port`."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if int(parts[1].rsplit(":", 1)[1], 16) == local_port:
                    inodes.add(parts[9])
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        return pid
    return None


async def _supervise(workers: list[Proc], chaos: Chaos, stop: asyncio.Event) -> None:
    """Start each dead worker again (it exits by itself, too, when the server is down)."""
    while not stop.is_set():
        for proc in workers:
            if not proc.alive:
                proc.start()
                chaos.worker_restarts += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def _start_until_done(stack: Stack, alert: Alert, stop_at: float) -> None:
    """Start the incident, retrying while the server is down (a repeat is fine: False)."""
    while True:
        try:
            await start_incident(stack.client, stack.task_queue, alert)
            return
        except Exception:
            if time.monotonic() > stop_at:
                raise
            await asyncio.sleep(0.3)


async def _result(stack: Stack, workflow_id: str, stop_at: float) -> IncidentResult | str | None:
    """The incident's result; a str when its workflow failed; None when it never ended."""
    handle = stack.client.get_workflow_handle(workflow_id, result_type=IncidentResult)
    while time.monotonic() < stop_at:
        try:
            return await asyncio.wait_for(handle.result(), max(0.1, stop_at - time.monotonic()))
        except WorkflowFailureError as exc:
            return f"workflow failed: {exc.cause or exc}"
        except TimeoutError:
            return None
        except Exception:  # the server is down or restarting: ask again
            await asyncio.sleep(0.5)
    return None


async def _stage(stack: Stack, workflow_id: str) -> str:
    """Where an incident without a result stands: still running (and where), or unreadable."""
    try:
        status = (await show_incident(stack.client, workflow_id)).status
    except Exception as exc:
        return f"status unreadable: {str(exc)[:120]}"
    return f"still running: stage {status.stage}, outcome {status.outcome or 'not yet'}"


async def _audits(stack: Stack, workflow_ids: list[str]) -> dict[str, list[AuditEntry] | None]:
    """Each incident's audit trail (the workers answer the query for closed ones too)."""
    found: dict[str, list[AuditEntry] | None] = {}
    for workflow_id in workflow_ids:
        try:
            found[workflow_id] = (await show_incident(stack.client, workflow_id)).audit
        except Exception:
            found[workflow_id] = None
    return found


async def run(c: Campaign) -> dict[str, Any]:
    rng = random.Random(c.seed)
    # the reporting sandboxes draw from their own stream: the target's plan stays the seed's
    reporting_rng = random.Random(c.seed + 2)
    reporting = (
        ReportingSandboxes(reporting_rng, c.sandbox_faults, c.incidents * c.spread_s + 20.0)
        if c.integrations
        else None
    )
    chaos = Chaos()
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, str, tuple[str, int], float]] = asyncio.Queue()
    target = TargetService(
        per_prefix=True,
        restart_delay_s=(0.5, 2.0),
        health_delay_s=(0.0, 0.0) if c.integrations else (0.2, 0.6),
        fault_hold_s=CLIENT_TIMEOUT_S + 2.0,
        rng=random.Random(c.seed + 1),
    )

    def notify(kind: str, prefix: str, addr: tuple[str, int]) -> None:
        loop.call_soon_threadsafe(events.put_nowait, (kind, prefix, addr, time.monotonic()))

    target.on_request = notify
    target.start()
    names = [f"i{i:03d}" for i in range(c.incidents)]
    if c.integrations:
        for name in names:
            if rng.random() < 0.85:
                for kind, fault in rng.sample(INTEGRATION_FAULTS, rng.choice([1, 2])):
                    target.faults.setdefault(f"{name} {kind}", []).extend([fault] * rng.choice([1, 2]))
        chaos.faults_planned = dict(target.faults)
    with contextlib.ExitStack() as cleanup:
        workdir = c.workdir or Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="faults-")))
        rb = restart_runbook(name="web-restart", approval_required=False, within="90s", every="2s")
        env = {"REMEDIUM_HTTP_TIMEOUT_S": str(CLIENT_TIMEOUT_S)} if c.integrations else {}
        if reporting is not None:
            rb["report"] = {"follow_ups": ["find out why the web pool of {{ alert.title }} stopped"]}
            reporting.start()
            cleanup.callback(reporting.stop)
            env.update(reporting.env())
        rb_dir, policy = write_config(workdir, [rb], required_for=[], allow=[target.url])
        stack = Stack(
            workdir / "stack",
            runbooks_dir=rb_dir,
            policy_file=policy,
            env=env,
            worker=False,
            ingress=False,
            persist=True,  # state in sqlite: the server kills must not lose workflows
        )
        async with stack:
            workers = [stack.spawn(f"worker-{n}", [REMEDIUM, "worker"]) for n in range(c.workers)]
            await stack.wait_worker_polling()
            stop = asyncio.Event()
            tasks = [asyncio.create_task(_supervise(workers, chaos, stop))]
            started = time.monotonic()
            if c.integrations:
                tasks.append(asyncio.create_task(_outages(c, rng, target, chaos, stop)))
            else:
                tasks.append(asyncio.create_task(_crashes(c, rng, stack, workers, events, chaos, stop)))
            if reporting is not None:
                tasks.append(asyncio.create_task(reporting.inject(started, stop)))
            alerts = [
                Alert(
                    source="pagerduty" if reporting else "manual",
                    id=f"F{c.seed}X{os.getpid()}{name.upper()}"
                    if reporting
                    else f"faults-{c.seed}-{name}-{os.getpid()}",
                    title=f"web health check failing ({name})",
                    service="web-frontend",
                    severity="P2",
                    annotations={"base_url": f"{target.url}/{name}"},
                )
                for name in names
            ]
            if reporting is not None:
                dead = set(reporting_rng.sample(range(len(alerts)), min(c.dead_pagerduty, len(alerts))))
                for i, alert in enumerate(alerts):
                    reporting.open_incident(alert.id, alert.title, dead=i in dead)
            for alert in alerts:
                await _start_until_done(stack, alert, time.monotonic() + 60)
                await asyncio.sleep(c.spread_s)
            stop_at = time.monotonic() + c.deadline_s
            closed_at: dict[str, float] = {}

            async def closed(workflow_id: str) -> IncidentResult | str | None:
                result = await _result(stack, workflow_id, stop_at)
                if result is not None:
                    closed_at[workflow_id] = round(time.monotonic() - started, 1)
                return result

            results = await asyncio.gather(*(closed(a.workflow_id) for a in alerts))
            elapsed = time.monotonic() - started
            unfinished = {
                a.workflow_id: await _stage(stack, a.workflow_id)
                for a, r in zip(alerts, results, strict=True)
                if r is None
            }
            stop.set()
            await asyncio.gather(*tasks)  # a server that did not come back fails the bench
            audits = await _audits(stack, [a.workflow_id for a in alerts]) if reporting else {}
    target.stop()
    outcomes = []
    for name, alert, result in zip(names, alerts, results, strict=True):
        restarts = [d for d in target.applied if d.path == f"/{name}/admin/restart"]
        requests = [d for d in target.deliveries if d.path == f"/{name}/admin/restart"]
        outcome: str
        if isinstance(result, IncidentResult):
            outcome, reason = result.outcome, result.reason
        elif result is None:
            where = unfinished.get(alert.workflow_id, "")
            outcome, reason = "lost", f"no result {c.deadline_s:.0f} s after the last start ({where})"
        else:
            outcome, reason = "failed", result
        hit = [f"{kind} {fault}" for prefix, kind, fault in target.injected if prefix == name]
        at = closed_at.get(alert.workflow_id) if result is not None else None
        outcomes.append(Outcome(name, outcome, reason, len(restarts), len(requests), hit, at))
    record = _record(c, chaos, outcomes, elapsed)
    if reporting is not None:
        record["sandbox_faults"] = [
            {"at_s": f.done_at_s, "sandbox": f.sandbox, "kind": f.kind, "detail": f.detail}
            for f in reporting.plan
            if f.done_at_s is not None
        ]
        record["reporters"] = tally = reporting.tally({a.workflow_id: a.id for a in alerts}, audits)
        dead_ids = tally["pagerduty"]["dead_incidents"]
        tally["pagerduty"]["dead_incidents_closed_s"] = {wf: closed_at.get(wf) for wf in dead_ids}
        others = [
            closed_at[a.workflow_id]
            for a in alerts
            if a.workflow_id not in dead_ids and a.workflow_id in closed_at
        ]
        tally["pagerduty"]["other_incidents_closed_by_s"] = max(others, default=None)
    return record


async def _crashes(
    c: Campaign,
    rng: random.Random,
    stack: Stack,
    workers: list[Proc],
    events: asyncio.Queue[tuple[str, str, tuple[str, int], float]],
    chaos: Chaos,
    stop: asyncio.Event,
) -> None:
    """SIGKILL the worker running a diagnostic or an action, and the server during actions."""
    # half the kills during diagnosis, half during actions, spread over the incidents
    budget = {"diagnosis": (c.worker_kills + 1) // 2, "action": c.worker_kills // 2}
    spread = {stage: min(1.0, 2.5 * n / max(1, c.incidents)) for stage, n in budget.items()}
    kill_p = {stage: p if c.kill_probability is None else c.kill_probability for stage, p in spread.items()}
    planned: collections.Counter[str] = collections.Counter()
    server_at = set(rng.sample(range(max(c.incidents, c.server_kills)), c.server_kills))
    restarted: set[str] = set()
    actions = 0
    t0 = time.monotonic()
    pending: set[asyncio.Task[None]] = set()

    async def kill_worker(pid: int, stage: str, prefix: str, delay: float) -> None:
        await asyncio.sleep(delay)
        for proc in workers:
            if proc.alive and proc.pid == pid:
                proc.kill()
                at = round(time.monotonic() - t0, 1)
                chaos.worker_kills.append({"stage": stage, "incident": prefix, "pid": pid, "at_s": at})
                return
        planned[stage] -= 1  # that worker had died already: a later attempt gets this kill

    async def kill_server(delay: float, down_s: float) -> None:
        await asyncio.sleep(delay)
        await stack.kill_server()
        chaos.server_kills.append(round(time.monotonic() - t0, 1))
        await asyncio.sleep(down_s)
        await stack.restart_server()

    while not stop.is_set():
        try:
            kind, prefix, addr, _ = await asyncio.wait_for(events.get(), 0.5)
        except TimeoutError:
            continue
        if kind == "restart":
            stage = "action"
            restarted.add(prefix)
            actions += 1
            if actions - 1 in server_at and len(chaos.server_kills) < c.server_kills:
                task = asyncio.create_task(kill_server(rng.uniform(0.1, 0.4), rng.uniform(0.5, 2.0)))
                pending.add(task)
                task.add_done_callback(pending.discard)
                continue
        elif kind == "health" and prefix not in restarted:
            stage = "diagnosis"
        else:
            continue
        if planned[stage] >= budget[stage] or rng.random() >= kill_p[stage]:
            continue
        pid = socket_owner(addr[1], [p.pid for p in workers if p.alive])
        if pid is None:
            continue
        planned[stage] += 1
        delay = rng.uniform(0.05, 0.15) if stage == "diagnosis" else rng.uniform(0.05, 0.4)
        task = asyncio.create_task(kill_worker(pid, stage, prefix, delay))
        pending.add(task)
        task.add_done_callback(pending.discard)
    for outcome in await asyncio.gather(*pending, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


async def _outages(
    c: Campaign, rng: random.Random, target: TargetService, chaos: Chaos, stop: asyncio.Event
) -> None:
    """Close the target's port for 2-4 s at seeded moments while incidents run.

    One outage per equal slice of the run, never two in one slice: each is a spell a
    diagnostic's or an action's retries are meant to ride out, not one long blackout.
    """
    t0 = time.monotonic()
    slot = max(8.0, (c.incidents * c.spread_s + 10.0) / max(1, c.outages))
    for at in [n * slot + rng.uniform(1.0, slot - 5.0) for n in range(c.outages)]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, at - (time.monotonic() - t0)))
        if stop.is_set():
            return
        target.stop()
        chaos.outages.append(round(time.monotonic() - t0, 1))
        await asyncio.sleep(rng.uniform(2.0, 4.0))
        target.start()


def _record(c: Campaign, chaos: Chaos, outcomes: list[Outcome], elapsed: float) -> dict[str, Any]:
    counts = collections.Counter(o.outcome for o in outcomes)
    reasons = collections.Counter(o.reason[:300] for o in outcomes if o.outcome != "resolved")
    kill_stages = collections.Counter(k["stage"] for k in chaos.worker_kills)
    return {
        "seed": c.seed,
        "mode": "integrations" if c.integrations else "crashes",
        "incidents": c.incidents,
        "workers": c.workers,
        "elapsed_s": round(elapsed, 1),
        "worker_kills": len(chaos.worker_kills),
        "worker_kills_by_stage": dict(kill_stages),
        "server_kills": len(chaos.server_kills),
        "worker_restarts": chaos.worker_restarts,
        "kills": chaos.worker_kills,
        "server_kills_at_s": chaos.server_kills,
        "outages": len(chaos.outages),
        "faults_planned": chaos.faults_planned,
        "resolved": counts.get("resolved", 0),
        "escalated": counts.get("escalated", 0),
        "other": {k: v for k, v in counts.items() if k not in ("resolved", "escalated", "lost")},
        "acted_twice": sum(o.acted_twice for o in outcomes),
        "lost": counts.get("lost", 0),
        "reasons": dict(reasons),
        "per_incident": [
            {
                "incident": o.incident,
                "outcome": o.outcome,
                "reason": o.reason,
                "restarts_applied": o.restarts_applied,
                "restart_requests": o.restart_requests,
                "faults_hit": o.faults_hit,
                "closed_s": o.closed_s,
            }
            for o in outcomes
        ],
    }


def summary_line(record: dict[str, Any]) -> str:
    reasons = "; ".join(f"{n}x {r}" for r, n in record["reasons"].items())
    other = "".join(f", {n} {k}" for k, n in record["other"].items())
    label = "faults integrations" if record["mode"] == "integrations" else "faults"
    reporters = f" | {reporter_line(record['reporters'])}" if "reporters" in record else ""
    return (
        f"{label} seed {record['seed']}: {record['resolved']} resolved, {record['escalated']} escalated"
        f" ({reasons or 'none'}){other}, {record['acted_twice']} acted twice, {record['lost']} lost"
        + reporters
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--incidents", type=int, default=50)
    parser.add_argument("--worker-kills", type=int, default=20)
    parser.add_argument("--server-kills", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--integrations", action="store_true", help="misbehaving target, no crashes")
    parser.add_argument("--outages", type=int, default=3, help="--integrations: refusing spells")
    parser.add_argument(
        "--sandbox-faults",
        type=int,
        default=2,
        help="--integrations: faults of each kind per reporting sandbox",
    )
    parser.add_argument(
        "--dead-pagerduty",
        type=int,
        default=2,
        help="--integrations: incidents whose PagerDuty answers 503 for good",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="seconds after the last start for every incident to end (240; 600 with --integrations,"
        " where a dead reporter holds its incident open while each queued report uses its retries)",
    )
    parser.add_argument("--workdir", type=Path, help="keep the stack's files and logs here")
    args = parser.parse_args()
    c = Campaign(
        seed=args.seed,
        incidents=args.incidents,
        worker_kills=0 if args.integrations else args.worker_kills,
        server_kills=0 if args.integrations else args.server_kills,
        workers=args.workers,
        integrations=args.integrations,
        outages=args.outages,
        sandbox_faults=args.sandbox_faults,
        dead_pagerduty=args.dead_pagerduty,
        deadline_s=args.deadline if args.deadline is not None else (600.0 if args.integrations else 240.0),
        workdir=args.workdir,
    )
    record = asyncio.run(run(c))
    for o in record["per_incident"]:
        hit = f" faults {', '.join(o['faults_hit'])}" if o["faults_hit"] else ""
        print(
            f"{o['incident']}: {o['outcome']:<9} restarts applied {o['restarts_applied']}"
            f" (requests {o['restart_requests']}){hit}"
            f" — {o['reason'][:200]}"
        )
    print(
        f"{record['worker_kills']} worker kills {record['worker_kills_by_stage']}, "
        f"{record['server_kills']} server kills, {record['worker_restarts']} worker starts, "
        f"{record['outages']} outages, {record['elapsed_s']} s"
    )
    name = f"faults-integrations-{c.seed}" if c.integrations else f"faults-{c.seed}"
    write_result(name, record)
    print(summary_line(record))


if __name__ == "__main__":
    main()

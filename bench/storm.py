"""A PagerDuty storm: dedupe under load against a bare `start_workflow` loop, Slack acks, a P1 behind it.

Builds its own production-shaped stack (dev server, `remedium worker`, `remedium ingress`, each
its own process; bench/_stack.py), with an auto-approved restart runbook whose diagnostic and
action reach a loopback target (one pool per incident), so every incident does real work.
Every load generator is a child process of its own (this script with `--child start|post`):
the bench process also serves the loopback target's threads, whose GIL would otherwise be
measured as ack latency. The deliverers use a minimal keep-alive HTTP/1.1 client (httpx costs
more CPU per request than the ingress does).

0. P1 baseline: one signed P1 delivery with nothing queued; its latency is the seconds from
   sending it to the server time of its first completed `diagnose.*` activity (read from the
   workflow history, which needs no worker to answer). `--approvals` incidents of a second
   service whose step needs approval are then started and left waiting for a Slack click.
1. Phase A, per round (`--rounds`), bare first, each part starting once no earlier phase A
   incident is running (so both meet the same worker state; the wait is recorded):
   - bare: a child process makes the same `--dedupe-deliveries` starts for `--dedupe-incidents`
     incidents (same shuffled duplicate mix) from `--clients` concurrent tasks with its own
     Temporal client, straight against the same dev server, the same worker running:
     `remedium.incidents.start_incident`, the one `start_workflow` call the ingress makes, a
     duplicate being `WorkflowAlreadyStartedError` (a no-op);
   - product: the same mix as signed deliveries to the ingress from `--clients` concurrent
     connections in a child process, plus 5 % forged (wrong, garbled or missing signature: 401)
     and 2 % malformed (signed, but not JSON, no incident id, or an invalid one: 400), shuffled
     in. Checked: every good delivery 202, exactly `--dedupe-incidents` answered `started: true`,
     exactly that many workflows with the round's id prefix in visibility (`WorkflowId
     STARTS_WITH`: the forged and malformed ones carry fresh ids under the same prefix, so one
     started by mistake would count), rejected = bad ones sent.
   Figure: ack p99 of good deliveries against the bare start p99 (pooled over rounds).
2. Phase B: `--incidents` distinct signed P3 deliveries from `--clients` connections while a
   Slack client posts a signed block_actions approve click every `--slack-every` s (cycling
   over the waiting incidents: the first click of each approves it, later ones are refused by
   the workflow; the answers land on a loopback response_url); then at once a P1 behind it all.

`--rank-none` writes a policy that ranks nothing urgent, so the P1 queues on the normal task
queue like every other incident: the behaviour before the reserved urgent queue. `--py-spy
PATH` samples the ingress during the timed deliveries (py-spy is not a dependency) and prints
its top costs; `--logs DIR` keeps the children's logs.

    .venv/bin/python bench/storm.py [--incidents 2000] [--dedupe-incidents 200]
        [--dedupe-deliveries 2000] [--clients 32] [--rounds 3] [--rank-none] [--py-spy PATH]

Last line: `storm: A ... ; B ... ; slack max S s; p1 behind N: P s`; the record goes to
bench/results/storm.json (storm-rank-none.json with --rank-none). Exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import yaml
from slack_sdk.signature import SignatureVerifier
from temporalio.api.enums.v1 import EventType

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import PD_SECRET, RESULTS, SLACK_SECRET, IncidentTarget, Stack, write_result

from remedium.ingress.pagerduty import parse_event, sign
from remedium.names import incident_workflow_id
from remedium.slack_interaction import APPROVE_ACTION

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
VECTOR = VECTORS / "pagerduty_webhook_incident_triggered.json"
SLACK_VECTOR = VECTORS / "slack_block_actions_signed.json"
SERVICE = "API Service"  # the vector's service; the storm runbook matches it
APPROVAL_SERVICE = "Approval Service"  # the approval runbook's service: its step waits for a click
FORGED_SHARE, MALFORMED_SHARE = 0.05, 0.02


def runbook(target: IncidentTarget, name: str, service: str, risk: str) -> dict[str, Any]:
    """Diagnose the incident's own pool, restart it (`risk` decides the approval), verify it."""
    pool = f"{target.url}/p/{{{{ alert.id }}}}"
    return {
        "apiVersion": "remedium/v1",
        "kind": "Runbook",
        "metadata": {"name": name},
        "match": {"source": ["pagerduty"], "service": [service]},
        "diagnose": [{"id": "health", "kind": "http", "with": {"url": f"{pool}/health"}, "timeout": "30s"}],
        "decide": {"when": ["facts.health.ok and facts.health.value.status >= 500"]},
        "plan": [
            {
                "id": "restart",
                "action": "http.request",
                "risk": risk,
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
    (rb_dir / "storm.yaml").write_text(
        yaml.safe_dump(runbook(target, "storm-restart", SERVICE, "low"), sort_keys=False)
    )
    (rb_dir / "approve.yaml").write_text(
        yaml.safe_dump(runbook(target, "storm-approve", APPROVAL_SERVICE, "medium"), sort_keys=False)
    )
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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(latencies: list[float]) -> dict[str, Any]:
    if not latencies:
        return {"n": 0}
    return {
        "n": len(latencies),
        "p50_s": round(statistics.median(latencies), 3),
        "p99_s": round(percentile(latencies, 0.99), 3),
        "max_s": round(max(latencies), 3),
    }


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process used so far (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_py_spy(py_spy: str | None, pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """Sample a process into bench/results/storm-<name>.folded (py-spy is not a dependency)."""
    if not py_spy:
        return None
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"storm-{name}.folded"
    argv = [py_spy, "record", "--nonblocking", "-p", str(pid), "-r", "100", "-f", "raw", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def stop_py_spy(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        await asyncio.to_thread(spy.wait, 30)


IDLE_FRAMES = ("select (selectors.py", "_worker (concurrent/futures/thread.py", "wait (threading.py")


def top_costs(limit: int = 25) -> list[str]:
    """Busy samples of the storm-*.folded files: inclusive and self %, busiest first."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for path in RESULTS.glob("storm-*.folded"):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")[1:]  # the first is the process/thread
            if not frames or any(idle in frames[-1] for idle in IDLE_FRAMES):
                continue
            n = int(count)
            total += n
            for frame in set(frames):
                inclusive[frame] += n
            own[frames[-1]] += n
    rows = [f"{100 * c / total:5.1f}% incl  {f}" for f, c in inclusive.most_common(limit)]
    return rows + [f"{100 * c / total:5.1f}% self  {f}" for f, c in own.most_common(limit)]


class Deliveries:
    """Signed `incident.triggered` bodies from the captured vector, one incident id each."""

    def __init__(self) -> None:
        vector = json.loads(VECTOR.read_text())
        self.template = json.loads(vector["raw_body"])
        self.headers = {k: v for k, v in vector["http"]["headers"].items() if k != "X-PagerDuty-Signature"}

    def body(self, incident_id: str, priority: str, service: str = SERVICE) -> bytes:
        body = copy.deepcopy(self.template)
        body["event"]["id"] = str(uuid.uuid4())
        body["event"]["data"]["id"] = incident_id
        body["event"]["data"]["priority"]["summary"] = priority
        body["event"]["data"]["service"]["summary"] = service
        return json.dumps(body).encode()

    def signed(self, body: bytes, secret: str = PD_SECRET) -> dict[str, str]:
        return {**self.headers, "X-PagerDuty-Signature": sign(body, secret.encode())}

    async def send(self, http: httpx.AsyncClient, body: bytes) -> float:
        """POST one good delivery that must start its incident; the seconds to its 202."""
        started = time.perf_counter()
        reply = await http.post("/webhooks/pagerduty", content=body, headers=self.signed(body))
        elapsed = time.perf_counter() - started
        assert reply.status_code == 202 and reply.json()["started"], reply.text
        return elapsed


class LeanHTTP:
    """One keep-alive HTTP/1.1 connection and nothing else, so the load generator's own cost stays small.

    httpx spends ≈ 4 ms of CPU per request here, more than the ingress itself: on 2 shared cores
    that would be measured as ack latency. Each delivering client owns one of these.
    """

    def __init__(self, base_url: str) -> None:
        host, _, port = base_url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            await self.close()
            raise ConnectionError("the ingress closed the connection")
        status = int(status_line.split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        reply = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, reply

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
            self.writer = None


@dataclass
class Delivery:
    kind: str  # "good", "forged", "malformed"
    body: bytes
    headers: dict[str, str]
    expect: int
    status: int = 0
    started: bool | None = None
    latency: float = 0.0


def dedupe_incident_ids(prefix: str, incidents: int, deliveries: int, rng: random.Random) -> list[str]:
    """`deliveries` incident ids over `incidents` incidents (each at least once), shuffled."""
    ids = [f"{prefix}I{i:05d}" for i in range(incidents)]
    mix = ids + [ids[i % incidents] for i in range(max(0, deliveries - incidents))]
    rng.shuffle(mix)
    return mix


def dedupe_mix(
    deliveries: Deliveries, prefix: str, incidents: int, count: int, rng: random.Random
) -> list[Delivery]:
    """The good deliveries plus 5 % forged and 2 % malformed ones (fresh ids, same prefix), shuffled."""
    mix = [
        Delivery("good", body, deliveries.signed(body), 202)
        for body in (deliveries.body(i, "P3") for i in dedupe_incident_ids(prefix, incidents, count, rng))
    ]
    for j in range(round(count * FORGED_SHARE)):
        body = deliveries.body(f"{prefix}F{j:05d}", "P3")
        style = j % 4
        if style < 2:  # signed with the wrong secret
            headers = deliveries.signed(body, "not-the-secret")
        elif style == 2:  # garbled signature
            headers = {**deliveries.headers, "X-PagerDuty-Signature": "v1=" + "0" * 64}
        else:  # no signature at all
            headers = dict(deliveries.headers)
        mix.append(Delivery("forged", body, headers, 401))
    for j in range(round(count * MALFORMED_SHARE)):
        style = j % 4
        if style == 0:
            body = b'{"event": {"id": "x", "event_type": "incident.triggered", "data": '  # cut short
        elif style == 1:
            document = json.loads(deliveries.body(f"{prefix}M{j:05d}", "P3"))
            del document["event"]["data"]["id"]
            body = json.dumps(document).encode()
        elif style == 2:
            body = deliveries.body(f"{prefix}M{j:05d}/../x", "P3")  # not an incident id
        else:
            body = json.dumps({"event": [f"{prefix}M{j:05d}"]}).encode()
        mix.append(Delivery("malformed", body, deliveries.signed(body), 400))
    rng.shuffle(mix)
    return mix


async def post_all(
    base_url: str, bodies: list[bytes], headers: list[dict[str, str]], clients: int
) -> list[Any]:
    """Deliver every body from `clients` concurrent clients, one connection each: [status, s, started]."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(len(bodies)):
        queue.put_nowait(n)
    results: list[Any] = [None] * len(bodies)

    async def client() -> None:
        http = LeanHTTP(base_url)
        try:
            while not queue.empty():
                n = queue.get_nowait()
                started = time.perf_counter()
                try:
                    status, reply = await http.post("/webhooks/pagerduty", bodies[n], headers[n])
                except (OSError, ValueError, asyncio.IncompleteReadError):
                    status, reply = -1, b""
                    await http.close()
                latency = time.perf_counter() - started
                begun = bool(json.loads(reply).get("started")) if status == 202 else None
                results[n] = [status, latency, begun]
        finally:
            await http.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return results


async def post_child(spec: dict[str, Any]) -> dict[str, Any]:
    """`--child post`: the delivering clients, in their own process as PagerDuty's senders are.

    Not in the bench process: that one also serves the loopback target's threads (the worker's
    HTTP calls), whose GIL would be measured as ack latency; the bare loop has its own process too.
    """
    bodies = [item["body"].encode("latin-1") for item in spec["items"]]
    headers = [item["headers"] for item in spec["items"]]
    began, cpu = time.perf_counter(), time.process_time()
    results = await post_all(spec["base_url"], bodies, headers, int(spec["clients"]))
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    return {"seconds": round(elapsed, 2), "cpu_s": round(cpu, 2), "results": results}


async def run_child(
    stack: Stack, workdir: Path, name: str, mode: str, spec: dict[str, Any]
) -> dict[str, Any]:
    """Run this script as `--child MODE` in its own process (env of the stack); its JSON answer."""
    spec_path, out = workdir / f"{name}.json", workdir / f"{name}.out.json"
    spec_path.write_text(json.dumps(spec))
    proc = stack.spawn(name, [sys.executable, __file__, "--child", mode, str(spec_path), str(out)])
    deadline = time.monotonic() + 900
    while True:  # a child process: polled, nothing to await on
        if not proc.alive or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    if not out.exists():
        tail = proc.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the {mode} child wrote nothing: {tail}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


async def deliver_all(
    stack: Stack, workdir: Path, name: str, items: list[Delivery], clients: int, py_spy: str | None
) -> dict[str, Any]:
    """Deliver the items from a child process; fills in each item's status, latency and started."""
    assert stack.ingress is not None
    spec = {
        "base_url": stack.ingress_url,
        "clients": clients,
        "items": [{"body": i.body.decode("latin-1"), "headers": i.headers} for i in items],
    }
    spy = start_py_spy(py_spy, stack.ingress.pid, f"ingress-{name}")
    ingress_cpu = cpu_s(stack.ingress.pid)
    result = await run_child(stack, workdir, name, "post", spec)
    ingress_cpu = cpu_s(stack.ingress.pid) - ingress_cpu
    await stop_py_spy(spy)
    for item, (status, latency, started) in zip(items, result.pop("results"), strict=True):
        item.status, item.latency, item.started = status, latency, started
    return {
        "seconds": result["seconds"],
        "deliveries_per_s": round(len(items) / result["seconds"], 1),
        "ingress_cpu_s": round(ingress_cpu, 2),
        "ingress_cpu_ms_per_delivery": round(1000 * ingress_cpu / len(items), 2),
        "client_cpu_ms_per_delivery": round(1000 * result["cpu_s"] / len(items), 2),
    }


async def drain(stack: Stack, prefixes: list[str], wait_s: float = 300.0) -> float:
    """Until no incident under these prefixes runs, so each timed round starts from the same state."""
    began = time.monotonic()
    for prefix in prefixes:
        query = (
            f'ExecutionStatus = "Running" AND '
            f'WorkflowId STARTS_WITH "{incident_workflow_id("pagerduty", prefix)}"'
        )
        while True:
            if (await stack.client.count_workflows(query)).count == 0:
                break
            if time.monotonic() - began > wait_s:
                raise RuntimeError(f"incidents {prefix}* still running after {wait_s:.0f} s")
            await asyncio.sleep(1.0)
    return round(time.monotonic() - began, 1)


async def count_prefix(stack: Stack, prefix: str, expected: int, wait_s: float = 60.0) -> int:
    """Workflows whose id starts with the prefix, once visibility has them all (or the deadline passed)."""
    query = f'WorkflowId STARTS_WITH "{incident_workflow_id("pagerduty", prefix)}"'
    deadline = time.monotonic() + wait_s
    count = 0
    while time.monotonic() < deadline:
        count = (await stack.client.count_workflows(query)).count
        if count >= expected:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(2.0)  # one more look: a late extra start would show now
    return (await stack.client.count_workflows(query)).count


async def product_round(
    stack: Stack, workdir: Path, deliveries: Deliveries, prefix: str, args: argparse.Namespace
) -> dict[str, Any]:
    rng = random.Random(f"{args.seed}-{prefix}")
    items = dedupe_mix(deliveries, prefix, args.dedupe_incidents, args.dedupe_deliveries, rng)
    timing = await deliver_all(stack, workdir, f"product-{prefix}", items, args.clients, args.py_spy)
    by_kind = {kind: [i for i in items if i.kind == kind] for kind in ("good", "forged", "malformed")}
    good, bad = by_kind["good"], by_kind["forged"] + by_kind["malformed"]
    started = sum(1 for i in good if i.started)
    workflows = await count_prefix(stack, prefix, args.dedupe_incidents)
    return {
        "prefix": prefix,
        "deliveries": len(items),
        "good": len(good),
        "forged": len(by_kind["forged"]),
        "malformed": len(by_kind["malformed"]),
        **timing,
        "good_not_202": sum(1 for i in good if i.status != 202),
        "good_not_202_statuses": sorted({i.status for i in good if i.status != 202}),
        "answered_started_true": started,
        "answered_started_false": sum(1 for i in good if i.started is False),
        "workflows_in_visibility": workflows,
        "rejected": sum(1 for i in bad if i.status == i.expect),
        "bad_sent": len(bad),
        "bad_wrong_status": sorted({i.status for i in bad if i.status != i.expect}),
        "ack": summary([i.latency for i in items]),
        "ack_good": summary([i.latency for i in good]),
        "ack_good_new": summary([i.latency for i in good if i.started]),
        "ack_good_duplicate": summary([i.latency for i in good if i.started is False]),
        "ack_forged": summary([i.latency for i in by_kind["forged"]]),
        "ack_malformed": summary([i.latency for i in by_kind["malformed"]]),
        "_latencies_good": [i.latency for i in good],
    }


async def bare_round(stack: Stack, workdir: Path, prefix: str, args: argparse.Namespace) -> dict[str, Any]:
    """The same start mix from a separate process, straight to the dev server."""
    rng = random.Random(f"{args.seed}-{prefix}")
    ids = dedupe_incident_ids(prefix, args.dedupe_incidents, args.dedupe_deliveries, rng)
    spec = {"incident_ids": ids, "clients": args.clients}
    result = await run_child(stack, workdir, f"bare-{prefix}", "start", spec)
    latencies = result.pop("latencies")
    workflows = await count_prefix(stack, prefix, args.dedupe_incidents)
    return {
        "prefix": prefix,
        **result,
        "starts_per_s": round(result["starts"] / result["seconds"], 1),
        "cpu_ms_per_start": round(1000 * result["cpu_s"] / result["starts"], 2),
        "workflows_in_visibility": workflows,
        "ack": summary(latencies),
        "_latencies": latencies,
    }


async def bare_child(spec: dict[str, Any]) -> dict[str, Any]:
    """`--child start`: the bare start loop, in its own process like the ingress is."""
    from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

    from remedium.connection import connect
    from remedium.incidents import load_priority, start_incident
    from remedium.settings import Settings

    settings = Settings()
    priority = load_priority(settings.policy_file)
    deliveries = Deliveries()
    alerts = []
    for incident_id in spec["incident_ids"]:  # the ingress's own parser: the same input as a delivery
        alert = parse_event(deliveries.body(incident_id, "P3")).alert
        assert alert is not None
        alerts.append(alert)
    client = await connect(settings)
    await client.workflow_service.get_system_info(GetSystemInfoRequest())  # warm, as the ingress is
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for alert in alerts:
        queue.put_nowait(alert)
    latencies: list[float] = []
    outcomes = {"started": 0, "duplicate": 0, "error": 0}

    async def worker() -> None:
        while not queue.empty():
            alert = queue.get_nowait()
            began = time.perf_counter()
            try:
                started = await start_incident(client, settings.task_queue, alert, priority)
            except Exception:
                outcomes["error"] += 1
            else:
                outcomes["started" if started else "duplicate"] += 1
            latencies.append(time.perf_counter() - began)

    began, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(int(spec["clients"]))))
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    return {
        "starts": len(alerts),
        "seconds": round(elapsed, 2),
        "cpu_s": round(cpu, 2),
        **outcomes,
        "latencies": latencies,
    }


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


@contextmanager
def response_sink() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Stands in for Slack's response_url: records what the ingress answers each click with."""
    received: list[dict[str, Any]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            reply = json.loads(self.rfile.read(length) or b"{}")
            with lock:
                received.append({"path": self.path, **reply})
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}/actions", received
    finally:
        server.shutdown()
        server.server_close()


class SlackClicker:
    """Approve clicks the way Slack delivers them: a signed `payload=` form, one every `every` s."""

    def __init__(self, workflow_ids: list[str], response_url: str, every: float) -> None:
        self.workflow_ids, self.response_url, self.every = workflow_ids, response_url, every
        self.signer = SignatureVerifier(SLACK_SECRET)
        self.template = json.loads(SLACK_VECTOR.read_text())["payload"]
        self.acks: list[float] = []
        self.not_200: list[int] = []

    def click(self, n: int) -> tuple[bytes, dict[str, str]]:
        payload = copy.deepcopy(self.template)
        payload["user"].update(id="UBENCHONCALL", username="bench-oncall", name="bench-oncall")
        workflow_id = self.workflow_ids[n % len(self.workflow_ids)]
        payload["response_url"] = f"{self.response_url}/{n}"
        payload["actions"] = [
            {
                "type": "button",
                "action_id": APPROVE_ACTION,
                "block_id": "remedium_approval",
                "text": {"type": "plain_text", "text": "Approve", "emoji": True},
                "value": json.dumps({"workflow_id": workflow_id, "step": "restart"}),
                "style": "primary",
                "action_ts": f"{time.time():.6f}",
            }
        ]
        body = ("payload=" + quote(json.dumps(payload, separators=(",", ":")), safe="")).encode()
        timestamp = str(int(time.time()))
        signature = self.signer.generate_signature(timestamp=timestamp, body=body)
        assert signature is not None
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": signature,
        }
        return body, headers

    async def run(self, base_url: str, stop: asyncio.Event) -> None:
        http = LeanHTTP(base_url)
        n = 0
        try:
            while not stop.is_set():
                body, headers = self.click(n)
                began = time.perf_counter()
                try:
                    status, _ = await http.post("/webhooks/slack/interactions", body, headers)
                except (OSError, ValueError, asyncio.IncompleteReadError):
                    status = -1
                    await http.close()
                self.acks.append(time.perf_counter() - began)
                if status != 200:
                    self.not_200.append(status)
                n += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.every)
        finally:
            await http.close()


async def start_approvals(
    stack: Stack, http: httpx.AsyncClient, deliveries: Deliveries, prefix: str, count: int
) -> list[str]:
    """`count` incidents waiting for approval of their restart step (before any storm)."""
    ids = [f"{prefix}W{i:03d}" for i in range(count)]
    for incident_id in ids:
        await deliveries.send(http, deliveries.body(incident_id, "P3", APPROVAL_SERVICE))
    query = (
        'IncidentStage = "awaiting_approval" AND '
        f'WorkflowId STARTS_WITH "{incident_workflow_id("pagerduty", prefix)}"'
    )
    deadline = time.monotonic() + 120
    while (await stack.client.count_workflows(query)).count < count:
        if time.monotonic() > deadline:
            stages = []
            for incident_id in ids:
                handle = stack.client.get_workflow_handle(incident_workflow_id("pagerduty", incident_id))
                described = await handle.describe()
                stages.append(f"{incident_id}: {described.search_attributes.get('IncidentStage')}")
            raise RuntimeError(f"approval incidents not all awaiting approval after 120 s: {stages}")
        await asyncio.sleep(0.5)
    return [incident_workflow_id("pagerduty", i) for i in ids]


async def storm(
    stack: Stack, workdir: Path, deliveries: Deliveries, prefix: str, args: argparse.Namespace
) -> dict[str, Any]:
    items = [
        Delivery("good", body, deliveries.signed(body), 202)
        for body in (deliveries.body(f"{prefix}S{i:05d}", "P3") for i in range(args.incidents))
    ]
    timing = await deliver_all(stack, workdir, f"storm-{prefix}", items, args.clients, args.py_spy)
    acks = [i.latency for i in items]
    return {
        "deliveries": len(items),
        **timing,
        "not_202": sum(1 for i in items if i.status != 202),
        "not_202_statuses": sorted({i.status for i in items if i.status != 202}),
        "not_started": sum(1 for i in items if not i.started),
        "ack_p50_s": round(statistics.median(acks), 3),
        "ack_p99_s": round(percentile(acks, 0.99), 3),
        "ack_max_s": round(max(acks), 3),
    }


def copy_logs(workdir: Path, to: Path) -> None:
    to.mkdir(parents=True, exist_ok=True)
    for log in workdir.glob("*.log"):
        shutil.copy(log, to / log.name)


def fmt(value: float | None, timeout: float) -> str:
    return f"{value:.2f}" if value is not None else f"> {timeout:.0f} (not reached)"


async def main(args: argparse.Namespace) -> int:
    run = uuid.uuid4().hex[:6].upper()
    if args.py_spy:
        for old in RESULTS.glob("storm-*.folded"):  # top_costs reads this run's samples only
            old.unlink()
    loads: dict[str, list[float]] = {"start": load_avg()}
    with (
        tempfile.TemporaryDirectory(prefix="storm-") as tmp,
        IncidentTarget() as target,
        response_sink() as (response_url, replies),
    ):
        workdir = Path(tmp)
        rb_dir, policy = write_config(workdir, target, args.rank_none)
        async with Stack(workdir, runbooks_dir=rb_dir, policy_file=policy) as stack:
            async with httpx.AsyncClient(base_url=stack.ingress_url, timeout=60) as http:  # the single sends
                deliveries = Deliveries()
                warm = await p1_latency(stack, http, deliveries, 60)  # first incident pays start-up costs
                baseline = await p1_latency(stack, http, deliveries, 60)
                waiting = await start_approvals(stack, http, deliveries, f"W{run}", args.approvals)
                rounds = []
                previous: list[str] = []
                for r in range(args.rounds):  # each timed part starts with no phase A incident running
                    drained = await drain(stack, previous)
                    loads[f"round{r}_bare"] = load_avg()
                    bare = await bare_round(stack, workdir, f"B{run}R{r}", args)
                    bare["drained_before_s"] = drained
                    drained = await drain(stack, [f"B{run}R{r}"])
                    loads[f"round{r}_product"] = load_avg()
                    product = await product_round(stack, workdir, deliveries, f"A{run}R{r}", args)
                    product["drained_before_s"] = drained
                    rounds.append({"bare": bare, "product": product})
                    previous = [f"A{run}R{r}"]
                phase_b_drained = await drain(stack, previous)
                loads["phase_b"] = load_avg()
                clicker = SlackClicker(waiting, response_url, args.slack_every)
                stop = asyncio.Event()
                clicking = asyncio.create_task(clicker.run(stack.ingress_url, stop))
                load = await storm(stack, workdir, deliveries, f"S{run}", args)
                load["drained_before_s"] = phase_b_drained
                stop.set()
                await clicking
                behind = await p1_latency(stack, http, deliveries, args.p1_timeout)
                loads["end"] = load_avg()
                running = await stack.client.count_workflows(
                    'WorkflowType = "IncidentWorkflow" AND ExecutionStatus = "Running"'
                )
                deadline = time.monotonic() + 30  # the clicks' answers, for the record
                while True:  # filled by the sink's threads
                    if len(replies) >= len(clicker.acks) or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.5)
        if args.logs:  # the children's logs, before the workdir goes
            await asyncio.to_thread(copy_logs, workdir, Path(args.logs))
    bare_all = [x for r in rounds for x in r["bare"].pop("_latencies")]
    good_all = [x for r in rounds for x in r["product"].pop("_latencies_good")]
    bare_p99, good_p99 = percentile(bare_all, 0.99), percentile(good_all, 0.99)
    per_round = [r["product"]["ack_good"]["p99_s"] / r["bare"]["ack"]["p99_s"] for r in rounds]
    a_rate = sum(r["product"]["deliveries"] for r in rounds) / sum(r["product"]["seconds"] for r in rounds)
    bare_rate = sum(r["bare"]["starts"] for r in rounds) / sum(r["bare"]["seconds"] for r in rounds)
    approved = [r for r in replies if str(r.get("text", "")).startswith("Approved")]
    # A click's response_url ends in its number n; it clicked waiting[n % len(waiting)].
    approved_incidents = {int(r["path"].rsplit("/", 1)[1]) % len(waiting) for r in approved}
    slack = {
        "clicks": len(clicker.acks),
        "every_s": args.slack_every,
        "not_200": clicker.not_200,
        "ack": summary(clicker.acks),
        "waiting_incidents": len(waiting),
        "replies": len(replies),
        "approved_replies": len(approved),
        "incidents_approved": len(approved_incidents),
        "refused_replies": sum(1 for r in replies if str(r.get("text", "")).startswith("Not applied")),
        "no_answer_replies": sum(1 for r in replies if str(r.get("text", "")).startswith("No answer")),
        "reply_texts": Counter(
            re.sub(r"incident-pagerduty-\w+", "<incident>", str(r.get("text", ""))) for r in replies
        ).most_common(5),
    }
    products = [r["product"] for r in rounds]
    pd_max = max([p["ack"]["max_s"] for p in products] + [load["ack_max_s"]])
    checks = {
        "every_good_delivery_202": all(p["good_not_202"] == 0 for p in products) and load["not_202"] == 0,
        "exactly_n_workflows_phase_a": all(
            p["workflows_in_visibility"] == args.dedupe_incidents
            and p["answered_started_true"] == args.dedupe_incidents
            for p in products
        ),
        "rejected_equals_bad": all(p["rejected"] == p["bad_sent"] for p in products),
        "bare_exactly_n_started": all(
            r["bare"]["started"] == args.dedupe_incidents and r["bare"]["error"] == 0 for r in rounds
        ),
        "slack_every_click_200": not clicker.not_200,
    }
    ratio = good_p99 / bare_p99 if bare_p99 > 0 else float("inf")
    targets = {
        "ack_p99_le_1_5x_bare": ratio <= 1.5,
        "pagerduty_ack_lt_5s": pd_max < 5.0,
        "slack_ack_lt_3s": bool(clicker.acks) and max(clicker.acks) < 3.0,
        "p1_behind_storm_lt_5s": behind is not None and behind < 5.0,
    }
    record = {
        "mode": "rank-none (before: P1 on the normal queue)" if args.rank_none else "urgent queue",
        "load_average_1_5_15": loads,
        "clients": args.clients,
        "phase_a": {
            "incidents": args.dedupe_incidents,
            "good_deliveries": args.dedupe_deliveries,
            "rounds": rounds,
            "bare_is": "separate process, remedium.incidents.start_incident (one start_workflow) "
            "with its own client, same dev server, same worker running",
            "ack_good_p99_s": round(good_p99, 3),
            "bare_start_p99_s": round(bare_p99, 3),
            "deliveries_per_s": round(a_rate, 1),
            "bare_starts_per_s": round(bare_rate, 1),
            "p99_ratio": round(ratio, 2),
            "p99_ratio_per_round": [round(x, 2) for x in per_round],
        },
        "phase_b": load,
        "slack": slack,
        "p1_no_backlog_s": None if baseline is None else round(baseline, 2),
        "p1_first_warm_s": None if warm is None else round(warm, 2),
        "p1_behind_storm_s": None if behind is None else round(behind, 2),
        "p1_timeout_s": args.p1_timeout,
        "incidents_still_running_after_p1": running.count,
        "pagerduty_ack_max_s": pd_max,
        "checks": checks,
        "targets": targets,
    }
    path = write_result("storm-rank-none" if args.rank_none else "storm", record)
    print(json.dumps(record, indent=2))
    print(f"written to {path}")
    if args.py_spy:
        print("ingress profile (py-spy, busy samples):", *top_costs(), sep="\n", file=sys.stderr)
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        print(f"checks failed: {', '.join(failed)}", file=sys.stderr)
    a = products[-1]
    rejected = sum(p["rejected"] for p in products)
    bad = sum(p["bad_sent"] for p in products)
    workflows = "/".join(str(p["workflows_in_visibility"]) for p in products)
    shown_rounds = "/".join(f"{x:.2f}" for x in per_round)
    print(
        f"storm: A {args.dedupe_deliveries}+{a['bad_sent']} deliv {a_rate:.1f}/s (bare {bare_rate:.1f}/s) "
        f"ack p99 {good_p99:.2f} s (bare {bare_p99:.2f} s, ratio {ratio:.2f}; rounds {shown_rounds}), "
        f"{workflows} workflows, "
        f"rejected {rejected}/{bad}; B {args.incidents} distinct {load['deliveries_per_s']}/s "
        f"ack p99 {load['ack_p99_s']:.2f} s max {load['ack_max_s']:.2f} s; "
        f"slack max {slack['ack'].get('max_s', float('nan')):.2f} s; "
        f"p1 behind {args.incidents}: {fmt(behind, args.p1_timeout)} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--incidents", type=int, default=2000, help="phase B distinct incidents")
    parser.add_argument("--dedupe-incidents", type=int, default=200, help="phase A incidents")
    parser.add_argument("--dedupe-deliveries", type=int, default=2000, help="phase A good deliveries")
    parser.add_argument("--clients", type=int, default=32, help="concurrent delivering clients")
    parser.add_argument("--rounds", type=int, default=3, help="phase A rounds, each bare then product")
    parser.add_argument("--approvals", type=int, default=8, help="incidents waiting for a Slack click")
    parser.add_argument("--slack-every", type=float, default=0.2, help="seconds between Slack clicks")
    parser.add_argument("--seed", type=int, default=12, help="shuffle seed")
    parser.add_argument("--rank-none", action="store_true", help="policy ranks nothing urgent (before)")
    parser.add_argument("--p1-timeout", type=float, default=180.0, help="give up on the P1 after this")
    parser.add_argument("--py-spy", metavar="PATH", help="sample the ingress with this py-spy binary")
    parser.add_argument("--logs", metavar="DIR", help="copy the stack's logs here at the end")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # a load-generating child process: start (bare) or post (product)
        mode, spec_path, out_path = args.child
        child = bare_child if mode == "start" else post_child
        result = asyncio.run(child(json.loads(Path(spec_path).read_text())))
        Path(out_path).write_text(json.dumps(result))
        sys.exit(0)
    sys.exit(asyncio.run(main(args)))

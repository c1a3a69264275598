"""How much the PagerDuty ingress costs on top of starting the incident workflows itself.

An alert storm is when the ingress matters: every delivery must be verified, parsed and
turned into exactly one workflow start before PagerDuty gives up on it. This bench starts
N incidents twice against the same real Temporal dev server:

- baseline: `remedium.incidents.start_incident` called directly (the Temporal work alone);
- ingress: N signed `incident.triggered` deliveries over HTTP to the real ingress (uvicorn on
  loopback), which verifies, parses and then makes that same call.

Rounds alternate so drift on a noisy machine hits both alike; the result is the ratio of
the medians (ingress time / baseline time). No worker runs: only the starts are measured.
The HTTP client and the ingress share this process and its event loop, so the ratio is an
upper bound on what a separate ingress process would add.

    .venv/bin/python bench/ingress_throughput.py [--incidents 200] [--concurrency 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import shutil
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import httpx
from pydantic import SecretStr
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from remedium.incidents import start_incident
from remedium.ingress.pagerduty import parse_event, sign
from remedium.ingress.serve import connect_client, serve_ingress
from remedium.models import Alert
from remedium.names import SEARCH_ATTRIBUTES
from remedium.settings import Settings

SHARED = Path(__file__).resolve().parents[2] / "shared"
VECTOR = SHARED / "vectors" / "pagerduty_webhook_incident_triggered.json"
SECRET = "bench-secret"


def _bodies(count: int, tag: str) -> list[bytes]:
    """The captured delivery, once per incident, each with its own incident id."""
    template = json.loads(json.loads(VECTOR.read_text())["raw_body"])
    bodies = []
    for i in range(count):
        body = copy.deepcopy(template)
        body["event"]["id"] = str(uuid.uuid4())
        body["event"]["data"]["id"] = f"B{tag}{i:05d}"
        bodies.append(json.dumps(body).encode())
    return bodies


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _timed(jobs: list[Callable[[], Awaitable[None]]], concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def run(job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await job()

    started = time.perf_counter()
    await asyncio.gather(*(run(job) for job in jobs))
    return time.perf_counter() - started


async def main(incidents: int, concurrency: int, rounds: int) -> None:
    temporal = Path(sys.executable).with_name("temporal")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal if temporal.is_file() else shutil.which("temporal")),
        data_converter=pydantic_data_converter,
        search_attributes=list(SEARCH_ATTRIBUTES),
        dev_server_extra_args=["--ui-disable-news-fetch", "--headless"],
    )
    settings = Settings(
        temporal_address=env.client.service_client.config.target_host,
        ingress_address=f"127.0.0.1:{_free_port()}",
        pagerduty_webhook_secret=SecretStr(SECRET),
        task_queue=f"bench-{uuid.uuid4().hex[:6]}",  # no worker: the workflows only start
    )
    stop = asyncio.Event()
    server = asyncio.create_task(serve_ingress(settings, connect_client(settings), stop))
    headers = dict(json.loads(VECTOR.read_text())["http"]["headers"])
    baseline_s: list[float] = []
    ingress_s: list[float] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://{settings.ingress_address}", timeout=30) as http:
            for _ in range(100):  # until uvicorn listens
                try:
                    await http.get("/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            for r in range(rounds):
                alerts = [parse_event(b).alert for b in _bodies(incidents, f"D{r}")]

                async def start_directly(alert: Alert | None) -> None:
                    assert alert is not None
                    assert await start_incident(env.client, settings.task_queue, alert)

                async def deliver(body: bytes) -> None:
                    signed = {**headers, "X-PagerDuty-Signature": sign(body, SECRET.encode())}
                    reply = await http.post("/webhooks/pagerduty", content=body, headers=signed)
                    assert reply.status_code == 202 and reply.json()["started"], reply.text

                baseline_s.append(await _timed([partial(start_directly, a) for a in alerts], concurrency))
                bodies = _bodies(incidents, f"H{r}")
                ingress_s.append(await _timed([partial(deliver, b) for b in bodies], concurrency))
                print(
                    f"round {r + 1}: baseline {incidents / baseline_s[-1]:7.1f} starts/s, "
                    f"ingress {incidents / ingress_s[-1]:7.1f} deliveries/s",
                    flush=True,
                )
    finally:
        stop.set()
        await server
        await env.shutdown()
    base, hook = statistics.median(baseline_s), statistics.median(ingress_s)
    print(f"incidents per round: {incidents}, concurrency: {concurrency}, rounds: {rounds}")
    print(f"baseline (start_incident directly): median {base:.3f} s = {incidents / base:.1f} starts/s")
    print(f"ingress (signed HTTP deliveries):   median {hook:.3f} s = {incidents / hook:.1f} deliveries/s")
    print(f"ratio ingress/baseline: {hook / base:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--incidents", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.incidents, args.concurrency, args.rounds))

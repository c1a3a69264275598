"""`remedium demo`: one scenario end to end, from a signed PagerDuty webhook to the final report.

It starts what `remedium up --demo` starts (dev server, worker, ingress, sandboxes) on free
ports with a throwaway Temporal database, seeds the scenario, delivers the webhook through
the ingress exactly as PagerDuty would, prints the incident's timeline as it happens, and
exits 0 only when the incident ended as the scenario expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle

from remedium.connection import connect, embedded
from remedium.demo.sandboxes import WEBHOOK_SECRET, DemoSandboxes
from remedium.demo.scenarios import load_scenario
from remedium.demo.webhook import post_delivery, triggered_delivery
from remedium.errors import DemoError
from remedium.models import AuditEntry, IncidentResult
from remedium.progress import Phase, status, wanted
from remedium.settings import Settings
from remedium.untrusted import one_line

DEMO_TIMEOUT_S = 600.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


LINE_WIDTH = 160


def _line(entry: AuditEntry) -> str:
    """One timeline line; long facts are cut (the full audit is in `remedium incident show`)."""
    who = f" [{entry.actor}]" if entry.actor != "remedium" else ""
    message = one_line(entry.message)  # alert text: one line, no terminal controls
    line = f"  {entry.at.strftime('%H:%M:%S')}  {entry.stage:<17} {entry.kind:<17}{who} {message}"
    return line if len(line) <= LINE_WIDTH else line[: LINE_WIDTH - 1] + "…"


async def _follow(handle: WorkflowHandle[Any, Any], done: asyncio.Event) -> None:
    """Print audit entries as they appear, until the incident is over and all are shown."""
    shown = 0
    while True:
        finished = done.is_set()
        try:
            audit = await handle.query("audit", result_type=list[AuditEntry])
        except Exception:  # not started yet, or a query racing the first task
            audit = []
        for entry in audit[shown:]:
            print(_line(entry), flush=True)
        shown = max(shown, len(audit))
        if finished:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=0.5)


async def _deliver(ingress: str, body: bytes, headers: dict[str, str]) -> str:
    response = await post_delivery(ingress, body, headers)
    if response.status_code != 202:
        raise DemoError(f"the ingress refused the webhook: {response.status_code} {response.text}")
    workflow_id = str(response.json()["workflow_id"])
    print(f"PagerDuty webhook delivered: 202 {response.text}", flush=True)
    return workflow_id


def _what_the_sandboxes_saw(sandboxes: DemoSandboxes, incident_id: str) -> list[str]:
    kube_writes = [
        f"{r.method} {r.path}"
        for r in sandboxes.kube.requests
        if r.method in ("POST", "PUT", "PATCH", "DELETE") and "dryRun" not in r.query and r.status < 300
    ]
    lines = ["Kubernetes writes (not dry runs): " + (", ".join(kube_writes) or "none")]
    slack_parents = sandboxes.slack.top_level("C0INCIDENTS")
    replies = sum(len(sandboxes.slack.thread(p["ts"])) - 1 for p in slack_parents)
    lines.append(f"Slack: {len(slack_parents)} thread(s), {replies} repl(ies)")
    for key, ticket in sorted(sandboxes.jira.tickets.items()):
        lines.append(f"Jira {key} [{sandboxes.jira.status(key)}] {ticket.get('summary', '')}")
    incident = sandboxes.pagerduty.incidents.get(incident_id, {})
    notes = sandboxes.pagerduty.note_texts(incident_id)
    lines.append(f"PagerDuty {incident_id}: {incident.get('status', '?')}, {len(notes)} note(s)")
    return lines


async def run_demo(scenario_name: str, keep_running: bool, variant: str | None = None) -> int:
    import logging

    from remedium.devserver import DevServer
    from remedium.ingress.serve import connect_client, serve_ingress
    from remedium.worker import running_worker

    for noisy in ("httpx", "httpx2"):  # one line per HTTP call drowns the timeline (httpx2: openai)
        logging.getLogger(noisy).setLevel(logging.WARNING)
    interactive = wanted() and sys.stdout.isatty()
    scenario = load_scenario(scenario_name)
    base = Settings.load()
    sandboxes = DemoSandboxes.start()
    state = Path(tempfile.mkdtemp(prefix="remedium-demo-"))
    server = DevServer(state, free_port(), free_port())
    stop = asyncio.Event()
    startup = contextlib.ExitStack()  # the spinner shown while the stack starts (a terminal only)
    try:
        update = sandboxes.settings_update(state, None)
        ingress = f"127.0.0.1:{free_port()}"
        settings = base.model_copy(
            update={
                **update,
                "ingress_address": ingress,
                "task_queue": f"remedium-demo-{uuid.uuid4().hex[:6]}",
                "temporal_ui_url": f"http://127.0.0.1:{server.ui_port}",
            }
        )
        sandboxes.write_env(state / "sandbox.env", update)
        if variant is None:
            scenario.seed(sandboxes.world())
        else:
            scenario.seed(sandboxes.world(), variant)
        incident_id = f"PDEMO{uuid.uuid4().hex[:8].upper()}"
        alert = scenario.alert(incident_id)
        sandboxes.pagerduty.add_incident(incident_id, alert.title)

        print(f"Scenario {scenario.NAME}: {one_line(alert.title)}", flush=True)
        started = time.monotonic()
        phase = startup.enter_context(_starting(interactive))
        await server.start()
        settings = embedded(settings, server.address)  # plain gRPC: TEMPORAL_* is for real clusters
        phase("connecting to Temporal and starting the worker")
        client = await connect(settings)
        async with running_worker(settings, client):
            ingress_task = asyncio.create_task(serve_ingress(settings, connect_client(settings), stop))
            startup.close()
            print(f"Temporal UI: {server.ui_url}/namespaces/{settings.namespace}/workflows", flush=True)
            body, headers = triggered_delivery(
                alert, WEBHOOK_SECRET, sandboxes.pagerduty.incidents[incident_id]["html_url"]
            )
            workflow_id = await _deliver(ingress, body, headers)
            handle = client.get_workflow_handle(workflow_id, result_type=IncidentResult)
            done = asyncio.Event()
            follower = asyncio.create_task(_follow(handle, done))
            drive = getattr(scenario, "drive", None)  # a scenario that plays the human (approvals)
            driver = asyncio.create_task(drive(client, workflow_id, variant)) if drive else None
            try:
                result = await asyncio.wait_for(handle.result(), timeout=DEMO_TIMEOUT_S)
            finally:
                done.set()
                await follower
                if driver is not None:
                    driver.cancel()
            elapsed = time.monotonic() - started
            print()
            print(result.report.markdown, flush=True)
            print()
            for line in _what_the_sandboxes_saw(sandboxes, incident_id):
                print(line, flush=True)
            expected = scenario.EXPECTED_OUTCOME if variant is None else _expected(scenario, variant)
            ok = result.outcome == expected
            if not keep_running:
                _quiet_after_verdict()
            print(
                f"\nIncident {workflow_id}: {result.outcome} (expected {expected}) in {elapsed:.1f}s"
                f" — {'OK' if ok else 'UNEXPECTED'}",
                flush=True,
            )
            if keep_running:
                print(f"Everything stays up; sandbox settings in {state / 'sandbox.env'}. Ctrl-C to stop.")
                await _wait_for_signal()
                _quiet_after_verdict()
            stop.set()
            await ingress_task
        return 0 if ok else 1
    finally:
        startup.close()  # a failed start must not leave the spinner over its error
        stop.set()
        await server.stop()
        sandboxes.stop()


@contextlib.contextmanager
def _starting(enabled: bool) -> Iterator[Phase]:
    """A spinner while the stack starts; its INFO start-up lines would tear it, so they wait it out."""
    import logging

    if not enabled:
        yield lambda text: None
        return
    loggers = [logging.getLogger(name) for name in ("remedium", "temporalio")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with status("starting the Temporal dev server", True) as phase:
            yield phase
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _quiet_after_verdict() -> None:
    """The verdict is the last line: what shutting down logs at INFO (the SDK's "Beginning worker
    shutdown", the ingress) says nothing the verdict did not; warnings and errors still show."""
    import logging

    logging.disable(logging.INFO)


def _expected(scenario: Any, variant: str) -> str:
    outcomes = getattr(scenario, "EXPECTED_OUTCOMES", {})
    return str(outcomes.get(variant, scenario.EXPECTED_OUTCOME))


async def _wait_for_signal() -> None:
    import signal

    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, event.set)
    await event.wait()

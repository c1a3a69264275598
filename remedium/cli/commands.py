"""The CLI's commands that talk to Temporal or run components."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from remedium.cli.main import CommandError
from remedium.models import AuditEntry, DecideRequest, IncidentStatus
from remedium.names import SA_RUNBOOK, SA_SERVICE, SA_SEVERITY, SA_STAGE, WORKFLOW_TYPE
from remedium.settings import Settings

log = logging.getLogger("remedium")


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _client(settings: Settings) -> Client:
    from remedium.connection import TemporalUnreachable, connect

    try:
        return await connect(settings)
    except TemporalUnreachable as exc:
        raise CommandError(str(exc)) from None


async def worker() -> int:
    from remedium.worker import StartupError, run_worker

    settings = Settings.load()
    stop = _stop_on_signals()
    try:
        await run_worker(settings, stop)
    except StartupError as exc:
        raise CommandError(str(exc)) from None
    return 0


async def ingress() -> int:
    from remedium.ingress.serve import connect_client, serve_ingress

    settings = Settings.load()
    stop = _stop_on_signals()
    try:
        await serve_ingress(settings, connect_client(settings), stop)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return 0


def _abandon(sandboxes: Any, sock: Any) -> None:
    """Undo what `up` had started before it failed to start the rest."""
    if sandboxes is not None:
        sandboxes.stop()
    if sock is not None:
        sock.close()


async def up(
    temporal_port: int, ui_port: int, ingress_address: str | None, state_dir: str, demo: bool
) -> int:
    from remedium.devserver import DevServer, DevServerError
    from remedium.ingress.app import require_webhook_auth
    from remedium.ingress.serve import bind_ingress, connect_client, serve_ingress
    from remedium.worker import StartupError, running_worker

    overrides: dict[str, Any] = {}
    if ingress_address:
        overrides["ingress_address"] = ingress_address
    settings = Settings.load(**overrides)
    sandboxes = None
    if demo:
        from remedium.demo.sandboxes import DemoSandboxes

        sandboxes = DemoSandboxes.start()
        update = sandboxes.settings_update(Path(state_dir), settings.policy_file)
        sandboxes.write_env(Path(state_dir) / "sandbox.env", update)
        settings = settings.model_copy(update={**update, "temporal_ui_url": f"http://127.0.0.1:{ui_port}"})
        sandboxes.seed_all()
    server = DevServer(Path(state_dir), temporal_port, ui_port)
    # Validate configuration before starting anything, so a bad runbook leaves nothing behind.
    from remedium.worker import load_configuration

    sock = None
    try:
        load_configuration(settings)
        require_webhook_auth(settings)
        sock = bind_ingress(settings)
        stop = _stop_on_signals()
        try:
            await server.start()
        except DevServerError as exc:
            raise CommandError(str(exc)) from None
    except (StartupError, ValueError) as exc:
        _abandon(sandboxes, sock)
        raise CommandError(str(exc)) from None
    except BaseException:
        _abandon(sandboxes, sock)
        raise
    try:
        settings = settings.model_copy(update={"temporal_address": server.address})
        async with running_worker(settings):
            ingress_task = asyncio.create_task(serve_ingress(settings, connect_client(settings), stop, sock))
            print(f"Temporal UI:      {server.ui_url}/namespaces/{settings.namespace}/workflows", flush=True)
            print(f"Temporal gRPC:    {server.address}", flush=True)
            print(f"PagerDuty hook:   http://{settings.ingress_address}/webhooks/pagerduty", flush=True)
            print(f"State:            {server.state_dir / 'temporal.db'}", flush=True)
            if sandboxes is not None:
                for name, url in sandboxes.describe():
                    print(f"{name + ':':<18}{url}", flush=True)
                print(f"Sandbox settings: {Path(state_dir) / 'sandbox.env'}", flush=True)
                print(f"Kubeconfig:       {Path(state_dir) / 'kubeconfig'}", flush=True)
            print("Press Ctrl-C to stop.", flush=True)
            stop_task = asyncio.create_task(stop.wait())
            await asyncio.wait({ingress_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            stop.set()
            await ingress_task
            stop_task.cancel()
    except (StartupError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    finally:
        await server.stop()
        _abandon(sandboxes, sock)
        print("remedium stopped.", flush=True)
    return 0


async def demo(scenario: str, variant: str | None, keep_running: bool) -> int:
    from remedium.demo.run import DemoError, run_demo

    try:
        return await run_demo(scenario, keep_running, variant)
    except (DemoError, ValueError) as exc:
        raise CommandError(str(exc)) from None


def runbook_test(runbook_path: str, alert_path: str, facts_path: str | None) -> int:
    from remedium.cli.runbook_try import try_runbook

    return asyncio.run(
        try_runbook(Path(runbook_path), Path(alert_path), Path(facts_path) if facts_path else None)
    )


async def replay(paths: list[str]) -> int:
    from remedium.replay import replay_paths

    results = await replay_paths([Path(p) for p in paths])
    if not results:
        raise CommandError("no workflow histories (*.json) found in " + ", ".join(paths))
    failed = 0
    for path, error in results:
        if error is None:
            print(f"ok      {path}")
        else:
            failed += 1
            print(f"FAILED  {path}: {error}")
    print(f"{len(results) - failed} replayed, {failed} failed")
    return 1 if failed else 0


async def incident_list(as_json: bool, limit: int) -> int:
    settings = Settings.load()
    client = await _client(settings)
    rows = []
    async for wf in client.list_workflows(f'WorkflowType = "{WORKFLOW_TYPE}"', limit=limit):
        sa = wf.typed_search_attributes
        rows.append(
            {
                "workflow_id": wf.id,
                "status": wf.status.name if wf.status else "UNKNOWN",
                "stage": sa.get(SA_STAGE) or "",
                "service": sa.get(SA_SERVICE) or "",
                "severity": sa.get(SA_SEVERITY) or "",
                "runbook": sa.get(SA_RUNBOOK) or "",
                "started": wf.start_time.isoformat(),
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no incidents")
        return 0
    header = ("workflow_id", "status", "stage", "service", "severity", "runbook", "started")
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in header]
    print("  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r[h]).ljust(w) for h, w in zip(header, widths, strict=True)))
    return 0


async def incident_show(workflow_id: str, as_json: bool) -> int:
    settings = Settings.load()
    client = await _client(settings)
    handle = client.get_workflow_handle(workflow_id)
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CommandError(f"no incident {workflow_id!r}") from None
        raise
    try:
        status = await handle.query("status", result_type=IncidentStatus)
        audit = await handle.query("audit", result_type=list[AuditEntry])
    except Exception as exc:  # no worker to answer queries
        raise CommandError(
            f"incident {workflow_id} is {desc.status.name if desc.status else 'unknown'}, "
            f"but its state cannot be read: {exc} (is a worker running?)"
        ) from None
    if as_json:
        print(
            json.dumps(
                {
                    "status": status.model_dump(mode="json"),
                    "audit": [a.model_dump(mode="json") for a in audit],
                    "workflow_status": desc.status.name if desc.status else None,
                },
                indent=2,
            )
        )
        return 0
    running = desc.status == WorkflowExecutionStatus.RUNNING
    print(f"{status.workflow_id}: {status.alert.title}")
    print(
        f"  stage {status.stage}{' (running)' if running else ''}"
        f"{', outcome ' + status.outcome if status.outcome else ''}, runbook {status.runbook or '-'}"
    )
    if status.pending_approval:
        p = status.pending_approval
        print(f"  PENDING APPROVAL: step {p.step} ({p.action}) until {p.deadline.isoformat()}")
        print(f"    dry run: {p.dry_run.summary}")
        print(f"    remedium approve {status.workflow_id} --step {p.step} --as <you>")
    if status.report:
        print(f"  report: {status.report.summary}")
    if status.escalation:
        print(f"  escalated: {status.escalation.message}")
    print("  audit:")
    for entry in audit:
        who = f" [{entry.actor}]" if entry.actor != "remedium" else ""
        when = entry.at.isoformat(timespec="seconds")
        print(f"    {when} {entry.stage:<17} {entry.kind:<18}{who} {entry.message}")
    if status.report and not running:
        print()
        print(status.report.markdown)
    return 0


async def decide(workflow_id: str, verb: str, step: str | None, by: str, reason: str) -> int:
    settings = Settings.load()
    client = await _client(settings)
    handle = client.get_workflow_handle(workflow_id)
    request = DecideRequest(
        decision="approve" if verb == "approve" else "reject", by=by, step=step, reason=reason
    )
    try:
        message = await handle.execute_update("decide", request, result_type=str)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        raise CommandError(f"{verb} refused: {getattr(cause, 'message', None) or cause}") from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CommandError(f"no running incident {workflow_id!r}") from None
        raise CommandError(f"{verb} failed: {exc.message}") from None
    print(message)
    return 0


def _eprint(message: str) -> None:
    print(message, file=sys.stderr)

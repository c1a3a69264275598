"""`remedium incident list` / `show` / `export`: what is open, one incident's trail, its history.

Reading goes through remedium.incidents; this module only turns its answers into the
table, the text view or `--json`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from remedium.cli.common import CommandError, connect, line, print_json, print_table
from remedium.incidents import (
    IncidentDetails,
    IncidentNotFound,
    IncidentSummary,
    IncidentUnreadable,
    export_history,
    list_incidents,
    show_incident,
)
from remedium.settings import Settings

LIST_COLUMNS = ("workflow_id", "status", "stage", "service", "severity", "runbook", "started")


async def incident_list(as_json: bool, limit: int) -> int:
    """Open and recent incidents as a table, or `--json` rows with the same columns."""
    client = await connect(Settings.load())
    rows = [_row(incident) for incident in await list_incidents(client, limit)]
    if as_json:
        print_json(rows)
    elif not rows:
        print("no incidents")
    else:
        print_table(LIST_COLUMNS, rows)
    return 0


def _row(incident: IncidentSummary) -> dict[str, str]:
    return {
        "workflow_id": incident.workflow_id,
        "status": incident.status.name if incident.status else "UNKNOWN",
        "stage": incident.stage,
        "service": incident.service,
        "severity": incident.severity,
        "runbook": incident.runbook,
        "started": incident.started.isoformat(),
    }


async def incident_show(workflow_id: str, as_json: bool) -> int:
    """One incident's stage, pending approval, report and audit trail."""
    client = await connect(Settings.load())
    try:
        details = await show_incident(client, workflow_id)
    except IncidentNotFound as exc:
        raise CommandError(str(exc)) from None
    except IncidentUnreadable as exc:
        state = exc.workflow_status.name if exc.workflow_status else "unknown"
        raise CommandError(
            f"incident {workflow_id} is {state}, but its state cannot be read: {exc} (is a worker running?)"
        ) from None
    if as_json:
        print_json(_as_json(details))
    else:
        _print_details(details)
    return 0


async def incident_export(workflow_id: str, output: str | None) -> int:
    """The incident's history as JSON, to `-o FILE` or stdout: the input of `remedium replay`."""
    client = await connect(Settings.load())
    try:
        text = await export_history(client, workflow_id)
    except IncidentNotFound as exc:
        raise CommandError(str(exc)) from None
    if output is None:
        print(text)
        return 0
    try:
        Path(output).write_text(text)
    except OSError as exc:
        raise CommandError(f"cannot write {output}: {exc.strerror or exc}") from None
    print(f"wrote the history of {workflow_id} to {output}", file=sys.stderr)
    return 0


def _as_json(details: IncidentDetails) -> dict[str, Any]:
    return {
        "status": details.status.model_dump(mode="json"),
        "audit": [a.model_dump(mode="json") for a in details.audit],
        "workflow_status": details.workflow_status.name if details.workflow_status else None,
    }


def _print_details(details: IncidentDetails) -> None:
    status, running = details.status, details.running
    print(f"{status.workflow_id}: {line(status.alert.title)}")  # alert text: one line, no controls
    print(
        f"  stage {status.stage}{' (running)' if running else ''}"
        f"{', outcome ' + status.outcome if status.outcome else ''}, runbook {status.runbook or '-'}"
    )
    if status.pending_approval:
        p = status.pending_approval
        print(f"  PENDING APPROVAL: step {p.step} ({p.action}) until {p.deadline.isoformat()}")
        print(f"    dry run: {line(p.dry_run.summary)}")
        print(f"    remedium approve {status.workflow_id} --step {p.step} --as <you>")
    if status.report:
        print(f"  report: {line(status.report.summary)}")
    if status.escalation:
        print(f"  escalated: {line(status.escalation.message)}")
    print("  audit:")
    for entry in details.audit:
        who = f" [{line(entry.actor)}]" if entry.actor != "remedium" else ""
        when = entry.at.isoformat(timespec="seconds")
        print(f"    {when} {entry.stage:<17} {entry.kind:<18}{who} {line(entry.message)}")
    if status.report and not running:
        print()
        print(status.report.markdown)

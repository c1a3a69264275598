"""`remedium autonomy show|set` and `remedium review`: read and steer the runbooks' earned autonomy.

Each runbook's level lives in its entity workflow (`autonomy-<runbook>`, workflows/autonomy.py).
`show` queries it (a runbook without a record shows the policy's start level); `set` is
update-with-start, so a human can pin or cap a runbook before its first incident; `review`
sends a post-hoc verdict on one incident to the record of the runbook it ran.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from remedium.cli.common import CommandError, connect, line, print_json, print_table
from remedium.models.common import utc_text
from remedium.models.trust import AutonomyState, AutonomyView, Level, LevelSet, ReviewVerdict, TrustPolicy
from remedium.names import (
    AUTONOMY_QUERY,
    AUTONOMY_WORKFLOW_TYPE,
    REVIEW_UPDATE,
    SA_RUNBOOK,
    SET_LEVEL_UPDATE,
    autonomy_workflow_id,
)
from remedium.settings import Settings

ANSWER_WITHIN = timedelta(seconds=20)


def _trust(settings: Settings) -> TrustPolicy | None:
    """The policy's trust section, or None (no policy file, or no `trust` in it)."""
    from remedium.errors import ProblemsError
    from remedium.policy_loader import load_policy

    try:
        return load_policy(settings.policy_file).trust
    except ProblemsError as exc:
        raise CommandError(f"invalid policy {settings.policy_file}: {exc}") from None


def _no_worker(task_queue: str) -> str:
    return (
        f"no worker answered within {ANSWER_WITHIN.seconds}s; is `remedium worker` (or `remedium up`) "
        f"running on task queue {task_queue!r}?"
    )


def _failure(exc: WorkflowUpdateFailedError) -> str:
    cause = exc.cause
    message = getattr(cause, "message", None) or str(cause or exc)
    return str(message).removeprefix("ValueError: ")


async def _view(client: Client, runbook: str, trust: TrustPolicy | None) -> AutonomyView:
    handle = client.get_workflow_handle(autonomy_workflow_id(runbook))
    try:
        view: AutonomyView = await handle.query(AUTONOMY_QUERY, result_type=AutonomyView)
        return view
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise CommandError(f"cannot read runbook {runbook}'s record: {exc.message}") from None
    if trust is None:
        raise CommandError(
            f"runbook {runbook} has no autonomy record, and the policy has no `trust` section "
            "(approvals are risk-based)"
        )
    return AutonomyView(
        runbook=runbook, level=trust.start_for(runbook), cap=trust.cap_for(runbook), record={}, history=[]
    )


async def _recorded_runbooks(client: Client, task_queue: str) -> list[str]:
    """The runbooks with a running record on this task queue (visibility lags a second or so)."""
    prefix = autonomy_workflow_id("")
    names = {
        execution.id.removeprefix(prefix)
        async for execution in client.list_workflows(
            f"WorkflowType = '{AUTONOMY_WORKFLOW_TYPE}' AND ExecutionStatus = 'Running' "
            f"AND TaskQueue = '{task_queue}'"
        )
    }
    return sorted(names)


async def _views(client: Client, names: list[str], trust: TrustPolicy | None) -> list[AutonomyView]:
    """Every record that answers; one that does not is named on stderr, the rest still shown."""
    views = []
    for name in names:
        try:
            views.append(await _view(client, name, trust))
        except CommandError as exc:
            print(f"remedium: skipped: {exc}", file=sys.stderr)
    return views


async def autonomy_show(runbook: str | None, as_json: bool) -> int:
    settings = Settings.load()
    trust = _trust(settings)
    client = await connect(settings)
    if runbook:
        views = [await _view(client, runbook, trust)]
    else:
        views = await _views(client, await _recorded_runbooks(client, settings.task_queue), trust)
    if as_json:
        print_json([view.model_dump(mode="json") for view in views])
        return 0
    if not views:
        print("no runbook has an autonomy record yet")
        return 0
    rows = [
        {
            "runbook": v.runbook,
            "level": v.level,
            "cap": v.cap,
            "incidents": v.record.get("incidents", 0),
            "last change": v.history[-1].reason if v.history else "-",
        }
        for v in views
    ]
    print_table(["runbook", "level", "cap", "incidents", "last change"], rows)
    if runbook and views[0].history:
        print("\nhistory:")
        for h in views[0].history:
            print(f"  {utc_text(h.at)}  {h.kind:<17} {h.level:<11} {line(h.reason)}")
    return 0


async def autonomy_set(runbook: str, level: Level, by: str, reason: str, as_json: bool) -> int:
    if not by.strip() or not reason.strip():
        raise CommandError("a level change needs who (--as) and why (--reason)", 2)
    settings = Settings.load()
    trust = _trust(settings)
    client = await connect(settings)
    start: WithStartWorkflowOperation[Any, None] = WithStartWorkflowOperation(
        AUTONOMY_WORKFLOW_TYPE,
        AutonomyState(runbook=runbook, trust=trust),
        id=autonomy_workflow_id(runbook),
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    try:
        view: AutonomyView = await client.execute_update_with_start_workflow(
            SET_LEVEL_UPDATE,
            LevelSet(level=level, by=by, reason=reason),
            start_workflow_operation=start,
            result_type=AutonomyView,
            rpc_timeout=ANSWER_WITHIN,
        )
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise CommandError(_no_worker(settings.task_queue)) from None
    except WorkflowUpdateFailedError as exc:
        raise CommandError(f"runbook {runbook}: level not changed: {_failure(exc)}") from None
    if as_json:
        print_json(view.model_dump(mode="json"))
    else:
        print(f"runbook {runbook} is now at {view.level} (cap {view.cap}), set by {by}: {line(reason)}")
    return 0


async def review_command(incident_id: str, verdict: str, by: str, reason: str, as_json: bool) -> int:
    if not by.strip():
        raise CommandError("a review needs who (--as)", 2)
    settings = Settings.load()
    client = await connect(settings)
    try:
        description = await client.get_workflow_handle(incident_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CommandError(f"no incident {incident_id}") from None
        raise CommandError(f"cannot read incident {incident_id}: {exc.message}") from None
    runbook = description.typed_search_attributes.get(SA_RUNBOOK)
    if not runbook:
        raise CommandError(f"incident {incident_id} ran no runbook: there is nothing to review")
    handle = client.get_workflow_handle(autonomy_workflow_id(runbook))
    try:
        view: AutonomyView = await handle.execute_update(
            REVIEW_UPDATE,
            ReviewVerdict(incident_id=incident_id, verdict=verdict, by=by, reason=reason),
            result_type=AutonomyView,
            rpc_timeout=ANSWER_WITHIN,
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CommandError(f"runbook {runbook} has no autonomy record to review against") from None
        raise CommandError(f"review not recorded: {exc.message}") from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise CommandError(_no_worker(settings.task_queue)) from None
    except WorkflowUpdateFailedError as exc:
        raise CommandError(f"review not recorded: {_failure(exc)}") from None
    if as_json:
        print_json(view.model_dump(mode="json"))
    else:
        print(
            f"incident {incident_id} reviewed {verdict} by {by}; runbook {runbook} is at {view.level} "
            f"(cap {view.cap})"
        )
    return 0

"""`remedium freeze` / `unfreeze`: start or end the Freeze workflow singleton.

Freezing is update-with-start, so the first freeze creates the workflow and a second one
only reports who froze first; a running Freeze workflow is what every incident checks.
"""

from __future__ import annotations

import getpass
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from remedium.cli.common import CommandError, connect, print_json
from remedium.models import FreezeState
from remedium.models.common import utc_text
from remedium.names import FREEZE_UPDATE, FREEZE_WORKFLOW_ID, FREEZE_WORKFLOW_TYPE, UNFREEZE_UPDATE
from remedium.settings import Settings
from workflows.freeze import FreezeRequest

ANSWER_WITHIN = timedelta(seconds=20)


def _no_worker(task_queue: str, consequence: str) -> str:
    return (
        f"no worker answered within {ANSWER_WITHIN.seconds}s ({consequence}); is `remedium worker` "
        f"(or `remedium up`) running on task queue {task_queue!r}?"
    )


def _who(by: str | None) -> str:
    """`--as`, else the login name: a freeze always says who set it."""
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


async def freeze_command(freeze: bool, reason: str, by: str | None, as_json: bool = False) -> int:
    """Freeze (or unfreeze) and say what state the switch is in now.

    With `as_json`, one document: `{"frozen", "changed", "since", "by", "reason"}` (`changed`
    false when it was already in that state; `since` null when not frozen).
    """
    settings = Settings.load()
    client = await connect(settings)
    request = FreezeRequest(reason=reason, by=_who(by))
    if freeze:
        return await _freeze(client, settings.task_queue, request, as_json)
    return await _unfreeze(client, settings.task_queue, request, as_json)


async def _freeze(client: Client, task_queue: str, request: FreezeRequest, as_json: bool = False) -> int:
    start: WithStartWorkflowOperation[Any, FreezeState] = WithStartWorkflowOperation(
        FREEZE_WORKFLOW_TYPE,
        FreezeState(frozen=True, reason=request.reason, by=request.by),
        id=FREEZE_WORKFLOW_ID,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        result_type=FreezeState,
    )
    try:
        state: FreezeState = await client.execute_update_with_start_workflow(
            FREEZE_UPDATE,
            request,
            start_workflow_operation=start,
            result_type=FreezeState,
            rpc_timeout=ANSWER_WITHIN,
        )
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        # The freeze workflow now exists, and a running one is what every incident checks.
        raise CommandError(_no_worker(task_queue, "the freeze is recorded and holds all the same")) from None
    since = utc_text(state.since) if state.since else "now"
    already = state.by != request.by or state.reason != request.reason
    if as_json:
        print_json(
            {
                "frozen": True,
                "changed": not already,
                "since": state.since.isoformat() if state.since else None,
                "by": state.by,
                "reason": state.reason,
            }
        )
        return 0
    if already:
        print(f"already frozen since {since} by {state.by}: {state.reason}")
    else:
        print(f"frozen since {since} by {state.by}: {state.reason}")
    print("No state-changing action will start until `remedium unfreeze`.")
    return 0


async def _unfreeze(client: Client, task_queue: str, request: FreezeRequest, as_json: bool = False) -> int:
    handle = client.get_workflow_handle(FREEZE_WORKFLOW_ID)
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        description = None
    if description is None or description.status != WorkflowExecutionStatus.RUNNING:
        if as_json:
            print_json({"frozen": False, "changed": False, "since": None, "by": request.by, "reason": None})
        else:
            print("not frozen; nothing to do")
        return 0
    try:
        await handle.execute_update(
            UNFREEZE_UPDATE, request, result_type=FreezeState, rpc_timeout=ANSWER_WITHIN
        )
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise CommandError(
            _no_worker(task_queue, "still frozen; the unfreeze applies once a worker takes it")
        ) from None
    if as_json:
        print_json({"frozen": False, "changed": True, "since": None, "by": request.by, "reason": None})
    else:
        print(f"unfrozen by {request.by}; incidents waiting on the freeze go ahead")
    return 0

"""`remedium freeze` / `unfreeze`: start or end the FreezeWorkflow singleton."""

from __future__ import annotations

import getpass
from datetime import timedelta

from temporalio.client import (
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from remedium.cli.commands import _client
from remedium.cli.main import CommandError
from remedium.models import FreezeState
from remedium.models.common import utc_text
from remedium.settings import Settings
from workflows.freeze import FREEZE_WORKFLOW_ID, FreezeRequest, FreezeWorkflow

ANSWER_WITHIN = timedelta(seconds=20)


def _no_worker(task_queue: str, consequence: str) -> str:
    return (
        f"no worker answered within {ANSWER_WITHIN.seconds}s ({consequence}); is `remedium worker` "
        f"(or `remedium up`) running on task queue {task_queue!r}?"
    )


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


async def freeze_command(freeze: bool, reason: str, by: str | None) -> int:
    settings = Settings.load()
    client = await _client(settings)
    request = FreezeRequest(reason=reason, by=_who(by))
    if freeze:
        start = WithStartWorkflowOperation(
            FreezeWorkflow.run,
            FreezeState(frozen=True, reason=request.reason, by=request.by),
            id=FREEZE_WORKFLOW_ID,
            task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        try:
            state = await client.execute_update_with_start_workflow(
                FreezeWorkflow.freeze, request, start_workflow_operation=start, rpc_timeout=ANSWER_WITHIN
            )
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            # The freeze workflow now exists, and a running one is what every incident checks.
            raise CommandError(
                _no_worker(settings.task_queue, "the freeze is recorded and holds all the same")
            ) from None
        since = utc_text(state.since) if state.since else "now"
        if state.by != request.by or state.reason != request.reason:
            print(f"already frozen since {since} by {state.by}: {state.reason}")
        else:
            print(f"frozen since {since} by {state.by}: {state.reason}")
        print("No state-changing action will start until `remedium unfreeze`.")
        return 0
    handle = client.get_workflow_handle_for(FreezeWorkflow.run, FREEZE_WORKFLOW_ID)
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        description = None
    if description is None or description.status != WorkflowExecutionStatus.RUNNING:
        print("not frozen; nothing to do")
        return 0
    try:
        await handle.execute_update(FreezeWorkflow.unfreeze, request, rpc_timeout=ANSWER_WITHIN)
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise CommandError(
            _no_worker(settings.task_queue, "still frozen; the unfreeze applies once a worker takes it")
        ) from None
    print(f"unfrozen by {request.by}; incidents waiting on the freeze go ahead")
    return 0

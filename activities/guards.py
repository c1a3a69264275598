"""Guard activities: talk to the limiter and freeze workflows on the incident's behalf.

Workflows cannot send updates to other workflows, so an activity does it with the worker's
Temporal client: update-with-start for a rate-limit slot (idempotent by the step's key),
describe + query for the freeze.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from remedium.models import FreezeState, SlotGrant, SlotRequest
from remedium.names import (
    ACQUIRE_SLOT_ACTIVITY,
    FREEZE_STATE_ACTIVITY,
    FREEZE_WORKFLOW_ID,
    limiter_workflow_id,
)
from workflows.freeze import FreezeWorkflow
from workflows.limiter import LimiterState, TargetLimiterWorkflow


class GuardActivities:
    def __init__(self, client: Client, task_queue: str) -> None:
        self._client = client
        self._task_queue = task_queue

    def activities(self) -> list[Callable[..., Any]]:
        return [self.acquire_slot, self.freeze_state]

    @activity.defn(name=ACQUIRE_SLOT_ACTIVITY)
    async def acquire_slot(self, request: SlotRequest) -> SlotGrant:
        start = WithStartWorkflowOperation(
            TargetLimiterWorkflow.run,
            LimiterState(),
            id=limiter_workflow_id(request.action, request.target),
            task_queue=self._task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        grant: SlotGrant = await self._client.execute_update_with_start_workflow(
            TargetLimiterWorkflow.acquire, request, start_workflow_operation=start, id=request.key
        )
        return grant

    @activity.defn(name=FREEZE_STATE_ACTIVITY)
    async def freeze_state(self) -> FreezeState:
        handle = self._client.get_workflow_handle_for(FreezeWorkflow.run, FREEZE_WORKFLOW_ID)
        try:
            description = await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return FreezeState(frozen=False)
            raise
        if description.status != WorkflowExecutionStatus.RUNNING:
            return FreezeState(frozen=False)
        state: FreezeState = await handle.query(FreezeWorkflow.state)
        return state

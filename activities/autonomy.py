"""Autonomy activities: ask a runbook's entity for its level, deliver an incident's outcome to it.

Workflows cannot query or signal-with-start other workflows, so these do it with the worker's
Temporal client. The standing falls back to the policy's start level while the runbook has
no record yet; the report is `signal-with-start`, which creates the entity on a runbook's
first incident. A retried report (a worker killed after delivering it) sends the same
signal again, and the entity counts each incident id once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from remedium.models.trust import (
    AutonomyState,
    AutonomyView,
    OutcomeReport,
    Standing,
    StandingRequest,
    lowest,
)
from remedium.names import (
    AUTONOMY_REPORT_ACTIVITY,
    AUTONOMY_STANDING_ACTIVITY,
    OUTCOME_SIGNAL,
    autonomy_workflow_id,
)
from workflows.autonomy import AutonomyWorkflow


async def read_view(client: Client, runbook: str) -> AutonomyView | None:
    """The entity's state, or None when the runbook has no record yet."""
    handle = client.get_workflow_handle_for(AutonomyWorkflow.run, autonomy_workflow_id(runbook))
    try:
        view: AutonomyView = await handle.query(AutonomyWorkflow.state)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return view


class AutonomyActivities:
    def __init__(self, client: Client, task_queue: str) -> None:
        self._client = client
        self._task_queue = task_queue

    def activities(self) -> list[Callable[..., Any]]:
        return [self.standing, self.report]

    @activity.defn(name=AUTONOMY_STANDING_ACTIVITY)
    async def standing(self, request: StandingRequest) -> Standing:
        trust, runbook = request.trust, request.runbook
        policy_cap = trust.cap_for(runbook)
        view = await read_view(self._client, runbook)
        if view is None:
            level = trust.start_for(runbook)
            return Standing(
                level=level, cap=policy_cap, why=f"no record yet: the policy's start level is {level}"
            )
        level = lowest(view.level, policy_cap)
        current = view.record.get("current", {})
        why = (
            f"runbook record: {current.get('incidents', 0)} incident(s) at {view.level}, "
            f"{current.get('resolved', 0)} resolved"
        )
        if view.history:
            why += f"; last change: {view.history[-1].reason}"
        if level != view.level:
            why += f"; held at the policy cap {policy_cap}"
        return Standing(level=level, cap=lowest(view.cap, policy_cap), why=why)

    @activity.defn(name=AUTONOMY_REPORT_ACTIVITY)
    async def report(self, report: OutcomeReport) -> None:
        await self._client.start_workflow(
            AutonomyWorkflow.run,
            AutonomyState(runbook=report.runbook, trust=report.trust),
            id=autonomy_workflow_id(report.runbook),
            task_queue=self._task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal=OUTCOME_SIGNAL,
            start_signal_args=[report],
        )

"""The incident's saga compensation: undo what was done, newest first, and say what could not be.

Moved out of workflows/incident.py whole (same activities, same order), so the stages there
stay readable within their line budget; the incident still decides when to roll back.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from remedium.models import ActionResult, Checkpoint, RollbackRequest
    from remedium.names import action_activity
    from workflows.journal import Journal
    from workflows.retries import ACTION_HEARTBEAT, ACTION_RETRY, failure_message


async def roll_back(journal: Journal, checkpoints: list[Checkpoint]) -> str:
    """Undo checkpoints newest first (saga); say what could not be undone."""
    failures = []
    for checkpoint in reversed(checkpoints):
        journal.rollback_started(checkpoint)
        try:
            result = await workflow.execute_activity(
                action_activity(checkpoint.action, "rollback"),
                RollbackRequest(incident_id=workflow.info().workflow_id, checkpoint=checkpoint),
                result_type=ActionResult,
                start_to_close_timeout=timedelta(minutes=5),
                heartbeat_timeout=ACTION_HEARTBEAT,
                retry_policy=ACTION_RETRY,
            )
            journal.rolled_back(checkpoint, result)
        except ActivityError as err:
            failures.append(checkpoint.step_id)
            journal.rollback_failed(checkpoint, failure_message(err))
    if failures:
        return f"; rollback FAILED for {', '.join(failures)}: undo by hand"
    return "; all changes were rolled back"

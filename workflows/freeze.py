"""FreezeWorkflow: the global kill switch. While it runs, no state-changing action starts.

A singleton (`remedium-freeze`): `remedium freeze` starts it through update-with-start,
`remedium unfreeze` ends it. Being a running workflow makes the freeze visible in the
Temporal UI, with who froze it and why, and durable across restarts of everything else.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from remedium.models import FreezeState
    from remedium.models.common import Model, utc_text
    from remedium.names import (
        FREEZE_STATE_QUERY,
        FREEZE_UPDATE,
        FREEZE_WORKFLOW_ID,
        FREEZE_WORKFLOW_TYPE,
        UNFREEZE_UPDATE,
    )

__all__ = ["FREEZE_WORKFLOW_ID", "FreezeRequest", "FreezeWorkflow"]  # the id stays importable from here

# Continue-as-new before a long freeze's history (one update per `freeze` call) grows large.
HISTORY_LIMIT = 2000


class FreezeRequest(Model):
    """Who froze or unfroze, and why: shown in the UI and in every refused step's audit."""

    reason: str = ""
    by: str = ""


@workflow.defn(name=FREEZE_WORKFLOW_TYPE)
class FreezeWorkflow:
    """Its running is the freeze; `state` is what `guard.freeze_state` reads for every step."""

    @workflow.init
    def __init__(self, state: FreezeState) -> None:
        # Started frozen by `remedium freeze` (the start input carries the request), so no
        # handler ordering can make the first run see an unfrozen state.
        if state.frozen and state.since is None:
            state = state.model_copy(update={"since": workflow.now()})
        self._state = state

    @workflow.run
    async def run(self, state: FreezeState) -> FreezeState:
        """Live until unfrozen, continuing as new so a freeze can last for months."""
        if self._state.frozen:
            self._details()
        while True:
            await workflow.wait_condition(
                lambda: not self._state.frozen or workflow.info().get_current_history_length() > HISTORY_LIMIT
            )
            await workflow.wait_condition(workflow.all_handlers_finished)
            if not self._state.frozen:
                return self._state
            workflow.continue_as_new(self._state)

    @workflow.update(
        name=FREEZE_UPDATE,
        description='Freeze all state-changing actions. Data: {"reason": "...", "by": "..."}',
    )
    def freeze(self, request: FreezeRequest) -> FreezeState:
        """Freezing twice keeps the first reason and time: the original freeze is the one to explain."""
        if not self._state.frozen:
            self._state = FreezeState(frozen=True, reason=request.reason, by=request.by, since=workflow.now())
        self._details()
        return self._state

    @workflow.update(name=UNFREEZE_UPDATE, description='Lift the freeze. Data: {"by": "..."}')
    def unfreeze(self, request: FreezeRequest) -> FreezeState:
        self._state = FreezeState(frozen=False, reason=request.reason, by=request.by, since=workflow.now())
        return self._state

    @workflow.query(
        name=FREEZE_STATE_QUERY, description="Whether actions are frozen, since when, by whom and why."
    )
    def state(self) -> FreezeState:
        return self._state

    def _details(self) -> None:
        since = utc_text(self._state.since) if self._state.since else "now"
        workflow.set_current_details(
            f"**FROZEN** since {since} by {self._state.by or 'unknown'}: "
            f"{self._state.reason}\n\nNo state-changing action starts. Lift with `remedium unfreeze`."
        )

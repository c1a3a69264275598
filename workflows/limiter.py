"""TargetLimiterWorkflow: one durable sliding window per (action, target), shared by all incidents.

Incidents ask through update-with-start (activity `guard.acquire_slot`), so the limiter is
started when absent and the request is applied atomically; update handlers without `await`
run one at a time, so ten concurrent incidents cannot race past the limit. The workflow
keeps only live grants, continues-as-new when its history grows, and ends once the window
is empty (the next request starts a fresh run).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import Field

    from remedium.models import SlotGrant, SlotRequest
    from remedium.models.common import Model, utc_text
    from remedium.names import ACQUIRE_UPDATE, GRANTS_QUERY, LIMITER_WORKFLOW_TYPE


class Grant(Model):
    """One slot taken; `key` (incident/step) makes a retried acquire idempotent."""

    key: str
    at: datetime
    expires: datetime


class LimiterState(Model):
    """What survives continue-as-new: only the grants still inside the window."""

    grants: list[Grant] = Field(default_factory=list)


# Continue-as-new well before Temporal's history limits; the state carried over is tiny.
HISTORY_LIMIT = 2000


@workflow.defn(name=LIMITER_WORKFLOW_TYPE)
class TargetLimiterWorkflow:
    """The sliding window of one (action, target); it ends itself once the window is empty."""

    @workflow.init
    def __init__(self, state: LimiterState) -> None:
        self._grants = list(state.grants)

    @workflow.run
    async def run(self, state: LimiterState) -> None:
        while True:
            self._prune()
            if not self._grants:
                await workflow.wait_condition(workflow.all_handlers_finished)
                self._prune()
                if not self._grants:
                    return
                continue
            wake = min(g.expires for g in self._grants) - workflow.now()
            try:
                await workflow.wait_condition(
                    self._should_continue_as_new, timeout=max(wake, timedelta(seconds=1))
                )
            except TimeoutError:
                pass
            if self._should_continue_as_new():
                await workflow.wait_condition(workflow.all_handlers_finished)
                self._prune()
                workflow.continue_as_new(LimiterState(grants=self._grants))

    @workflow.update(
        name=ACQUIRE_UPDATE, description="Take one slot of the window, or be told when one frees up."
    )
    def acquire(self, request: SlotRequest) -> SlotGrant:
        """Grant or refuse at once (no await), so concurrent incidents are serialised here."""
        self._prune()
        per = timedelta(seconds=request.per_s)
        used = len(self._grants)
        if any(g.key == request.key for g in self._grants):
            return SlotGrant(granted=True, reason=f"already granted to {request.key}", used=used)
        if used < request.max:
            now = workflow.now()
            self._grants.append(Grant(key=request.key, at=now, expires=now + per))
            return SlotGrant(
                granted=True,
                reason=f"{request.action} on {request.target}: {used + 1} of {request.max} allowed per {per}",
                used=used + 1,
            )
        retry_after = min(g.expires for g in self._grants) if self._grants else None
        return SlotGrant(
            granted=False,
            reason=(
                f"rate limit: {request.action} on {request.target} already ran {used} time(s) in the last "
                f"{per} (policy allows {request.max})"
                + (f"; next allowed at {utc_text(retry_after)}" if retry_after else "")
            ),
            used=used,
            retry_after=retry_after,
        )

    @workflow.query(name=GRANTS_QUERY, description="Live grants in the window: who used a slot and when.")
    def grants(self) -> list[Grant]:
        return list(self._grants)

    def _prune(self) -> None:
        now = workflow.now()
        self._grants = [g for g in self._grants if g.expires > now]

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > HISTORY_LIMIT

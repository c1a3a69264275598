"""Guardrails: may this state-changing step start now?

What the policy says about one step (blast radius, autonomy, forced approval, which rate
limit applies) is decided by the pure functions of remedium.guards; the durable parts are
entity workflows of their own (the global freeze, one sliding window per target), reached
through activities. A guardrail only says why a step may not go on, and records it: what a
refusal means (escalate, roll back what was done) is the incident workflow's decision.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from remedium.guards import approval_forced, blast_radius_refusal, rate_limit_for
    from remedium.models import DryRun, FreezeState, Policy, RenderedStep, SlotGrant, SlotRequest, Stage
    from remedium.names import ACQUIRE_SLOT_ACTIVITY, FREEZE_STATE_ACTIVITY
    from workflows.journal import Journal
    from workflows.retries import ENGINE_RETRY, ENGINE_TIMEOUT


class Guardrails:
    """The checks between a step's dry run and its execution, in the order the workflow runs them.

    The workflow lends its stage and its stop-aware timer, so waiting for a freeze shows in
    the status and ends as soon as the incident is closed upstream.
    """

    def __init__(
        self,
        journal: Journal,
        policy: Callable[[], Policy | None],
        *,
        set_stage: Callable[[Stage], None],
        sleep: Callable[[timedelta], Awaitable[bool]],
    ) -> None:
        self._journal = journal
        self._policy = policy
        self._set_stage = set_stage
        self._sleep = sleep

    def refusal(self, step: RenderedStep, dry: DryRun) -> str | None:
        """Why the policy forbids running this step at all (blast radius, dry-run-only autonomy)."""
        policy = self._policy()
        assert policy is not None
        refusal = blast_radius_refusal(policy, step, dry)
        if refusal is not None:
            self._journal.record("guard_refused", refusal, step=step.id, data={"guard": "blast_radius"})
            return f"blast radius: {refusal}"
        if policy.autonomy == "dry_run_only":
            self._journal.record(
                "guard_refused",
                f"policy autonomy is dry_run_only: step {step.id} not run",
                step=step.id,
                data={"guard": "autonomy"},
            )
            return (
                f"policy autonomy is dry_run_only: step {step.id} ({step.action}) was not run; "
                f"it would: {dry.summary}"
            )
        return None

    def forces_approval(self, step: RenderedStep) -> bool:
        """True when the policy wants a human on this step, whatever the runbook says."""
        policy = self._policy()
        assert policy is not None
        forced = approval_forced(policy, step)
        if forced is not None and not step.approval_required:
            self._journal.record("approval_forced", f"step {step.id} needs approval: {forced}", step=step.id)
        return forced is not None

    async def wait_unfrozen(self, step: RenderedStep) -> str | None:
        """No state-changing action starts while `remedium freeze` is on: wait or escalate per policy.

        None once the step may go ahead, or when the incident was closed upstream meanwhile.
        """
        policy = self._policy()
        assert policy is not None
        rules = policy.freeze
        started = workflow.now()
        announced = False
        while True:
            state: FreezeState = await workflow.execute_activity(
                FREEZE_STATE_ACTIVITY,
                result_type=FreezeState,
                start_to_close_timeout=ENGINE_TIMEOUT,
                retry_policy=ENGINE_RETRY,
            )
            if not state.frozen:
                if announced:
                    self._journal.record(
                        "unfrozen", f"freeze lifted; step {step.id} goes ahead", step=step.id
                    )
                    self._set_stage("acting")
                return None
            why = f"global freeze by {state.by or 'unknown'}: {state.reason or 'no reason given'}"
            if rules.on_frozen == "escalate":
                self._journal.record(
                    "guard_refused",
                    f"step {step.id} not started: {why}",
                    step=step.id,
                    data={"guard": "freeze"},
                )
                return f"step {step.id} not started: {why}"
            if not announced:
                self._journal.record(
                    "frozen",
                    f"step {step.id} waits for the freeze to lift (up to {rules.max_wait}): {why}",
                    step=step.id,
                )
                self._set_stage("frozen")
                announced = True
            if workflow.now() - started >= rules.max_wait:
                return f"step {step.id} waited {rules.max_wait} for the freeze to lift: {why}"
            if await self._sleep(min(rules.poll, rules.max_wait)):
                return None

    async def acquire_slot(self, step: RenderedStep, dry: DryRun) -> str | None:
        """Take a slot of the target's rate-limit window, shared by all incidents; why not, if refused."""
        policy = self._policy()
        assert policy is not None
        target = dry.target_key
        limit = rate_limit_for(policy, step.action, target)
        if limit is None:
            return None
        grant: SlotGrant = await workflow.execute_activity(
            ACQUIRE_SLOT_ACTIVITY,
            SlotRequest(
                key=f"{workflow.info().workflow_id}/{step.id}",
                action=step.action,
                target=target,
                max=limit.max,
                per_s=limit.per.total_seconds(),
            ),
            result_type=SlotGrant,
            start_to_close_timeout=ENGINE_TIMEOUT,
            retry_policy=ENGINE_RETRY,
        )
        self._journal.record(
            "rate_limit" if grant.granted else "guard_refused",
            grant.reason,
            step=step.id,
            data=grant.model_dump(mode="json") | {"guard": "rate_limit"},
        )
        return None if grant.granted else grant.reason

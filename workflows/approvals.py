"""ApprovalGate: the one pending approval of an incident, and who may decide it.

Decisions arrive three ways: the `approve` / `reject` signals (what the Temporal UI and
Slack send, so their payload is parsed leniently and a bad one is recorded, never raised),
and the validated `decide` update (refused before it is written to history). All three end
in `accept`, so each path records and announces a decision the same way. The workflow owns
the durable wait; the gate only holds state and rules, which keeps it free of commands.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from remedium.errors import ErrorType
    from remedium.models import (
        Approval,
        ApprovalSignal,
        DecideRequest,
        DryRun,
        PendingApproval,
        Policy,
        RenderedStep,
        Stage,
    )
    from remedium.models.common import utc_text
    from workflows.journal import Journal

Via = Literal["signal", "update"]

# What the Temporal UI shows beside each handler: the payload the gate parses.
APPROVE_HELP = 'Approve the pending step. Data: {"by": "<your name>", "step": "<optional>", "reason": "..."}'
REJECT_HELP = 'Reject the pending step and escalate. Data: {"by": "<your name>", "reason": "..."}'
DECIDE_HELP = (
    "Approve or reject the pending step with validation. "
    'Data: {"decision": "approve"|"reject", "by": "<you>", "step": "<optional>", "reason": "..."}'
)


class ApprovalGate:
    """Pending request, verdict and the approvals so far; a plain object the workflow holds.

    Handlers run between the workflow's awaits, so everything here is synchronous: a
    decision only sets `verdict`, and the workflow's `wait_condition` notices it.
    """

    def __init__(
        self, journal: Journal, *, stage: Callable[[], Stage], policy: Callable[[], Policy | None]
    ) -> None:
        self.approvals: list[Approval] = []
        self.pending: PendingApproval | None = None
        self.verdict: Approval | None = None
        self._journal = journal
        self._stage = stage
        self._policy = policy

    # ------------------------------------------------------------ the request

    def open(self, step: RenderedStep, dry: DryRun) -> timedelta:
        """Make `step` the pending approval and say how long it may wait.

        The runbook step's own timeout wins over the policy's default; a verdict left over
        from an earlier step cannot count for this one.
        """
        policy = self._policy()
        assert policy is not None
        timeout = timedelta(seconds=step.approval_timeout_s or policy.approval.timeout.total_seconds())
        now = workflow.now()
        self.verdict = None
        self.pending = PendingApproval(
            step=step.id,
            action=step.action,
            risk=step.risk,
            dry_run=dry,
            requested_at=now,
            deadline=now + timeout,
            approvers=policy.approval.approvers,
        )
        self._journal.record(
            "approval_requested",
            f"step {step.id} waits for approval until {utc_text(self.pending.deadline)}",
            step=step.id,
        )
        return timeout

    def announce(self, step: RenderedStep, dry: DryRun) -> None:
        """Ask the channels for a decision (Slack shows the buttons); after the stage is set."""
        assert self.pending is not None
        self._journal.notify(
            "approval_requested",
            f"Approval needed for `{step.id}` ({step.action}, risk {step.risk}) "
            f"until {self.pending.deadline:%Y-%m-%d %H:%M} UTC",
            f"Would: {dry.summary}\n\nApprove: `remedium approve {workflow.info().workflow_id} "
            f"--step {step.id} --as <you>` or the Approve button.",
            step=step.id,
            action=step.action,
            risk=step.risk,
            dry_run=dry.summary,
        )

    def expire(self, step: RenderedStep, timeout: timedelta) -> None:
        """Nobody decided in time: a late approval must find nothing pending."""
        self.pending = None
        self._journal.record(
            "approval_timeout", f"no decision on step {step.id} within {timeout}", step=step.id
        )

    def take(self) -> Approval | None:
        """Close the request; None when it ended without a verdict (stopped upstream)."""
        verdict, self.pending, self.verdict = self.verdict, None, None
        return verdict

    # ------------------------------------------------------------ decisions

    def refusal(self, step: str | None, by: str | None) -> str | None:
        """Why a decision cannot be taken now, or None; shared by the signals and the update."""
        if not by:
            return 'an approval must say who decides: set "by" to your user name'
        if self.pending is None:
            return f"no approval is pending (stage {self._stage()})" + (
                f"; step {step!r} is not waiting" if step else ""
            )
        if step is not None and step != self.pending.step:
            return f"step {step!r} is not the pending step (pending: {self.pending.step!r})"
        policy = self._policy()
        assert policy is not None
        if not policy.approval.allows(by):
            return f"{by!r} may not approve: the policy allows {', '.join(policy.approval.approvers)}"
        return None

    def validate(self, request: DecideRequest) -> None:
        """The `decide` update's validator: a refused update writes nothing to history."""
        refusal = self.refusal(request.step, request.by)
        if refusal is not None:
            raise ApplicationError(refusal, type=ErrorType.APPROVAL_REFUSED, non_retryable=True)

    def decide(self, request: DecideRequest) -> str:
        """Apply a validated `decide` update; the answer is what the CLI prints."""
        step = self.resolve_step(request.step)
        self.accept(step, request.by, request.reason, request.decision == "approve", via="update")
        return f"step {step} {'approved' if request.decision == 'approve' else 'rejected'} by {request.by}"

    def resolve_step(self, step: str | None) -> str:
        """A decision that names no step is about the pending one."""
        assert self.pending is not None
        return step or self.pending.step

    def on_signal(self, payload: Any, approved: bool) -> None:
        """Parse an `approve` / `reject` signal; a signal cannot be refused, so a bad one is recorded."""
        verb = "approve" if approved else "reject"
        if payload is None:
            self._journal.record(
                "approval_ignored", f'{verb} signal with no data ignored: send {{"by": "<your name>"}}'
            )
            return
        try:
            signal = ApprovalSignal.model_validate(payload)
        except ValidationError as exc:
            self._journal.record(
                "approval_ignored",
                f"{verb} signal ignored: its data is not an approval ({exc.error_count()} problem(s): "
                f'{exc.errors()[0]["msg"]}); send {{"by": "<your name>"}}',
            )
            return
        refusal = self.refusal(signal.step, signal.by)
        if refusal is not None:
            self._journal.record(
                "approval_ignored",
                f"{verb} signal from {signal.by or 'nobody'} ignored: {refusal}",
                step=signal.step,
                actor=signal.by or "unknown",
            )
            return
        assert signal.by is not None
        self.accept(self.resolve_step(signal.step), signal.by, signal.reason, approved, via="signal")

    def accept(self, step: str, by: str, reason: str, approved: bool, via: Via) -> None:
        """Record the verdict the workflow is waiting for, and say who decided, everywhere."""
        approval = Approval(step=step, approved=approved, by=by, reason=reason, at=workflow.now(), via=via)
        self.approvals.append(approval)
        self.verdict = approval
        self._journal.record(
            "approved" if approved else "rejected",
            f"step {step} {'approved' if approved else 'rejected'} by {by} via {via}"
            + (f": {reason}" if reason else ""),
            step=step,
            actor=by,
        )
        self._journal.notify(
            "approval_decided",
            f"Step `{step}` {'approved' if approved else 'rejected'} by {by}"
            + (f": {reason}" if reason else ""),
            step=step,
            decision="approve" if approved else "reject",
            decided_by=by,
        )

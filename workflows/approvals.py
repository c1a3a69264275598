"""ApprovalGate: the one pending approval of an incident, who may decide it, and how sure we are.

Decisions arrive three ways: the `approve` / `reject` signals (what the Temporal UI sends, so
their payload is parsed leniently and a bad one is recorded, never raised), and the `decide`
update (the CLI, and Slack clicks through the ingress). Every decision is a `Claim`: who says
they decide, for which step and request, and through which channel. A claim is checked in one
place (`refusal`), and every refusal, from every channel, is an `approval_refused` audit entry
before the update answers with the reason (a validator could not record it).

Identity: a signal or a plain update names its sender, nobody proves it (`self-declared` in
the audit). A Slack click is verified by the worker (the `approval.verify_slack` activity,
which re-checks the raw request's signature), and its user id must map to an approver of the
policy, whose name is then used. `approval.require_verified` makes a risk level count only
verified approvals; `approval.quorum` makes a step wait for N distinct approvers. A policy
rule that requires approval (`workflows/rules.py`) sets `rule` before the request opens: its
quorum (when higher) and its approvers apply, and the request names the rule.

Binding: a decision must name the step, and may name the request number; a step is asked at
most once per incident, so a decision sent for one request can never approve a later one.
Histories recorded before that rule (a stepless signal approved whatever was pending) replay
unchanged behind `workflow.patched(STEP_REQUIRED)`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from remedium.errors import ErrorType
    from remedium.models import (
        Approval,
        ApprovalSignal,
        Channel,
        DecideRequest,
        DryRun,
        PendingApproval,
        Policy,
        RenderedStep,
        SlackVerification,
        Stage,
    )
    from remedium.models.common import utc_text
    from remedium.models.rules import RuleDecision
    from remedium.names import VERIFY_SLACK_ACTIVITY
    from workflows.journal import Journal
    from workflows.retries import ENGINE_RETRY, ENGINE_TIMEOUT, failure_message

# Patch ids (see the module docstring): keep them, histories carry them as markers.
STEP_REQUIRED = "approval-step-required-v1"
SLACK_VERIFIED = "approval-slack-verified-v1"

# What the Temporal UI shows beside each handler: the payload the gate parses.
APPROVE_HELP = (
    "Approve the pending step. "
    'Data: {"step": "<the pending step>", "by": "<your name>", "request": <its number>, "reason": "..."}'
)
REJECT_HELP = (
    "Reject the pending step and escalate. "
    'Data: {"step": "<the pending step>", "by": "<your name>", "reason": "..."}'
)
DECIDE_HELP = (
    "Approve or reject the pending step; a refusal answers with its reason. "
    'Data: {"decision": "approve"|"reject", "step": "<the pending step>", "by": "<you>", "reason": "..."}'
)

Decision = Literal["approve", "reject"]


@dataclass
class Claim:
    """One decision as it arrived: what it says, through which channel, and what was proved."""

    decision: Decision
    by: str | None
    step: str | None
    reason: str
    channel: Channel
    request: int | None = None
    verified: str | None = None  # the Slack user id the worker verified
    data: dict[str, Any] = field(default_factory=dict)  # extra audit detail (e.g. the claimed user)

    @property
    def approved(self) -> bool:
        return self.decision == "approve"

    @property
    def how(self) -> str:
        """`via slack (verified U0BOB)` or `via signal, self-declared`: what the audit says."""
        if self.verified:
            return f"via {self.channel} (verified {self.verified})"
        return f"via {self.channel}, self-declared"


class ApprovalGate:
    """Pending request, verdict and the approvals so far; a plain object the workflow holds.

    Handlers run between the workflow's awaits, so the rules here are synchronous: a decision
    only sets `verdict`, and the workflow's `wait_condition` notices it. The one await of a
    decision (verifying a Slack click) happens in the workflow's update handler, before
    `decide` is called with its result.
    """

    def __init__(
        self, journal: Journal, *, stage: Callable[[], Stage], policy: Callable[[], Policy | None]
    ) -> None:
        self.approvals: list[Approval] = []
        self.pending: PendingApproval | None = None
        self.verdict: Approval | None = None
        self._requests = 0
        self.rule: RuleDecision | None = None  # a policy rule's requirement for the next request
        self._journal = journal
        self._stage = stage
        self._policy = policy

    # ------------------------------------------------------------ the request

    def open(self, step: RenderedStep, dry: DryRun) -> timedelta:
        """Make `step` the pending approval (request number n+1) and say how long it may wait.

        The runbook step's own timeout wins over the policy's default; a verdict left over
        from an earlier step cannot count for this one.
        """
        policy = self._policy()
        assert policy is not None
        rules = policy.approval
        timeout = timedelta(seconds=step.approval_timeout_s or rules.timeout.total_seconds())
        now = workflow.now()
        self._requests += 1
        self.verdict = None
        rule, self.rule = self.rule, None
        self.pending = PendingApproval(
            step=step.id,
            action=step.action,
            risk=step.risk,
            dry_run=dry,
            requested_at=now,
            deadline=now + timeout,
            approvers=(rule.approvers if rule and rule.approvers else rules.names()),
            request=self._requests,
            quorum=max(rules.quorum_for(step.risk), rule.quorum if rule else 1),
            verified_only=rules.verified_only(step.risk),
            rule=rule.rule if rule else None,
        )
        needs = []
        if self.pending.quorum > 1:
            needs.append(f"{self.pending.quorum} distinct approvers")
        if self.pending.verified_only:
            needs.append("approvals from a verified channel (Slack)")
        self._journal.record(
            "approval_requested",
            f"step {step.id} waits for approval until {utc_text(self.pending.deadline)}"
            + (f"; it needs {' and '.join(needs)}" if needs else "")
            + (f" (policy rule {rule.rule})" if rule else ""),
            step=step.id,
            data={
                "request": self.pending.request,
                "quorum": self.pending.quorum,
                "verified_only": self.pending.verified_only,
                **({"rule": rule.rule, "approvers": self.pending.approvers} if rule else {}),
            },
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
            request=self.pending.request,
            action=step.action,
            risk=step.risk,
            dry_run=dry.summary,
        )

    def expire(self, step: RenderedStep, timeout: timedelta) -> None:
        """Nobody decided in time: a late approval must find nothing pending."""
        approved = self.pending.approved_by if self.pending is not None else []
        self.pending = None
        self._journal.record(
            "approval_timeout",
            f"no decision on step {step.id} within {timeout}"
            + (f" (approved by {', '.join(approved)}, not enough)" if approved else ""),
            step=step.id,
        )

    def take(self) -> Approval | None:
        """Close the request; None when it ended without a verdict (stopped upstream)."""
        verdict, self.pending, self.verdict = self.verdict, None, None
        return verdict

    # ------------------------------------------------------------ decisions

    def on_signal(self, payload: Any, approved: bool) -> None:
        """Parse an `approve` / `reject` signal; a signal cannot answer, so a refusal is only audited."""
        decision: Decision = "approve" if approved else "reject"
        if payload is None:
            self._refused(
                Claim(decision, None, None, "", "signal"),
                f"it has no data: send {self._example(None)}",
            )
            return
        try:
            signal = ApprovalSignal.model_validate(payload)
        except ValidationError as exc:
            by = payload.get("by") if isinstance(payload, dict) else None
            self._refused(
                Claim(decision, by if isinstance(by, str) else None, None, "", "signal"),
                f"its data is not an approval ({exc.error_count()} problem(s): "
                f"{exc.errors()[0]['msg']}); send {self._example(None)}",
            )
            return
        claim = Claim(decision, signal.by, signal.step, signal.reason, "signal", request=signal.request)
        refusal = self.refusal(claim)
        if refusal is not None:
            self._refused(claim, refusal)
            return
        self.accept(claim)

    async def verify_slack(self, request: DecideRequest) -> SlackVerification | None:
        """The worker re-checks a Slack click's signature: the update's sender is not trusted."""
        if request.slack is None or not workflow.patched(SLACK_VERIFIED):
            return None
        try:
            verified: SlackVerification = await workflow.execute_activity(
                VERIFY_SLACK_ACTIVITY,
                request.slack,
                result_type=SlackVerification,
                start_to_close_timeout=ENGINE_TIMEOUT,
                retry_policy=ENGINE_RETRY,
            )
        except ActivityError as err:
            return SlackVerification(
                ok=False, reason=f"the Slack click could not be verified: {failure_message(err)}"
            )
        return verified

    def decide(self, request: DecideRequest, slack: SlackVerification | None = None) -> str:
        """The `decide` update: check, then accept or record the refusal and raise it.

        `slack` is the worker's verification of the click the update carries (None when it
        carries none). The answer is what the CLI prints and Slack shows.
        """
        claim = Claim(
            request.decision,
            request.by,
            request.step,
            request.reason,
            "update",
            request=request.request,
        )
        if request.slack is not None:
            claim, refusal = self._slack_claim(claim, slack)
        else:
            refusal = None
        refusal = refusal or self.refusal(claim)
        if refusal is not None:
            self._refused(claim, refusal)
            raise ApplicationError(refusal, type=ErrorType.APPROVAL_REFUSED, non_retryable=True)
        return self.accept(claim)

    def _slack_claim(self, claim: Claim, slack: SlackVerification | None) -> tuple[Claim, str | None]:
        """The claim a verified Slack click makes: the user, step and request come from the click.

        Whatever else the update says (its `by`, `step`) is not trusted: only what the signed
        body names counts, and the approver is the one the policy maps the Slack user id to.
        """
        claim.channel = "slack"
        claim.data["slack_user_claimed"] = claim.by
        if slack is None:
            return claim, "this incident cannot verify Slack clicks (it started before they were verified)"
        if not slack.ok:
            return claim, slack.reason
        claim.data["slack_user"] = slack.user_id
        claim.step, claim.request = slack.step, slack.request
        claim.decision = slack.decision or claim.decision
        claim.by = slack.username or slack.user_id
        here = workflow.info().workflow_id
        if slack.workflow_id != here:
            return claim, f"the Slack click is for {slack.workflow_id}, not {here}"
        policy = self._policy()
        assert policy is not None
        approver = policy.approval.slack_approver(slack.user_id)
        if approver is None:
            mapped = [
                a.name for a in policy.approval.approvers if not isinstance(a, str) and a.slack is not None
            ]
            return claim, (
                f"Slack user {slack.user_id} ({slack.username or 'no username'}) is not an approver: "
                "the policy maps no approver to that Slack user id"
                + (f" (mapped: {', '.join(mapped)})" if mapped else " (it maps none)")
            )
        claim.by, claim.verified = approver, slack.user_id
        return claim, None

    def refusal(self, claim: Claim) -> str | None:
        """Why a claim cannot be taken now, or None; the one set of rules for every channel."""
        by = claim.by
        if not by:
            return 'an approval must say who decides: set "by" to your user name'
        pending = self.pending
        if pending is None:
            return f"no approval is pending (stage {self._stage()})" + (
                f"; step {claim.step!r} is not waiting" if claim.step else ""
            )
        if self.verdict is not None:
            done = "approved" if self.verdict.approved else "rejected"
            return f"step {pending.step} is already decided ({done})"
        policy = self._policy()
        assert policy is not None
        if claim.verified is None and not policy.approval.allows(by):
            return f"{by!r} may not approve: the policy allows {', '.join(policy.approval.names())}"
        if pending.rule is not None and "*" not in pending.approvers and by not in pending.approvers:
            return f"{by!r} may not approve step {pending.step}: policy rule {pending.rule} allows only " + (
                ", ".join(pending.approvers)
            )
        if claim.step is None:
            if workflow.patched(STEP_REQUIRED):
                return f"it names no step; the pending step is {json.dumps(pending.step)}: " + (
                    f"send {self._example(by)}"
                    if claim.channel == "signal"
                    else f"remedium {claim.decision} {workflow.info().workflow_id} --step {pending.step} "
                    f"--as {by}"
                )
            claim.step = pending.step  # recorded before the rule: the pending step, as it was
        if claim.step != pending.step:
            return f"step {claim.step!r} is not the pending step (pending: {pending.step!r})"
        if claim.request is not None and claim.request != pending.request:
            return (
                f"approval request {claim.request} is closed; the pending one is request "
                f"{pending.request} (step {pending.step!r})"
            )
        if claim.approved and pending.verified_only and claim.verified is None:
            return (
                f"step {pending.step} (risk {pending.risk}) needs an approval from a verified channel: "
                f"{by}'s approval {claim.how} does not count; approve with the Slack button as an "
                "approver the policy maps to a Slack user id"
            )
        if claim.approved and by in pending.approved_by:
            return (
                f"{by} already approved step {pending.step}; it needs {pending.quorum} distinct "
                f"approvers ({len(pending.approved_by)} of {pending.quorum} approvals)"
            )
        return None

    def accept(self, claim: Claim) -> str:
        """Count the approval, or reject; set the verdict once the step is decided, say so everywhere."""
        pending = self.pending
        assert pending is not None and claim.by is not None and claim.step is not None
        step, by = claim.step, claim.by
        approval = Approval(
            step=step,
            approved=claim.approved,
            by=by,
            reason=claim.reason,
            at=workflow.now(),
            via=claim.channel,
            verified=claim.verified,
            request=pending.request,
        )
        self.approvals.append(approval)
        verb = "approved" if claim.approved else "rejected"
        count = ""
        if claim.approved:
            pending.approved_by.append(by)
            if pending.quorum > 1:
                count = f" ({len(pending.approved_by)} of {pending.quorum} approvals)"
        decided = not claim.approved or len(pending.approved_by) >= pending.quorum
        self._journal.record(
            verb,
            f"step {step} {verb} by {by} {claim.how}{count}" + (f": {claim.reason}" if claim.reason else ""),
            step=step,
            actor=by,
            data={
                "channel": claim.channel,
                "verified": claim.verified,
                "request": pending.request,
                "approvals": list(pending.approved_by),
                "quorum": pending.quorum,
                **claim.data,
            },
        )
        if not decided:
            missing = pending.quorum - len(pending.approved_by)
            return f"step {step} approved by {by}{count}: waiting for {missing} more"
        self.verdict = approval
        deciders = ", ".join(pending.approved_by) if claim.approved else by
        self._journal.notify(
            "approval_decided",
            f"Step `{step}` {verb} by {deciders}" + (f": {claim.reason}" if claim.reason else ""),
            step=step,
            request=pending.request,
            decision=claim.decision,
            decided_by=deciders,
        )
        return f"step {step} {verb} by {by}{count}"

    # ------------------------------------------------------------ refusals

    def _refused(self, claim: Claim, reason: str) -> None:
        """Every refusal is on record: who claimed, through which channel, and why not."""
        who = claim.by or "nobody"
        if claim.channel == "signal":
            message = f"{claim.decision} signal from {who} ignored: {reason}"
        else:
            message = f"{claim.decision} by {who} via {claim.channel} refused: {reason}"
        self._journal.record(
            "approval_refused",
            message,
            step=claim.step,
            actor=claim.by or "unknown",
            data={
                "channel": claim.channel,
                "decision": claim.decision,
                "reason": reason,
                "request": claim.request,
                **claim.data,
            },
        )

    def _example(self, by: str | None) -> str:
        """The exact signal data to send for the pending request (or a template without one)."""
        body: dict[str, Any] = {}
        if self.pending is not None:
            body["step"] = self.pending.step
        body["by"] = by or "<your name>"
        return json.dumps(body)

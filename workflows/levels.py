"""The incident's side of earned autonomy: which level it runs at, what that level lets it do.

With a `trust` section in the policy, once a runbook is chosen the incident asks the runbook's
entity (workflows/autonomy.py) for its standing, records the `autonomy` audit entry (the level
and why), and from then on the level, not the step's risk list, says which state-changing steps
wait for a human:

- advisory: every one (the human's decision is the agreement the record measures);
- supervised: those above `supervised_max_risk`; a `review_sample` share of incidents is
  flagged for post-hoc review (`remedium review`), chosen by a hash of the workflow id;
- conditional: high-risk ones; full: none.

The global `autonomy` switch stays above all levels (approve_all holds every runbook at
advisory; dry_run_only is refused by the guardrails before any approval), and the guardrails'
forced approvals still apply on top. When it ends, the incident reports its outcome and the
events the record demotes on; the entity counts each incident id once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from remedium.models import ActionResult, Approval, Outcome, Policy, RenderedStep
    from remedium.models.trust import DemoteEvent, Level, OutcomeReport, Standing, StandingRequest
    from remedium.names import AUTONOMY_REPORT_ACTIVITY, AUTONOMY_STANDING_ACTIVITY
    from workflows.journal import Journal
    from workflows.retries import ENGINE_RETRY, ENGINE_TIMEOUT, failure_message

PATCH = "autonomy-v1"
RISK_RANK = {"low": 0, "medium": 1, "high": 2}


def sampled(workflow_id: str, share: float) -> bool:
    """Deterministic sampling: the same incident is always in (or out of) the review sample."""
    if share <= 0:
        return False
    digest = hashlib.sha256(workflow_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


def level_needs_approval(step: RenderedStep, level: Level, max_risk: str) -> bool:
    """Whether a level makes this step wait for a human (before the guardrails' own reasons)."""
    if not step.state_changing:
        return False
    if level == "advisory":
        return True
    if level == "supervised":
        return RISK_RANK[step.risk] > RISK_RANK[max_risk]
    if level == "conditional":
        return step.risk == "high"
    return False


class IncidentAutonomy:
    """The level this incident runs at (None without `trust`), and its report at the end."""

    def __init__(self, journal: Journal, policy: Callable[[], Policy | None]) -> None:
        self._journal = journal
        self._policy = policy
        self.level: Level | None = None
        self.why = ""
        self.review = False
        self._runbook = ""

    async def begin(self, runbook: str) -> Level | None:
        """After the decision: the runbook's standing, as the audit's `autonomy` entry says."""
        policy = self._policy()
        if policy is None or policy.trust is None or not workflow.patched(PATCH):
            return None
        try:
            standing: Standing = await workflow.execute_activity(
                AUTONOMY_STANDING_ACTIVITY,
                StandingRequest(runbook=runbook, incident_id=workflow.info().workflow_id, trust=policy.trust),
                result_type=Standing,
                start_to_close_timeout=ENGINE_TIMEOUT,
                retry_policy=ENGINE_RETRY,
            )
        except ActivityError as err:  # no record to read: the safest level, never a guess upwards
            why = (
                f"the runbook's record could not be read ({failure_message(err)}): advisory, the safest level"
            )
            standing = Standing(level="advisory", why=why, cap=policy.trust.cap_for(runbook))
        level, why = standing.level, standing.why
        if policy.autonomy == "approve_all" and level != "advisory":
            level, why = "advisory", f"{why}; policy autonomy approve_all holds every runbook at advisory"
        elif policy.autonomy == "dry_run_only":
            why += "; policy autonomy dry_run_only: no step acts, whatever the level"
        self._runbook, self.level, self.why = runbook, level, why
        self.review = level == "supervised" and sampled(
            workflow.info().workflow_id, policy.trust.review_sample
        )
        self._journal.record(
            "autonomy",
            f"runbook {runbook} runs at level {level} (cap {standing.cap}): {why}"
            + ("; flagged for post-hoc review (trust.review_sample)" if self.review else ""),
            data={"level": level, "cap": standing.cap, "review": self.review},
        )
        if self.review:
            self._journal.notify(
                "diagnosis",
                f"Autonomy: runbook {runbook} acts at level supervised; this incident is sampled for "
                f"review: `remedium review {workflow.info().workflow_id} --verdict good|bad --as <you>`",
            )
        return level

    def needs_approval(self, step: RenderedStep, level: str | None) -> bool:
        """The one place that says whether a step waits for a human, given the incident's level."""
        policy = self._policy()
        if level is None or policy is None or policy.trust is None:
            return step.approval_required
        needed = step.approval_by_runbook or level_needs_approval(
            step, self.level or "advisory", policy.trust.supervised_max_risk
        )
        if step.state_changing and needed != step.approval_required:
            self._journal.record(
                "autonomy",
                f"step {step.id} (risk {step.risk}) "
                + ("waits for a human" if needed else "runs without asking")
                + f" at level {level}",
                step=step.id,
                data={"level": level, "approval": needed},
            )
        return needed

    async def report(self, outcome: Outcome, actions: list[ActionResult], approvals: list[Approval]) -> None:
        """Tell the runbook's record how this incident went; a failed report is audited, not fatal."""
        policy = self._policy()
        if self.level is None or policy is None or policy.trust is None:
            return
        events = self._events(outcome, actions, approvals)
        decided = [a.approved for a in approvals]
        report = OutcomeReport(
            incident_id=workflow.info().workflow_id,
            runbook=self._runbook,
            level=self.level,
            outcome=outcome,
            events=events,
            agreement=(all(decided) if decided else None) if self.level == "advisory" else None,
            trust=policy.trust,
        )
        try:
            await workflow.execute_activity(
                AUTONOMY_REPORT_ACTIVITY,
                report,
                start_to_close_timeout=ENGINE_TIMEOUT,
                retry_policy=ENGINE_RETRY,
            )
        except ActivityError as err:
            self._journal.record("autonomy", f"outcome not reported to the record: {failure_message(err)}")
            return
        self._journal.record(
            "autonomy",
            f"outcome {outcome} at level {self.level} reported to runbook {self._runbook}'s record"
            + (f" (events: {', '.join(events)})" if events else ""),
            data={"events": list(events), "agreement": report.agreement},
        )

    def _events(
        self, outcome: Outcome, actions: list[ActionResult], approvals: list[Approval]
    ) -> list[DemoteEvent]:
        kinds = {e.kind for e in self._journal.entries}
        verdicts = [e.data.get("state") for e in self._journal.entries if e.kind == "evaluation"]
        events: list[DemoteEvent] = []
        if kinds & {"rolled_back", "rollback_failed"}:
            events.append("rollback")
        if outcome == "rejected" or any(not a.approved for a in approvals):
            events.append("rejection")
        if any(v != "resolved" for v in verdicts):
            events.append("verify_failed")
        if outcome == "escalated" and actions:
            events.append("escalated_after_action")
        return events

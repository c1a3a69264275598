"""PolicyRules: the policy's `rules` decide a step after its dry run and the guardrails.

Only a policy with rules schedules the `policy.rules` activity (one per state-changing step,
behind the `policy-rules-v1` patch), so incidents under a policy without rules make exactly
the commands they made before. The decision, with the id of the rule that fired, is an audit
entry; `deny` refuses the step (`guard_refused`, and the incident escalates), `require_approval`
makes it wait for the rule's quorum (the ApprovalGate's machinery, with the rule id on the
request), `allow` lifts the policy's risk-based approval (`approval.required_for`). What else
asks for a human still does: the runbook step's own `approval.required`, the guardrails
(`autonomy: approve_all`, `always_approve`) and the autonomy level. A rule that cannot be
evaluated at all (the activity fails) refuses the step: a policy is never skipped.
"""

from __future__ import annotations

from collections.abc import Callable

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from remedium.guards import approval_forced
    from remedium.models import DryRun, IncidentStatus, Policy, RenderedStep, Runbook
    from remedium.models.rule_request import RuleRequest
    from remedium.models.rules import RuleDecision
    from remedium.names import POLICY_RULES_ACTIVITY
    from workflows.approvals import ApprovalGate
    from workflows.journal import Journal
    from workflows.retries import ENGINE_RETRY, ENGINE_TIMEOUT, Abort, failure_message

# Patch id: histories carry it as a marker where rules were evaluated.
POLICY_RULES = "policy-rules-v1"


class PolicyRules:
    """Asks the worker which rule fires for a step, and applies the effect."""

    def __init__(
        self,
        journal: Journal,
        gate: ApprovalGate,
        policy: Callable[[], Policy | None],
        runbook: Callable[[], Runbook | None],
    ) -> None:
        self._journal = journal
        self._gate = gate
        self._policy = policy
        self._runbook = runbook

    def active(self) -> bool:
        policy = self._policy()
        return policy is not None and bool(policy.rules)

    async def approval(
        self, step: RenderedStep, dry: DryRun, needs_approval: bool, status: IncidentStatus
    ) -> bool:
        """Whether the step waits for a human once the rules have spoken; Abort when one denies.

        `status` is the incident as its `status` query shows it: alert, facts, level.
        """
        policy, runbook = self._policy(), self._runbook()
        assert policy is not None
        request = RuleRequest(
            rules=policy.rules,
            step=step,
            dry_run=dry,
            alert=status.alert,
            facts=status.facts,
            runbook=runbook.name if runbook else None,
            level=status.level,
            now=workflow.now(),
        )
        try:
            decision: RuleDecision = await workflow.execute_activity(
                POLICY_RULES_ACTIVITY,
                request,
                result_type=RuleDecision,
                start_to_close_timeout=ENGINE_TIMEOUT,
                retry_policy=ENGINE_RETRY,
            )
        except ActivityError as err:
            why = f"the policy rules could not be evaluated for step {step.id}: {failure_message(err)}"
            self._journal.record("guard_refused", why, step=step.id, data={"guard": "policy_rules"})
            raise Abort(why) from None
        self._journal.record(
            "policy_rule",
            decision.reason,
            step=step.id,
            data={"rule": decision.rule, "effect": decision.effect, "quorum": decision.quorum},
        )
        if decision.effect == "deny":
            self._journal.record(
                "guard_refused",
                f"step {step.id} refused by policy rule {decision.rule}",
                step=step.id,
                data={"guard": "policy_rule", "rule": decision.rule},
            )
            raise Abort(f"refused by policy rule {decision.rule}: {decision.reason}")
        if decision.effect == "require_approval":
            self._gate.rule = decision
            return True
        if decision.effect == "allow" and status.level is None:
            return _asked_anyway(policy, step, runbook)
        return needs_approval


def _asked_anyway(policy: Policy, step: RenderedStep, runbook: Runbook | None) -> bool:
    """What still asks for a human when a rule allows: the runbook step itself, or a guardrail."""
    spec = next((s for s in runbook.plan if s.id == step.id), None) if runbook else None
    return (spec is not None and spec.approval.required) or approval_forced(policy, step) is not None

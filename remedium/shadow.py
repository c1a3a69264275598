"""Shadow replay: what a changed runbook (or policy) would have decided on incidents we already had.

Every input an incident's decisions were made from is in its Temporal history: the alert
(the workflow input), the facts at decision time (`runbook.decide`'s input) and at each verify
round (`runbook.verify`'s input), the dry runs, the rate-limit and freeze answers, the humans'
approvals (the audit trail handed to `incident.report`). remedium.recorded_incident reads
them back; this module runs the product's own decision code on them again — matching and
vars (`engine.candidates`, `render_alert_vars`), `engine.decide` (which renders the plan),
the guardrails' pure checks (`workflows.guardrails.Guardrails.refusal` / `forces_approval`,
`remedium.guards`), and `engine.judge` per recorded round — so a later change to any of
them is picked up here too.
Nothing is run against the world: no activity, no network. What the new runbook would need
and the history does not hold (a fact never collected, a dry run of a new step, a human's
answer to an approval nobody was asked for) is said as such, never guessed.

How the incident would have ended is walked in the workflow's order (decide, then per step
guardrails, policy rules, approval, freeze, rate limit, execution, then verification); an
upstream close stops the shadow where it stopped the recording.

An LLM investigation's replies are recorded facts: the model is never called again. Its
finding (from the audit) and proposal are taken as they were; what the library makes of the
proposal is re-run on the new runbooks (the `llm.propose` check, a pure function of the
library and the alert) and the proposed runbook is decided as the workflow does, at the
advisory policy where every step asks. The breaker is reported in its recorded state only.
With `trust` in the policy, the level is the recorded `autonomy.standing` answer (capped by
the new policy) and `workflows.levels.level_needs_approval` says which steps ask; policy
`rules` are evaluated by `remedium.rules.decide_rules` on the recorded dry runs at the
incident's recorded time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio import workflow

from activities.llm import LlmActivities, LlmSettings
from remedium.errors import ShadowError
from remedium.guards import approval_forced, rate_limit_for
from remedium.models import (
    Alert,
    DecideInput,
    DryRun,
    Policy,
    RenderedStep,
    Runbook,
    RunbookDecision,
    VerifyRequest,
    VerifyVerdict,
)
from remedium.models.llm import ProposalRequest
from remedium.models.rule_request import RuleRequest
from remedium.models.rules import RuleDecision
from remedium.models.trust import Level, lowest
from remedium.recorded_incident import UNKNOWN, Recording, load_history_file, read_history
from remedium.rules import decide_rules
from remedium.runbook import engine
from remedium.settings import Settings

with workflow.unsafe.imports_passed_through():
    from workflows.guardrails import Guardrails
    from workflows.investigation import advisory
    from workflows.journal import Journal
    from workflows.levels import level_needs_approval
    from workflows.rules import _asked_anyway

__all__ = ["ShadowError", "ShadowResult", "load_history_file", "read_history", "shadow_file"]

# ------------------------------------------------------------------ the decisions, comparable


@dataclass
class StepView:
    id: str
    action: str
    params: dict[str, Any]
    skipped: str | None
    approval: bool
    approval_why: list[str]


@dataclass
class Decisions:
    """One side of the comparison: what was (or would be) decided, in the terms the diff speaks."""

    runbook: str | None
    reason: str
    steps: list[StepView] = field(default_factory=list)
    refusals: dict[str, tuple[str, str]] = field(default_factory=dict)  # step -> (guard, message)
    verdicts: list[VerifyVerdict] = field(default_factory=list)
    outcome: str = UNKNOWN
    outcome_reason: str = ""
    cause: str = ""  # where it ended: decision, guard:<kind>:<step>, approval:<answer>:<step>, ...
    reached: set[str] = field(default_factory=set)  # steps whose guardrails were all checked
    escalate: str | None = None  # the escalate.when condition that held after diagnosis
    level: str | None = None  # the autonomy level the steps' approvals follow (None: no trust)
    proposal: str | None = None  # an investigation's proposal: the runbook, or why it was refused
    breaker: str | None = None  # the investigation's breaker, as recorded (never re-modelled)
    denied: dict[str, str] = field(default_factory=dict)  # step -> the policy rule that denies it


@dataclass
class ShadowResult:
    path: Path
    workflow_id: str
    diff: list[str]
    needs: list[str]
    recorded: Decisions
    shadow: Decisions

    @property
    def same(self) -> bool:
        return not self.diff and not self.needs

    def as_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "workflow_id": self.workflow_id,
            "same": self.same,
            "diff": self.diff,
            "needs": self.needs,
            "recorded": _summary(self.recorded),
            "shadow": _summary(self.shadow),
        }


def _summary(view: Decisions) -> dict[str, Any]:
    summary: dict[str, Any] = {"runbook": view.runbook, "outcome": view.outcome}
    if view.level is not None:
        summary["level"] = view.level
    if view.breaker is not None:  # an investigation ran: its breaker and proposal, as recorded
        summary["investigation"] = {"breaker": view.breaker, "proposal": view.proposal}
    return summary


class _Notes(Journal):
    """A journal that only keeps what the guardrails would have said (no workflow clock, no outbox)."""

    def __init__(self, alert: Alert) -> None:
        super().__init__(alert, lambda: "acting")
        self.said: list[tuple[str, str, dict[str, Any]]] = []

    def record(
        self,
        kind: str,
        message: str,
        *,
        step: str | None = None,
        actor: str = "remedium",
        data: dict[str, Any] | None = None,
    ) -> None:
        self.said.append((kind, message, data or {}))


async def _never(_: Any) -> bool:
    return True


def _guardrails(alert: Alert, policy: Policy) -> tuple[Guardrails, _Notes]:
    notes = _Notes(alert)
    return Guardrails(notes, lambda: policy, set_stage=lambda _: None, sleep=_never), notes


def _approval(
    step: RenderedStep,
    runbook: Runbook | None,
    policy: Policy,
    alert: Alert,
    level: str | None = None,
    rule: RuleDecision | None = None,
) -> tuple[bool, list[str]]:
    """Whether the step waits for a human and why, from the same rules the workflow applies:
    the level (or the step's risk list), then the guardrails' forced approvals, then the rules."""
    if not step.state_changing:
        return False, []
    guards, _ = _guardrails(alert, policy)
    forced = guards.forces_approval(step)
    why = []
    if level is not None and policy.trust is not None:
        max_risk = policy.trust.supervised_max_risk
        by_level = level_needs_approval(step, level, max_risk)  # type: ignore[arg-type]
        needed = step.approval_by_runbook or by_level
        if step.approval_by_runbook:
            why.append("the runbook asks for approval")
        if by_level:
            why.append(
                f"level {level} asks for {step.risk}-risk steps"
                + (f" (supervised_max_risk {max_risk})" if level == "supervised" else "")
            )
    else:
        needed = step.approval_required
        spec = next((s for s in runbook.plan if s.id == step.id), None) if runbook is not None else None
        if step.approval_required:
            if spec is not None and spec.approval.required:
                why.append("the runbook asks for approval")
            if step.risk in policy.approval.required_for:
                why.append(f"the policy asks for {step.risk}-risk steps")
    if forced:
        why.append(approval_forced(policy, step) or "the policy forces it")
    needed = needed or forced
    if rule is not None and rule.rule is not None:
        if rule.effect == "require_approval":
            return True, [*why, f"policy rule {rule.rule} requires {rule.quorum} approver(s)"]
        if rule.effect == "allow" and level is None:
            asked = _asked_anyway(policy, step, runbook)
            return asked, [
                f"policy rule {rule.rule} allows it, but the runbook or a guardrail asks"
            ] if asked else []
    return needed, why


def _level(rec: Recording, policy: Policy, runbook: str | None) -> tuple[str | None, str | None]:
    """The level the steps' approvals follow under `policy`: the recorded standing (the
    runbook's record is a fact of that moment), capped by the policy; and what is missing."""
    if policy.trust is None or runbook is None:
        return None, None
    asked = rec.standing_for
    if asked is None or asked.runbook != runbook:
        missing = f"needs the autonomy standing of runbook {runbook}, not in the history"
        return "advisory", missing + " (advisory assumed)"
    recorded: Level = rec.standing.level if rec.standing is not None else "advisory"  # unread: advisory
    level = lowest(recorded, policy.trust.cap_for(runbook))
    if policy.autonomy == "approve_all":
        level = "advisory"
    return level, None


def _recorded_level(rec: Recording, policy: Policy, runbook: str | None) -> str | None:
    """The level the recording ran at (None when it never asked: no trust, or before autonomy-v1)."""
    if rec.standing_for is None:
        return None
    return _level(rec, policy, runbook)[0]


def _rule(
    rec: Recording,
    policy: Policy,
    step: RenderedStep,
    dry: DryRun | None,
    facts: dict[str, Any],
    runbook: str | None,
    level: str | None,
) -> RuleDecision | None:
    """The policy rules' decision for a step, on its recorded dry run at the incident's recorded
    time (the time the rules were asked, else the dry run's); None without rules or dry run."""
    if not policy.rules or dry is None or not step.state_changing:
        return None
    asked = rec.rule_requests.get(step.id)
    now = asked.now if asked is not None else rec.dry_run_at.get(step.id) or rec.started_at
    if now is None:
        return None
    request = RuleRequest(
        rules=policy.rules,
        step=step,
        dry_run=dry,
        alert=rec.alert,
        facts=asked.facts if asked is not None else facts,
        runbook=runbook,
        level=level,
        now=now,
    )
    return decide_rules(request)


def _steps(
    rec: Recording,
    decision: RunbookDecision,
    runbook: Runbook | None,
    policy: Policy,
    facts: dict[str, Any],
    level: str | None,
) -> tuple[list[StepView], dict[str, str]]:
    """Each step's approval, and the steps a policy rule denies (on the recorded dry runs of
    the same step with the same params: another step has no dry run to judge)."""
    views, denied = [], {}
    recorded = {s.id: s for s in rec.decision.steps} if rec.decision is not None else {}
    for step in decision.steps:
        before = recorded.get(step.id)
        same = before is not None and (before.action, before.params) == (step.action, step.params)
        dry = rec.dry_runs.get(step.id) if same else None
        rule = _rule(rec, policy, step, dry, facts, decision.runbook, level)
        if rule is not None and rule.effect == "deny" and rule.rule is not None:
            denied[step.id] = rule.rule
        approval, why = _approval(step, runbook, policy, rec.alert, level, rule)
        views.append(StepView(step.id, step.action, step.params, step.skip_reason, approval, why))
    return views, denied


def _recorded_policy(rec: Recording) -> Policy:
    """The policy the decisions were made under: an investigated incident's proposal ran at the
    advisory policy the decide input carries."""
    if rec.investigated and rec.decide_input is not None:
        return rec.decide_input.policy
    return rec.prepared.policy if rec.prepared is not None else Policy()


def _proposal(rec: Recording) -> str | None:
    if rec.proposed is None:
        return None
    if rec.proposed.runbook is None:
        return f"refused ({rec.proposed.refused})"
    return rec.proposed.runbook.name


def recorded_decisions(rec: Recording) -> Decisions:
    """What the incident decided, read from its history (the guard refusals from its audit trail)."""
    policy = _recorded_policy(rec)
    decision = rec.decision
    if decision is None:
        reason = rec.report.reason if rec.report is not None else "no decision recorded"
        view = Decisions(runbook=None, reason=reason)
    else:
        candidates = rec.prepared.candidates if rec.prepared else []
        if rec.decide_input is not None:
            candidates = rec.decide_input.candidates
        runbook = _runbook(candidates, decision.runbook)
        level = _recorded_level(rec, policy, decision.runbook)
        facts = dict(rec.decide_input.facts) if rec.decide_input is not None else dict(rec.diagnosed)
        steps, _ = _steps(rec, decision, runbook, policy, facts, level)
        view = Decisions(
            runbook=decision.runbook,
            reason=decision.reason,
            steps=steps,
            escalate=_escalate(decision),
            level=level,
        )
    view.proposal, view.breaker = _proposal(rec), rec.breaker
    for entry in rec.audit:
        if entry.kind == "guard_refused" and entry.step is not None:
            view.refusals[entry.step] = (str(entry.data.get("guard", "guard")), entry.message)
    view.verdicts = [verdict for _, verdict in rec.rounds]
    view.outcome = rec.outcome
    view.outcome_reason = rec.report.reason if rec.report is not None else "the incident is still open"
    view.cause = recorded_cause(rec, view)
    view.reached = set(rec.dry_runs)
    return view


def _runbook(runbooks: list[Runbook], name: str | None) -> Runbook | None:
    return next((rb for rb in runbooks if rb.name == name), None)


# ------------------------------------------------------------------ the shadow run


@dataclass
class _Shadow:
    rec: Recording
    runbooks: list[Runbook]
    policy: Policy
    needs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # differences the diff cannot show as decisions

    def need(self, text: str) -> None:
        if text not in self.needs:
            self.needs.append(text)

    def _changed_diagnostics(self, runbooks: list[Runbook]) -> None:
        """A diagnostic whose entry changed would have collected another fact; the shadow has only
        the recorded one, so it says it reuses it (facts are never re-collected)."""
        recorded = {rb.name: rb for rb in (self.rec.prepared.candidates if self.rec.prepared else [])}
        for rb in runbooks:
            old = recorded.get(rb.name)
            if old is None:
                continue
            before = {spec.id: spec for spec in [*old.diagnose, *(old.verify.checks if old.verify else [])]}
            for spec in [*rb.diagnose, *(rb.verify.checks if rb.verify else [])]:
                if spec.id in before and before[spec.id] != spec:
                    self.notes.append(
                        f"fact {spec.id}: {rb.name} now collects it differently; the shadow uses the "
                        "recorded value"
                    )

    async def _investigate(self) -> Decisions | tuple[Runbook, dict[str, Any]]:
        """The recorded investigation's finding, proposed to the new library: the runbook to
        decide with its vars, or how the incident ends (the model is never asked again)."""
        rec = self.rec
        finding = rec.finding
        ended = Decisions(
            runbook=None, reason="", outcome="escalated", cause="investigation", breaker=rec.breaker
        )
        if finding is None or finding.proposal is None:  # the replies were what they were
            ended.reason = ended.outcome_reason = rec.report.reason if rec.report else "no finding recorded"
            ended.outcome = rec.outcome
            return ended
        limits = self.policy.llm
        if finding.confidence < limits.min_confidence:
            ended.reason = ended.outcome_reason = (
                f"finding confidence {finding.confidence:.2f} is below the policy's min_confidence "
                f"{limits.min_confidence:.2f}"
            )
            return ended
        library = LlmActivities(None, LlmSettings.model_construct(), self.runbooks)
        proposed = await library.propose(ProposalRequest(alert=rec.alert, proposal=finding.proposal))
        if proposed.runbook is None:
            ended.proposal = f"refused ({proposed.refused})"
            ended.reason = ended.outcome_reason = f"its proposal was refused: {proposed.refused}"
            return ended
        return proposed.runbook, proposed.vars

    async def run(self) -> Decisions:
        rec, alert = self.rec, self.rec.alert
        candidates = engine.candidates(self.runbooks, alert)
        vars_ = {rb.name: engine.render_alert_vars(rb, alert) for rb in candidates}
        proposal = None
        if not candidates and rec.investigated:
            investigated = await self._investigate()
            if isinstance(investigated, Decisions):
                return investigated
            proposed, proposed_vars = investigated
            candidates, vars_, proposal = [proposed], {proposed.name: proposed_vars}, proposed.name
            self.policy = advisory(self.policy)  # a proposal runs where every step asks
        if not candidates:
            return Decisions(
                runbook=None,
                reason="no runbook matches this alert",
                outcome="escalated",
                outcome_reason="no runbook matches this alert",
                cause="decision",
            )
        if rec.decide_input is None and rec.outcome == "closed_upstream":
            reason = rec.report.reason if rec.report else ""
            return Decisions(
                runbook=None,
                reason="closed before deciding",
                outcome="closed_upstream",
                outcome_reason=reason,
                cause="closed",
            )
        facts = rec.decide_input.facts if rec.decide_input is not None else dict(rec.diagnosed)
        self._changed_diagnostics(candidates)
        for rb in candidates:
            for spec in rb.diagnose:
                if spec.id not in facts:
                    self.need(
                        f"needs fact {spec.id} ({rb.name} diagnose, kind {spec.kind}), not in the history"
                    )
        decision = engine.decide(
            DecideInput(
                alert=alert,
                policy=self.policy,
                candidates=candidates,
                facts=facts,
                vars=vars_,
            )
        )
        runbook = _runbook(candidates, decision.runbook)
        level, missing = _level(rec, self.policy, decision.runbook)
        if missing is not None:
            self.need(missing)
        steps, denied = _steps(rec, decision, runbook, self.policy, dict(facts), level)
        view = Decisions(
            runbook=decision.runbook,
            reason=decision.reason,
            steps=steps,
            level=level,
            proposal=proposal,
            breaker=rec.breaker,
            denied=denied,
        )
        if decision.runbook is None:
            view.outcome, view.outcome_reason, view.cause = "escalated", decision.reason, "decision"
            return view
        view.escalate = _escalate(decision)
        if view.escalate is not None:  # an escalate.when condition held after diagnosis (issue 14)
            view.outcome, view.outcome_reason, view.cause = "escalated", view.escalate, "escalate-when"
            return view
        for step, step_view in zip(decision.steps, view.steps, strict=True):
            if step.skip_reason is not None:
                continue
            ended = self._act(step, step_view, view)
            if ended is not None:
                view.outcome, view.outcome_reason, view.cause = ended
                return view
        self._verify(decision, view)
        return view

    def _stopped_here(self, what: str) -> tuple[str, str, str]:
        """The recording never got this far: closed upstream there, or a gap the diff names."""
        if self.rec.outcome == "closed_upstream":
            return "closed_upstream", self.rec.report.reason if self.rec.report else "", "closed"
        if self.rec.report is None:  # still open: it has not got there yet either
            return UNKNOWN, "the incident is still open", "open"
        self.need(what)
        return UNKNOWN, what, "unknown"

    def _act(self, step: RenderedStep, step_view: StepView, view: Decisions) -> tuple[str, str, str] | None:
        """One step in the workflow's order; the outcome when it ends the incident, else None."""
        rec = self.rec
        recorded_step = (
            next((s for s in rec.decision.steps if s.id == step.id), None) if rec.decision else None
        )
        if step.state_changing:
            dry = rec.dry_runs.get(step.id)
            same_step = recorded_step is not None and (recorded_step.action, recorded_step.params) == (
                step.action,
                step.params,
            )
            if dry is None or not same_step:
                return self._stopped_here(
                    f"needs the dry run of step {step.id} ({step.action}) with these params, "
                    "not in the history"
                )
            guards, notes = _guardrails(rec.alert, self.policy)
            refusal = guards.refusal(step, dry)
            if refusal is not None:
                _, message, data = notes.said[-1]
                view.refusals[step.id] = (str(data.get("guard", "guard")), message)
                view.reached.add(step.id)
                return "escalated", refusal, f"guard:{data.get('guard', 'guard')}:{step.id}"
            rule_id = view.denied.get(step.id)
            if rule_id is not None:  # as workflows/rules.py says it, so the diff compares like with like
                view.refusals[step.id] = ("policy_rule", f"step {step.id} refused by policy rule {rule_id}")
                view.reached.add(step.id)
                return "escalated", f"refused by policy rule {rule_id}", f"guard:policy_rule:{step.id}"
            if step_view.approval:
                answer = rec.approval_of(step.id)
                if answer is None:
                    return self._stopped_here(
                        f"needs a human's decision on step {step.id}, not in the history"
                        + ("" if rec.asked(step.id) else " (nobody was asked)")
                    )
                if answer == "rejected":
                    return "rejected", f"step {step.id} rejected", f"approval:rejected:{step.id}"
                if answer == "timeout":
                    return "escalated", f"approval of step {step.id} timed out", f"approval:timeout:{step.id}"
            frozen = rec.freeze.get(step.id)
            if frozen is not None and frozen.frozen and self.policy.freeze.on_frozen == "escalate":
                message = next(
                    (m for s, (g, m) in _audit_refusals(rec).items() if s == step.id and g == "freeze"),
                    f"step {step.id} not started: global freeze by {frozen.by}",
                )
                view.refusals[step.id] = ("freeze", message)
                view.reached.add(step.id)
                return "escalated", message, f"guard:freeze:{step.id}"
            if rate_limit_for(self.policy, step.action, dry.target_key) is not None:
                grant = rec.slots.get(step.id)
                if grant is None:
                    return self._stopped_here(
                        f"needs the rate limiter's answer for step {step.id}, not in the history"
                    )
                if not grant.granted:
                    view.refusals[step.id] = ("rate_limit", grant.reason)
                    view.reached.add(step.id)
                    return "escalated", grant.reason, f"guard:rate_limit:{step.id}"
        view.reached.add(step.id)
        executed = rec.executed.get(step.id)
        if executed is None or recorded_step is None or recorded_step.params != step.params:
            return self._stopped_here(
                f"needs the result of step {step.id} ({step.action}), not in the history"
            )
        if not executed:
            return "escalated", f"step {step.id} ({step.action}) failed", f"failed:{step.id}"
        return None

    def _verify(self, decision: RunbookDecision, view: Decisions) -> None:
        """The new verify conditions judged on each recorded round's facts, until one settles."""
        verify = decision.verify
        if verify is None:
            view.outcome, view.outcome_reason = (
                "resolved",
                "plan completed; the runbook declares no verification",
            )
            view.cause = "no-verify"
            return
        if not self.rec.rounds:
            view.outcome, view.outcome_reason, view.cause = self._stopped_here(
                "needs verify rounds, not in the history"
            )
            return
        for request, _ in self.rec.rounds:
            for spec in verify.checks:
                if spec.id not in request.facts:
                    self.need(
                        f"needs fact {spec.id} (verify check) in round {request.round}, not in the history"
                    )
            verdict = engine.judge(
                VerifyRequest(
                    alert=self.rec.alert,
                    verify=verify,
                    facts=request.facts,
                    round=request.round,
                    vars=decision.vars,
                )
            )
            view.verdicts.append(verdict)
            if verdict.state != "not_resolved" or _escalate(verdict) is not None:
                break
        last, recorded_last = view.verdicts[-1], self.rec.rounds[-1][1]
        view.cause = "verify"
        if _escalate(last) is not None:
            view.outcome, view.outcome_reason, view.cause = "escalated", str(_escalate(last)), "escalate-when"
        elif last.state == "resolved":
            view.outcome, view.outcome_reason = "resolved", last.detail
        elif last.state == "not_resolved" and recorded_last.state != "not_resolved":
            # the recording stopped verifying early (its round settled); this one would go on
            view.outcome, view.outcome_reason, view.cause = self._stopped_here(
                f"needs verify round {len(self.rec.rounds) + 1}, not in the history"
            )
        elif self.rec.outcome == "closed_upstream":
            view.outcome, view.outcome_reason = (
                "closed_upstream",
                self.rec.report.reason if self.rec.report else "",
            )
            view.cause = "closed"
        else:
            view.outcome, view.outcome_reason = "escalated", "verification failed: " + last.detail


def recorded_cause(rec: Recording, view: Decisions) -> str:
    """Where the recorded incident ended, in the terms `_Shadow` uses for its own ending."""
    if rec.report is None:
        return "open"
    if rec.outcome == "closed_upstream" and (rec.decision is None or not rec.rounds):
        if not any(ok for ok in rec.executed.values()) or not rec.rounds:
            return "closed"
    if view.runbook is None:
        return "investigation" if rec.investigated else "decision"
    if view.escalate is not None or any(_escalate(v) is not None for v in view.verdicts):
        return "escalate-when"
    if view.refusals:
        refused, (guard, _) = next(iter(view.refusals.items()))
        return f"guard:{guard}:{refused}"
    for step in view.steps:
        answer = rec.approval_of(step.id)
        if answer in ("rejected", "timeout"):
            return f"approval:{answer}:{step.id}"
        if rec.executed.get(step.id) is False:
            return f"failed:{step.id}"
    if rec.outcome == "closed_upstream":
        return "closed"
    return "verify" if rec.rounds else "no-verify"


def _escalate(decided: RunbookDecision | VerifyVerdict) -> str | None:
    """Which `escalate.when` condition held (engines without escalate.when have no such field)."""
    held = getattr(decided, "escalate", None)
    return str(held) if held is not None else None


def _audit_refusals(rec: Recording) -> dict[str, tuple[str, str]]:
    return {
        e.step: (str(e.data.get("guard", "")), e.message)
        for e in rec.audit
        if e.kind == "guard_refused" and e.step
    }


# ------------------------------------------------------------------ the diff


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def diff(recorded: Decisions, shadow: Decisions) -> list[str]:
    """The decisions that differ, one line each, recorded first then the shadow's."""
    lines: list[str] = []
    if recorded.runbook != shadow.runbook:
        lines.append(
            f"runbook: {recorded.runbook or 'none'} -> {shadow.runbook or 'none'}"
            + (f" ({shadow.reason})" if shadow.runbook is None else "")
        )
    if recorded.proposal != shadow.proposal:
        lines.append(f"proposal: {recorded.proposal or 'none'} -> {shadow.proposal or 'none'}")
    if recorded.level != shadow.level and recorded.runbook == shadow.runbook:  # else: another runbook's
        lines.append(f"level: {recorded.level or 'none (no trust)'} -> {shadow.level or 'none (no trust)'}")
    old = {s.id: s for s in recorded.steps}
    new = {s.id: s for s in shadow.steps}
    if [s.id for s in recorded.steps] != [s.id for s in shadow.steps]:
        lines.append(f"steps: {[s.id for s in recorded.steps]} -> {[s.id for s in shadow.steps]}")
    for step_id in [s.id for s in recorded.steps if s.id not in new]:
        lines.append(f"step {step_id}: removed")
    for step in shadow.steps:
        before = old.get(step.id)
        if before is None:
            lines.append(f"step {step.id}: added ({step.action} {_show(step.params)})")
            continue
        if before.action != step.action:
            lines.append(f"step {step.id} action: {before.action} -> {step.action}")
        for key in sorted(set(before.params) | set(step.params)):
            if before.params.get(key) != step.params.get(key):
                was_p, now_p = _show(before.params.get(key)), _show(step.params.get(key))
                lines.append(f"step {step.id} param {key}: {was_p} -> {now_p}")
        if before.skipped != step.skipped:
            lines.append(f"step {step.id} skipped: {before.skipped or 'no'} -> {step.skipped or 'no'}")
        if (before.approval, before.approval_why) != (step.approval, step.approval_why):
            lines.append(f"step {step.id} approval: {_approval_text(before)} -> {_approval_text(step)}")
    for step_id in sorted(set(recorded.refusals) | set(shadow.refusals)):
        was, now = recorded.refusals.get(step_id), shadow.refusals.get(step_id)
        if (was and was[0]) != (now and now[0]):
            before_text = _refusal_text(was, step_id in recorded.reached)
            lines.append(
                f"step {step_id} guard: {before_text} -> {_refusal_text(now, step_id in shadow.reached)}"
            )
    for n in range(max(len(recorded.verdicts), len(shadow.verdicts))):
        was_v = recorded.verdicts[n] if n < len(recorded.verdicts) else None
        now_v = shadow.verdicts[n] if n < len(shadow.verdicts) else None
        if (was_v and was_v.state) != (now_v and now_v.state):
            lines.append(f"verify round {n + 1}: {_verdict_text(was_v)} -> {_verdict_text(now_v)}")
    if recorded.escalate != shadow.escalate:
        lines.append(
            f"escalate.when: {_escalate_text(recorded.escalate)} -> {_escalate_text(shadow.escalate)}"
        )
    if (recorded.outcome, recorded.cause) != (shadow.outcome, shadow.cause):
        lines.append(
            f"escalation: {recorded.outcome} ({recorded.outcome_reason})"
            f" -> {shadow.outcome} ({shadow.outcome_reason})"
        )
    return lines


def _approval_text(step: StepView) -> str:
    return f"needed ({'; '.join(step.approval_why)})" if step.approval else "not needed"


def _escalate_text(held: str | None) -> str:
    return f"would escalate at diagnosis ({held})" if held else "none held"


def _refusal_text(refusal: tuple[str, str] | None, reached: bool) -> str:
    if refusal is None:
        return "not refused" if reached else "not reached"
    return f"refused by {refusal[0]} ({refusal[1]})"


def _verdict_text(verdict: VerifyVerdict | None) -> str:
    return f"{verdict.state} ({verdict.detail})" if verdict else "not run"


async def shadow_file(
    path: Path, runbooks: list[Runbook], policy: Policy | None, settings: Settings | None = None
) -> ShadowResult:
    """Shadow-replay one exported history under `runbooks` and `policy` (default: the recorded one)."""
    history = load_history_file(path)
    try:
        rec = await read_history(history, settings)
    except ShadowError as exc:
        raise ShadowError(f"{path}: {exc}") from None
    except Exception as exc:  # a payload the configured codec keys cannot open, or not ours at all
        raise ShadowError(f"{path}: cannot read its payloads: {exc}") from None
    chosen = policy or (rec.prepared.policy if rec.prepared is not None else Policy())
    shadow = _Shadow(rec, runbooks, chosen)
    try:
        shadow_view = await shadow.run()
    except Exception as exc:  # a template the engine itself refuses would fail the activity too
        raise ShadowError(f"{path}: the decision could not be re-run: {exc}") from None
    recorded = recorded_decisions(rec)
    return ShadowResult(
        path=path,
        workflow_id=rec.workflow_id,
        diff=diff(recorded, shadow_view) + shadow.notes,
        needs=shadow.needs,
        recorded=recorded,
        shadow=shadow_view,
    )

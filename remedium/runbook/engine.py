"""Runbook semantics outside Temporal: match, decide, render the plan, judge verification.

These are pure functions over validated models; activities wrap them so that their
results land in the workflow history, and `remedium runbook test` calls them directly.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Any

from pydantic import ValidationError

from activities.registry import action_catalog
from remedium.models import (
    Alert,
    DecideInput,
    Escalation,
    Fact,
    Policy,
    RenderedStep,
    Report,
    ReportRequest,
    Runbook,
    RunbookDecision,
    VerifyRequest,
    VerifyVerdict,
)
from remedium.runbook.templating import TemplateError, evaluate, render, render_value


class PlanError(Exception):
    """A plan that cannot be rendered into valid action parameters."""


def matches(runbook: Runbook, alert: Alert) -> bool:
    m = runbook.match
    if m.source and alert.source not in m.source:
        return False
    if m.service and not any(fnmatchcase(alert.service, pattern) for pattern in m.service):
        return False
    if m.title is not None and not re.search(m.title, alert.title):
        return False
    return all(fnmatchcase(alert.labels.get(k, ""), v) for k, v in m.labels.items())


def candidates(runbooks: list[Runbook], alert: Alert) -> list[Runbook]:
    return [rb for rb in runbooks if matches(rb, alert)]


def facts_context(facts: dict[str, Fact]) -> dict[str, Any]:
    return {k: f.model_dump(mode="json") for k, f in facts.items()}


def context(alert: Alert, facts: dict[str, Fact], **extra: Any) -> dict[str, Any]:
    return {
        "alert": alert.model_dump(mode="json"),
        "facts": facts_context(facts),
        "incident": {"id": alert.workflow_id},
        **extra,
    }


def _conditions_hold(conditions: list[str], ctx: dict[str, Any]) -> tuple[bool, str]:
    for condition in conditions:
        try:
            if not evaluate(condition, ctx):
                return False, f"condition `{condition}` is false"
        except TemplateError as exc:
            return False, f"condition `{condition}` could not be evaluated: {exc}"
    return True, "all conditions hold" if conditions else "no conditions"


def render_plan(runbook: Runbook, policy: Policy, ctx: dict[str, Any]) -> list[RenderedStep]:
    catalog = action_catalog()
    steps: list[RenderedStep] = []
    for step in runbook.plan:
        action = catalog[step.action]
        skip_reason = None
        if step.when is not None:
            holds, why = _conditions_hold([step.when], ctx)
            skip_reason = None if holds else why
        params: dict[str, Any] = {}
        if skip_reason is None:
            try:
                params = render_value(step.with_, ctx)
                action.params_model.model_validate(params)
            except TemplateError as exc:
                raise PlanError(f"step {step.id}: {exc}") from None
            except ValidationError as exc:
                errors = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
                raise PlanError(f"step {step.id}: rendered parameters are invalid: {errors}") from None
        timeout = step.approval.timeout or policy.approval.timeout
        steps.append(
            RenderedStep(
                id=step.id,
                action=step.action,
                params=params,
                description=step.description,
                risk=step.risk,
                state_changing=action.state_changing,
                approval_required=action.state_changing
                and (step.approval.required or step.risk in policy.approval.required_for),
                approval_timeout_s=timeout.total_seconds(),
                timeout_s=step.timeout.total_seconds(),
                skip_reason=skip_reason,
            )
        )
    return steps


def decide(request: DecideInput) -> RunbookDecision:
    """Pick the runbook whose conditions hold; ties and 'none' are explicit outcomes."""
    ctx = context(request.alert, request.facts)
    names = [rb.name for rb in request.candidates]
    if not request.candidates:
        return RunbookDecision(runbook=None, reason="no runbook matches this alert", candidates=[])
    chosen: list[Runbook] = []
    refused: list[str] = []
    for rb in request.candidates:
        holds, why = _conditions_hold(rb.decide.when, ctx)
        if holds:
            chosen.append(rb)
        else:
            refused.append(f"{rb.name}: {why}")
    if not chosen:
        return RunbookDecision(
            runbook=None,
            reason="no candidate runbook's conditions hold (" + "; ".join(refused) + ")",
            candidates=names,
        )
    top = max(rb.decide.priority for rb in chosen)
    best = [rb for rb in chosen if rb.decide.priority == top]
    if len(best) > 1:
        return RunbookDecision(
            runbook=None,
            reason="ambiguous: runbooks "
            + ", ".join(rb.name for rb in best)
            + f" all apply at priority {top}; a human must choose",
            candidates=names,
        )
    runbook = best[0]
    try:
        steps = render_plan(runbook, request.policy, ctx)
    except PlanError as exc:
        return RunbookDecision(runbook=None, reason=f"runbook {runbook.name}: {exc}", candidates=names)
    others = f"; not chosen: {'; '.join(refused)}" if refused else ""
    return RunbookDecision(
        runbook=runbook.name,
        reason=f"runbook {runbook.name} chosen: {_conditions_hold(runbook.decide.when, ctx)[1]}{others}",
        candidates=names,
        steps=steps,
        verify=runbook.verify,
        max_actions=runbook.limits.max_actions,
        max_duration_s=runbook.limits.max_duration.total_seconds(),
    )


def judge(request: VerifyRequest) -> VerifyVerdict:
    """worse_if wins over success; both are re-evaluated on every verification round."""
    ctx = context(request.alert, request.facts, round=request.round)
    for condition in request.verify.worse_if:
        try:
            if evaluate(condition, ctx):
                return VerifyVerdict(state="worse", detail=f"worse: `{condition}` holds")
        except TemplateError:
            continue
    holds, why = _conditions_hold(request.verify.success, ctx)
    if holds:
        return VerifyVerdict(state="resolved", detail="recovered: " + why)
    return VerifyVerdict(state="not_resolved", detail=f"not recovered yet: {why}")


def report(request: ReportRequest) -> Report:
    from remedium.summary import incident_summary

    ctx = context(
        request.alert,
        request.facts,
        outcome=request.outcome,
        reason=request.reason,
        runbook=request.runbook.name if request.runbook else None,
        actions=[a.model_dump(mode="json") for a in request.actions],
    )
    spec = request.runbook.report if request.runbook else None
    summary = _safe_render(spec.summary if spec else "{{ alert.title }}: {{ outcome }}", ctx)
    follow_ups = [_safe_render(t, ctx) for t in (spec.follow_ups if spec else [])]
    escalation = None
    if request.outcome in ("escalated", "rejected"):
        esc = request.runbook.escalate if request.runbook else None
        template = esc.message if esc else "Remedium could not resolve {{ alert.title }}: {{ reason }}"
        escalation = Escalation(
            reason=request.reason, message=_safe_render(template, ctx), to=esc.to if esc else []
        )
    return Report(
        outcome=request.outcome,
        summary=summary,
        escalation=escalation,
        follow_ups=follow_ups,
        markdown=incident_summary(request, summary, escalation, follow_ups),
    )


def _safe_render(template: str, ctx: dict[str, Any]) -> str:
    """Reports must always be produced: a failing template shows its error instead."""
    try:
        return render(template, ctx)
    except TemplateError as exc:
        return f"[template error: {exc}]"

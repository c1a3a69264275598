"""Evaluate the policy's `rules` for one step: first match wins, and the answer says why.

Pure, so that the `policy.rules` activity (whose answer lands in the workflow history) and
`remedium policy test` give the same decision for the same input.

A condition that cannot be evaluated, or that reads a diagnostic that failed, is *unknown*,
never false: a `deny` or `require_approval` rule whose condition is unknown applies (a rule
that restricts is not skipped because what it needs to know is missing); an `allow` rule whose
condition is unknown does not.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from remedium.errors import TemplateError
from remedium.models.rule_request import RuleRequest
from remedium.models.rules import PolicyRule, RuleCheck, RuleDecision
from remedium.runbook.engine import context, failed_facts
from remedium.runbook.templating import evaluate

__all__ = ["decide_rules", "rule_context"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def rule_context(request: RuleRequest, rule: PolicyRule) -> dict[str, Any]:
    """What a rule's `when` sees: step, dry_run, alert, facts, incident, runbook, level and time."""
    local = request.now.astimezone(ZoneInfo(rule.timezone))
    step = request.step
    return context(
        request.alert,
        request.facts,
        None,
        step={
            "id": step.id,
            "action": step.action,
            "risk": step.risk,
            "params": step.params,
            "description": step.description,
        },
        dry_run=request.dry_run.model_dump(mode="json"),
        runbook=request.runbook,
        level=request.level,
        time={
            "iso": local.isoformat(),
            "date": local.date().isoformat(),
            "hhmm": f"{local:%H:%M}",
            "hour": local.hour,
            "minute": local.minute,
            "weekday": local.isoweekday(),  # 1 = Monday ... 7 = Sunday
            "day": DAYS[local.weekday()],
            "timezone": rule.timezone,
        },
    )


def _check(rule: PolicyRule, request: RuleRequest) -> RuleCheck:
    if rule.when is None:
        return RuleCheck(id=rule.id, result="holds", detail="it has no condition")
    ctx = rule_context(request, rule)
    try:
        holds = bool(evaluate(rule.when, ctx))
    except TemplateError as exc:
        failed = failed_facts(rule.when, ctx)
        return RuleCheck(id=rule.id, result="unknown", detail=failed or f"`{rule.when}`: {exc}")
    failed = failed_facts(rule.when, ctx)
    if failed is not None:
        return RuleCheck(id=rule.id, result="unknown", detail=failed)
    local = ctx["time"]
    at = f" (at {local['day']} {local['hhmm']} {rule.timezone})" if "time." in rule.when else ""
    return RuleCheck(
        id=rule.id, result="holds" if holds else "false", detail=f"`{rule.when}` is {str(holds).lower()}{at}"
    )


def _effect_text(rule: PolicyRule) -> str:
    if rule.kind != "require_approval":
        return rule.kind
    approval = rule.approval
    who = f" from {', '.join(approval.approvers)}" if approval.approvers else ""
    return f"require_approval: {approval.quorum} distinct approver(s){who}"


def decide_rules(request: RuleRequest) -> RuleDecision:
    """The first rule that holds (or restricts and cannot be evaluated) decides; else none does."""
    checks: list[RuleCheck] = []
    for rule in request.rules:
        check = _check(rule, request)
        checks.append(check)
        fires = check.result == "holds" or (check.result == "unknown" and rule.kind != "allow")
        if not fires:
            continue
        why = check.detail
        if check.result == "unknown":
            why = f"its condition is unknown ({check.detail}), and a {rule.kind} rule applies when unknown"
        approval = rule.approval if rule.kind == "require_approval" else None
        return RuleDecision(
            rule=rule.id,
            effect=rule.kind,
            quorum=approval.quorum if approval else 1,
            approvers=list(approval.approvers) if approval and approval.approvers else None,
            reason=f"policy rule {rule.id} ({_effect_text(rule)}) fires for step {request.step.id}: {why}",
            checks=checks,
        )
    return RuleDecision(
        reason=f"no policy rule fires for step {request.step.id}: the policy's approval settings apply",
        checks=checks,
    )

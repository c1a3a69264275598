"""Runbook semantics outside Temporal: match, decide, render the plan, judge verification.

These are pure functions over validated models; activities wrap them so that their
results land in the workflow history, and `remedium runbook test` calls them directly.

A runbook's `vars` are rendered once per incident in two groups (see `variables`): the
alert group in `incident.prepare` (`render_alert_vars`, before diagnosis), the facts group
in `runbook.decide` (`render_fact_vars`, after it); the decision carries both to verify and
report. A var that fails to render has no value, and every template using it fails with the
var's error, exactly where that template's own error would show.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from remedium.catalog import action_catalog
from remedium.errors import PlanError, TemplateError
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
from remedium.runbook.templating import Vars, evaluate, fact_ids, render, render_value
from remedium.runbook.variables import var_graph

__all__ = [
    "PlanError",
    "candidates",
    "context",
    "decide",
    "failed_facts",
    "judge",
    "matches",
    "render_alert_vars",
    "render_fact_vars",
    "render_plan",
    "report",
    "threshold",
]


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


def context(
    alert: Alert, facts: dict[str, Fact], vars: Mapping[str, Any] | Vars | None = None, **extra: Any
) -> dict[str, Any]:
    """What every template and condition sees: alert, facts, incident, vars, and `extra`."""
    return {
        "alert": alert.model_dump(mode="json"),
        "facts": facts_context(facts),
        "incident": {"id": alert.workflow_id},
        "vars": vars if isinstance(vars, Vars) else Vars(vars),
        **extra,
    }


# --- vars ------------------------------------------------------------------------------------

Rendered = tuple[dict[str, Any], dict[str, str]]  # values, and the error of each var that failed


def _render_vars(
    runbook: Runbook, names: list[str], alert: Alert, facts: dict[str, Fact], done: Rendered
) -> Rendered:
    """Render `names` in order (each may use the vars before it), keeping what `done` has."""
    values, errors = dict(done[0]), dict(done[1])
    ctx = context(alert, facts)
    for name in names:
        if name in values:
            continue
        ctx["vars"] = Vars(values, errors)
        try:
            rendered = render_value(runbook.vars[name], ctx)
        except TemplateError as exc:
            errors[name] = str(exc)
            continue
        try:  # what crosses Temporal, so that later stages see exactly what this one saw
            values[name] = to_jsonable_python(rendered)
        except PydanticSerializationError:
            errors[name] = f"its value is not JSON data ({type(rendered).__name__})"
    return values, errors


def _alert_vars(runbook: Runbook, alert: Alert, given: Mapping[str, Any] | None = None) -> Rendered:
    """The alert group: `given` (what prepare rendered) plus any alert var missing from it."""
    alert_group, _ = var_graph(runbook).groups()
    return _render_vars(runbook, alert_group, alert, {}, (dict(given or {}), {}))


def _all_vars(
    runbook: Runbook, alert: Alert, facts: dict[str, Fact], given: Mapping[str, Any] | None = None
) -> Rendered:
    """Both groups: the alert group as `_alert_vars`, then the facts group from `facts`."""
    _, facts_group = var_graph(runbook).groups()
    return _render_vars(runbook, facts_group, alert, facts, _alert_vars(runbook, alert, given))


def render_alert_vars(runbook: Runbook, alert: Alert) -> dict[str, Any]:
    """The runbook's vars that use no facts, rendered from the alert (before diagnosis).

    A var that fails to render is absent: a template that uses it fails (decide renders it
    again, from the same alert, to give the reason).
    """
    return _alert_vars(runbook, alert)[0]


def render_fact_vars(
    runbook: Runbook, alert: Alert, facts: dict[str, Fact], alert_vars: Mapping[str, Any]
) -> dict[str, Any]:
    """The runbook's vars that use facts (directly or through another var), rendered after diagnosis."""
    _, facts_group = var_graph(runbook).groups()
    values, _ = _render_vars(runbook, facts_group, alert, facts, (dict(alert_vars), {}))
    return {name: values[name] for name in facts_group if name in values}


def _given_or_recomputed(
    given: dict[str, Any], runbook: Runbook | None, alert: Alert, facts: dict[str, Fact]
) -> Vars:
    """The vars a request carries; none (an older workflow) means: render them from the runbook."""
    if given or runbook is None or not runbook.vars:
        return Vars(given)
    return Vars(*_all_vars(runbook, alert, facts))


def _not_rendered(runbook: Runbook, errors: dict[str, str], said: str, *, alert_only: bool = False) -> str:
    """Why each var failed on its own (not through another var), unless `said` says it already.

    The decision's reason is where a var's error is told: a diagnostic can only say that the
    var has no value. For a runbook not chosen, only the alert group's errors are told (a
    facts var fails when its fact did, which the runbook's conditions already say).
    """
    graph = var_graph(runbook)
    alert_group = set(graph.groups()[0])
    roots = [name for name in errors if not any(dep in errors for dep in graph.uses.get(name, {}))]
    told = [
        name
        for name in roots
        if f"vars.{name} could not be rendered" not in said and (name in alert_group or not alert_only)
    ]
    return "".join(f"; vars.{name} could not be rendered: {errors[name]}" for name in told)


def failed_facts(condition: str, ctx: dict[str, Any]) -> str | None:
    """Which diagnostics this condition reads failed, and why; None when every one it reads is ok.

    A condition over a failed fact is not false, it is unknown: the reason must say so, or an
    incident whose diagnostic died with its worker reads as one whose service is unhealthy.
    """
    facts = ctx.get("facts")
    if not isinstance(facts, Mapping):
        return None
    failed = [
        f"diagnostic {fact_id} failed: {facts[fact_id].get('error') or 'no answer'}"
        for fact_id in fact_ids(condition, condition=True)
        if isinstance(facts.get(fact_id), Mapping) and facts[fact_id].get("ok") is False
    ]
    return "; ".join(failed) if failed else None


def _conditions_hold(conditions: list[str], ctx: dict[str, Any]) -> tuple[bool, str]:
    for condition in conditions:
        try:
            holds = evaluate(condition, ctx)
        except TemplateError as exc:
            failed = failed_facts(condition, ctx)
            return False, failed or f"condition `{condition}` could not be evaluated: {exc}"
        if not holds:
            return False, failed_facts(condition, ctx) or f"condition `{condition}` is false"
    return True, "all conditions hold" if conditions else "no conditions"


def threshold(conditions: list[str], ctx: dict[str, Any]) -> str | None:
    """The first `escalate.when` condition that holds, said with why; None when none does.

    One that cannot be told (it fails, or reads a diagnostic that failed) counts as holding:
    an escalation threshold exists to hand off when in doubt, so unknown is never false. One
    that reads a fact not gathered yet (a verify check, after diagnosis) is not checked yet;
    `round` is 0 after diagnosis, then the verify round.
    """
    gathered = ctx.get("facts")
    for condition in conditions:
        if isinstance(gathered, Mapping) and any(
            fact_id not in gathered for fact_id in fact_ids(condition, condition=True)
        ):
            continue
        try:
            holds = bool(evaluate(condition, ctx))
        except TemplateError as exc:
            why = failed_facts(condition, ctx) or str(exc)
            return f"escalate.when `{condition}` cannot be evaluated ({why}), so it counts as holding"
        failed = failed_facts(condition, ctx)
        if failed is not None and not holds:
            return f"escalate.when `{condition}` is unknown ({failed}), so it counts as holding"
        if holds:
            return f"escalate.when `{condition}` holds"
    return None


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
                approval_by_runbook=action.state_changing and step.approval.required,
                approval_timeout_s=timeout.total_seconds(),
                timeout_s=step.timeout.total_seconds(),
                skip_reason=skip_reason,
            )
        )
    return steps


def decide(request: DecideInput) -> RunbookDecision:
    """Pick the runbook whose conditions hold; ties and 'none' are explicit outcomes.

    Each candidate's conditions see its own vars: the alert group from `request.vars` (any
    var missing there is rendered now), the facts group rendered here, once, from the facts.
    """
    names = [rb.name for rb in request.candidates]
    if not request.candidates:
        return RunbookDecision(runbook=None, reason="no runbook matches this alert", candidates=[])
    chosen: list[Runbook] = []
    refused: list[str] = []
    rendered: dict[str, Rendered] = {}
    contexts: dict[str, dict[str, Any]] = {}
    for rb in request.candidates:
        rendered[rb.name] = _all_vars(rb, request.alert, request.facts, request.vars.get(rb.name))
        ctx = contexts[rb.name] = context(request.alert, request.facts, Vars(*rendered[rb.name]))
        holds, why = _conditions_hold(rb.decide.when, ctx)
        if holds:
            chosen.append(rb)
        else:
            refused.append(f"{rb.name}: {why}{_not_rendered(rb, rendered[rb.name][1], why, alert_only=True)}")
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
    ctx = contexts[runbook.name]
    values, errors = rendered[runbook.name]
    try:
        steps = render_plan(runbook, request.policy, ctx)
    except PlanError as exc:
        return RunbookDecision(runbook=None, reason=f"runbook {runbook.name}: {exc}", candidates=names)
    others = f"; not chosen: {'; '.join(refused)}" if refused else ""
    why_chosen = _conditions_hold(runbook.decide.when, ctx)[1]
    return RunbookDecision(
        runbook=runbook.name,
        reason=f"runbook {runbook.name} chosen: {why_chosen}{_not_rendered(runbook, errors, '')}{others}",
        candidates=names,
        steps=steps,
        verify=runbook.verify,
        max_actions=runbook.limits.max_actions,
        max_duration_s=runbook.limits.max_duration.total_seconds(),
        vars=values,
        escalate=threshold(runbook.escalate.when, {**ctx, "round": 0}),
        escalate_when=list(runbook.escalate.when),
    )


def judge(request: VerifyRequest, runbook: Runbook | None = None) -> VerifyVerdict:
    """worse_if wins over success; both are re-evaluated on every verification round.

    `runbook` (the one `request.verify` comes from) is only read when the request carries no
    vars, as from a workflow older than vars: they are then rendered from it.
    """
    variables = _given_or_recomputed(request.vars, runbook, request.alert, request.facts)
    ctx = context(request.alert, request.facts, variables, round=request.round)
    for condition in request.verify.worse_if:
        try:
            if evaluate(condition, ctx):
                return VerifyVerdict(state="worse", detail=f"worse: `{condition}` holds")
        except TemplateError:
            continue
    escalate = threshold(request.escalate_when, ctx)
    if escalate is not None:
        detail = f"escalation threshold: {escalate}"
        return VerifyVerdict(state="not_resolved", detail=detail, escalate=escalate)
    holds, why = _conditions_hold(request.verify.success, ctx)
    if holds:
        return VerifyVerdict(state="resolved", detail="recovered: " + why)
    return VerifyVerdict(state="not_resolved", detail=f"not recovered yet: {why}")


def report(request: ReportRequest) -> Report:
    from remedium.summary import incident_summary

    ctx = context(
        request.alert,
        request.facts,
        _given_or_recomputed(request.vars, request.runbook, request.alert, request.facts),
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

"""The markdown the Temporal UI shows as the workflow's "current details"."""

from __future__ import annotations

import json

from temporalio.common import SearchAttributeUpdate

from remedium.models import Alert, Approval, IncidentStatus, Stage
from remedium.models.common import utc_text
from remedium.names import SA_SERVICE, SA_SEVERITY, SA_STAGE


def current_details(status: IncidentStatus) -> str:
    """What an operator in the UI needs without running a query: above all, how to approve."""
    alert = status.alert
    lines = [
        f"### {alert.title}",
        f"**Stage:** `{status.stage}`"
        + (f" · **Outcome:** `{status.outcome}`" if status.outcome else "")
        + f" · **Service:** {alert.service or '-'} · **Severity:** {alert.severity or '-'}"
        + f" · **Runbook:** {status.runbook or '-'}",
    ]
    if status.level is not None:
        lines.append(
            f"**Autonomy level:** `{status.level}`"
            + (
                f" · flagged for review: `remedium review {status.workflow_id} --verdict good|bad`"
                if status.review
                else ""
            )
        )
    breaker = status.breaker
    if breaker is not None:
        lines += [
            "",
            f"**LLM breaker:** `{breaker.state}` · ${breaker.cost_usd:.6f} · "
            f"{breaker.llm_calls} LLM call(s) · {breaker.tool_calls} tool call(s)"
            + (f" · {breaker.reason}" if breaker.reason else ""),
        ]
        if breaker.state == "CIRCUIT_BROKEN":
            lines.append(f"Re-arm it: `remedium breaker reset {status.workflow_id} --as <you>`.")
    pending = status.pending_approval
    if pending is not None:
        body = json.dumps(
            {"step": pending.step, "request": pending.request, "by": "<your name>", "reason": "<why>"}
        )
        lines += [
            "",
            f"#### Waiting for approval of step `{pending.step}` ({pending.action}, risk {pending.risk})",
            f"Deadline: {utc_text(pending.deadline)} (then escalates). "
            f"Approvers: {', '.join(pending.approvers)}",
        ]
        if pending.quorum > 1:
            so_far = f" ({', '.join(pending.approved_by)})" if pending.approved_by else ""
            lines.append(
                f"Approvals: {len(pending.approved_by)} of {pending.quorum} approvals{so_far}; "
                f"{pending.quorum} distinct approvers needed."
            )
        if pending.verified_only:
            lines.append(
                f"Risk {pending.risk} needs a verified approval: only the Slack button, clicked by an "
                "approver the policy maps to a Slack user id, counts; UI and CLI approvals are refused."
            )
        lines += [
            "",
            f"Dry run on `{pending.dry_run.target}`: {pending.dry_run.summary}",
            "```diff",
            pending.dry_run.diff or "(no diff)",
            "```",
            "To approve: More Actions → Send a Signal → `approve` (or `reject`) with data:",
            f"`{body}`",
            f"or `remedium approve {status.workflow_id} --step {pending.step} --as <you>`.",
        ]
    decided: dict[str, list[Approval]] = {}
    for approval in status.approvals:
        decided.setdefault(approval.step, []).append(approval)
    if status.actions:
        lines += ["", "#### Actions taken"]
        for a in status.actions:
            lines.append(f"- `{a.step_id}` {a.action}: {a.summary}{_approval(decided.get(a.step_id, []))}")
    rejected = [a for step in decided.values() for a in step if not a.approved]
    if rejected:
        lines += ["", "#### Rejected"]
        lines += [f"- `{a.step}` by {a.by}" + (f": {a.reason}" if a.reason else "") for a in rejected]
    if status.escalation is not None:
        lines += ["", f"#### Escalated\n{status.escalation.message}"]
    elif status.report is not None:
        lines += ["", f"#### Report\n{status.report.summary}"]
    return "\n".join(lines)


def _approval(approvals: list[Approval]) -> str:
    """Who approved a step that ran (several when the policy asks for a quorum)."""
    approved = [a for a in approvals if a.approved]
    if not approved or any(not a.approved for a in approvals):
        return ""
    return " — approved by " + ", ".join(a.by + (f" ({a.reason})" if a.reason else "") for a in approved)


def stage_attributes(stage: Stage, alert: Alert) -> list[SearchAttributeUpdate[str]]:
    """The stage is searchable; the first one also carries the alert's service and severity."""
    pairs = [SA_STAGE.value_set(stage)]
    if stage == "triggered":
        if alert.service:
            pairs.append(SA_SERVICE.value_set(alert.service))
        if alert.severity:
            pairs.append(SA_SEVERITY.value_set(alert.severity))
    return pairs

"""The markdown the Temporal UI shows as the workflow's "current details"."""

from __future__ import annotations

import json

from remedium.models import Approval, IncidentStatus
from remedium.models.common import utc_text


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
    pending = status.pending_approval
    if pending is not None:
        body = json.dumps({"step": pending.step, "by": "<your name>", "reason": "<why>"})
        lines += [
            "",
            f"#### Waiting for approval of step `{pending.step}` ({pending.action}, risk {pending.risk})",
            f"Deadline: {utc_text(pending.deadline)} (then escalates). "
            f"Approvers: {', '.join(pending.approvers)}",
            "",
            f"Dry run on `{pending.dry_run.target}`: {pending.dry_run.summary}",
            "```diff",
            pending.dry_run.diff or "(no diff)",
            "```",
            "To approve: More Actions → Send a Signal → `approve` (or `reject`) with data:",
            f"`{body}`",
            f"or `remedium approve {status.workflow_id} --step {pending.step} --as <you>`.",
        ]
    decided = {a.step: a for a in status.approvals}
    if status.actions:
        lines += ["", "#### Actions taken"]
        for a in status.actions:
            lines.append(f"- `{a.step_id}` {a.action}: {a.summary}{_approval(decided.get(a.step_id))}")
    rejected = [a for a in decided.values() if not a.approved]
    if rejected:
        lines += ["", "#### Rejected"]
        lines += [f"- `{a.step}` by {a.by}" + (f": {a.reason}" if a.reason else "") for a in rejected]
    if status.escalation is not None:
        lines += ["", f"#### Escalated\n{status.escalation.message}"]
    elif status.report is not None:
        lines += ["", f"#### Report\n{status.report.summary}"]
    return "\n".join(lines)


def _approval(approval: Approval | None) -> str:
    if approval is None or not approval.approved:
        return ""
    return f" — approved by {approval.by}" + (f" ({approval.reason})" if approval.reason else "")

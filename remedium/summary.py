"""The end-of-incident summary in markdown, built from the audit trail.

One text for every reader (Jira, Slack, `remedium incident show`): what happened, why
Remedium believed it, what it did with which dry run and whose approval, whether it
worked, and what is left for humans.
"""

from __future__ import annotations

from typing import Any

from remedium.models import AuditEntry, Escalation, ReportRequest

TIMELINE_LIMIT = 60
FACT_LIMIT = 300
_SHORT_LIST = 3
_SHORT_DICT = 4


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _brief_item(value: Any) -> str:
    if isinstance(value, dict):
        if len(value) <= _SHORT_DICT and all(not isinstance(v, dict | list) for v in value.values()):
            return "{" + ", ".join(f"{k}: {_brief_item(v)}" for k, v in value.items()) + "}"
        return "{" + _count(len(value), "key") + "}"
    if isinstance(value, list):
        if len(value) <= _SHORT_LIST and all(not isinstance(v, dict | list) for v in value):
            return "[" + ", ".join(_brief_item(v) for v in value) + "]"
        return "[" + _count(len(value), "item") + "]"
    if isinstance(value, float):
        return f"{value:g}"
    # one line, so a multi-line log excerpt cannot break a markdown list or an audit line
    return " ⏎ ".join(str(value).splitlines())


def fact_brief(value: Any, limit: int = FACT_LIMIT) -> str:
    """A fact as one readable line (`count=2 max=8280 breached=True`), not a Python repr."""
    if isinstance(value, dict):
        text = " ".join(f"{k}={_brief_item(v)}" for k, v in value.items() if v is not None)
    else:
        text = _brief_item(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _by_step(audit: list[AuditEntry], kind: str) -> dict[str, AuditEntry]:
    return {e.step: e for e in audit if e.kind == kind and e.step}


def incident_summary(
    request: ReportRequest, summary: str, escalation: Escalation | None, follow_ups: list[str]
) -> str:
    alert, audit = request.alert, request.audit
    lines = [f"## Incident report: {alert.title}", "", summary, ""]
    lines.append(f"- **Outcome:** {request.outcome.replace('_', ' ')} ({request.reason})")
    lines.append(
        f"- **Alert:** {alert.source} `{alert.id}`, service {alert.service or 'unknown'}, "
        f"severity {alert.severity or 'unknown'}"
        + (f", started {alert.started_at:%Y-%m-%d %H:%M} UTC" if alert.started_at else "")
    )
    lines.append(f"- **Runbook:** {request.runbook.name if request.runbook else 'none'}")

    lines += ["", "### Root cause"]
    decisions = [e for e in audit if e.kind == "decision"]
    lines.append(f"- {decisions[-1].message}" if decisions else "- no runbook decision was reached")
    for fact in request.facts.values():
        shown = fact_brief(fact.value) if fact.ok else f"FAILED: {fact.error}"[:FACT_LIMIT]
        query = f" — `{fact.query}`" if fact.query else ""
        lines.append(f"- `{fact.id}` ({fact.kind}){query}: {shown}")

    lines += ["", "### Actions"]
    dry_runs = _by_step(audit, "dry_run")
    approvals = {e.step: e for e in audit if e.kind in ("approved", "rejected") and e.step}
    rollbacks = {e.step: e for e in audit if e.kind in ("rolled_back", "rollback_failed") and e.step}
    refusals = [e for e in audit if e.kind == "guard_refused"]
    if not request.actions and not dry_runs:
        lines.append("- none")
    done = {a.step_id for a in request.actions}
    for step, dry in dry_runs.items():
        action = next((a for a in request.actions if a.step_id == step), None)
        headline = f"`{step}` {action.action}: {action.summary}" if action else f"`{step}`: not run"
        lines.append(f"- {headline}")
        lines.append(f"  - dry run: {dry.message}")
        if step in approvals:
            lines.append(f"  - {approvals[step].message}")
        elif step in done:
            lines.append("  - no approval needed by policy")
        if action and action.checkpoint:
            lines.append(f"  - checkpoint: {action.checkpoint.undo}")
        if step in rollbacks:
            undone = rollbacks[step]
            label = "rolled back" if undone.kind == "rolled_back" else "ROLLBACK FAILED"
            lines.append(f"  - {label}: {undone.message}")
    for refusal in refusals:
        lines.append(f"- refused by a guardrail: {refusal.message}")

    verifies = [e for e in audit if e.kind in ("verify", "evaluation")]
    if verifies:
        lines += ["", "### Verification"]
        lines += [f"- {e.message}" for e in verifies[-4:]]

    if escalation:
        lines += ["", "### Escalation", f"- {escalation.message}"]
        if escalation.to:
            lines.append(f"- to: {', '.join(escalation.to)}")
    failed_reports = [e for e in audit if e.kind == "report_failed"]
    if failed_reports:
        lines += ["", "### Reporting problems"]
        lines += [f"- {e.message}" for e in failed_reports[-5:]]
    if follow_ups:
        lines += ["", "### Follow-ups"]
        lines += [f"- {f}" for f in follow_ups]

    lines += ["", "### Timeline", "", "| time (UTC) | stage | event |", "|---|---|---|"]
    shown_entries = audit if len(audit) <= TIMELINE_LIMIT else audit[: TIMELINE_LIMIT - 1]
    for entry in shown_entries:
        message = entry.message.replace("|", "\\|").replace("\n", " ")
        if len(message) > 200:
            message = message[:200] + "…"
        actor = f" ({entry.actor})" if entry.actor != "remedium" else ""
        lines.append(f"| {entry.at:%H:%M:%S} | {entry.stage} | {entry.kind}{actor}: {message} |")
    if len(audit) > TIMELINE_LIMIT:
        lines.append(f"| … | | {len(audit) - TIMELINE_LIMIT + 1} more entries: `remedium incident show` |")
    return "\n".join(lines)

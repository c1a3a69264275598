"""The end-of-incident summary in markdown, built from the audit trail.

One text for every reader (Jira, Slack, `remedium incident show`): what happened, why
Remedium believed it, what it did with which dry run and whose approval, whether it
worked, and what is left for humans.
"""

from __future__ import annotations

import re
from typing import Any

from remedium.models import AuditEntry, Escalation, ReportRequest
from remedium.untrusted import markdown_code, markdown_text

TIMELINE_LIMIT = 60
FACT_LIMIT = 300
REDACTED = "[redacted]"
_REDACT_DEPTH = 40
_SECRET_WORDS = (
    r"token|secret|passw(?:or)?d|api[-_]?key|authori[sz]ation|cookie|session|credential|private[-_]?key"
)
SECRET_NAME = re.compile(_SECRET_WORDS, re.IGNORECASE)
_CREDENTIAL = re.compile(r"\b(?:bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}", re.IGNORECASE)
# `name=value` / `"name": "value"` in text: a whole word (so linear on long runs), then its value
_ASSIGNED = re.compile(
    r"""(?<![\w-])([\w-]{1,64})(["']?\s{0,3}[:=]\s{0,3}["']?)(?!\[redacted\])([^\s"'&,;}\]]+)"""
)
_SHORT_LIST = 3
_SHORT_DICT = 4


def redact(value: Any, _depth: int = 0) -> Any:
    """The value with whatever looks like a secret replaced by "[redacted]", for every reader.

    Fields whose names look like secrets (token, password, api_key, authorization, cookie,
    session, credential, private_key...; any case, at any depth), `Bearer xxx` credentials, and
    `token=xxx` / `"password": "xxx"` inside text: a diagnostic's body is shown in the audit
    trail and posted to Slack, Jira and PagerDuty, and the service it came from may not know.
    """
    if _depth > _REDACT_DEPTH:
        return REDACTED
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and SECRET_NAME.search(k) else redact(v, _depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, _depth + 1) for v in value]
    if isinstance(value, str):
        return _ASSIGNED.sub(_redact_assigned, _CREDENTIAL.sub(REDACTED, value))
    return value


def _redact_assigned(match: re.Match[str]) -> str:
    name, sep, _value = match.groups()
    if not SECRET_NAME.search(name):
        return match.group(0)
    return name + sep + REDACTED


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
    """A fact as one readable line (`count=2 max=8280 breached=True`), not a Python repr, redacted."""
    value = redact(value)
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
    md = markdown_text  # every incident-supplied string is a literal: it never links or formats
    lines = [f"## Incident report: {md(alert.title)}", "", md(summary), ""]
    lines.append(f"- **Outcome:** {request.outcome.replace('_', ' ')} ({md(request.reason)})")
    lines.append(
        f"- **Alert:** {alert.source} {markdown_code(alert.id)}, service {md(alert.service or 'unknown')}, "
        f"severity {md(alert.severity or 'unknown')}"
        + (f", started {alert.started_at:%Y-%m-%d %H:%M} UTC" if alert.started_at else "")
    )
    lines.append(f"- **Runbook:** {md(request.runbook.name) if request.runbook else 'none'}")

    lines += ["", "### Root cause"]
    decisions = [e for e in audit if e.kind == "decision"]
    lines.append(f"- {md(decisions[-1].message)}" if decisions else "- no runbook decision was reached")
    for fact in request.facts.values():
        shown = fact_brief(fact.value) if fact.ok else redact(f"FAILED: {fact.error}")[:FACT_LIMIT]
        query = f" — {markdown_code(fact.query)}" if fact.query else ""
        lines.append(f"- {markdown_code(fact.id)} ({md(fact.kind)}){query}: {md(shown)}")

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
        headline = (
            f"{markdown_code(step)} {md(action.action)}: {md(action.summary)}"
            if action
            else f"{markdown_code(step)}: not run"
        )
        lines.append(f"- {headline}")
        lines.append(f"  - dry run: {md(dry.message)}")
        if step in approvals:
            lines.append(f"  - {md(approvals[step].message)}")
        elif step in done:
            lines.append("  - no approval needed by policy")
        if action and action.checkpoint:
            lines.append(f"  - checkpoint: {md(action.checkpoint.undo)}")
        if step in rollbacks:
            undone = rollbacks[step]
            label = "rolled back" if undone.kind == "rolled_back" else "ROLLBACK FAILED"
            lines.append(f"  - {label}: {md(undone.message)}")
    for refusal in refusals:
        lines.append(f"- refused by a guardrail: {md(refusal.message)}")

    verifies = [e for e in audit if e.kind in ("verify", "evaluation")]
    if verifies:
        lines += ["", "### Verification"]
        lines += [f"- {md(e.message)}" for e in verifies[-4:]]

    if escalation:
        lines += ["", "### Escalation", f"- {md(escalation.message)}"]
        if escalation.to:
            lines.append(f"- to: {md(', '.join(escalation.to))}")
    failed_reports = [e for e in audit if e.kind == "report_failed"]
    if failed_reports:
        lines += ["", "### Reporting problems"]
        lines += [f"- {md(e.message)}" for e in failed_reports[-5:]]
    if follow_ups:
        lines += ["", "### Follow-ups"]
        lines += [f"- {md(f)}" for f in follow_ups]

    lines += ["", "### Timeline", "", "| time (UTC) | stage | event |", "|---|---|---|"]
    shown_entries = audit if len(audit) <= TIMELINE_LIMIT else audit[: TIMELINE_LIMIT - 1]
    for entry in shown_entries:
        message = entry.message if len(entry.message) <= 200 else entry.message[:200] + "…"
        actor = f" ({md(entry.actor)})" if entry.actor != "remedium" else ""
        lines.append(f"| {entry.at:%H:%M:%S} | {entry.stage} | {entry.kind}{actor}: {md(message)} |")
    if len(audit) > TIMELINE_LIMIT:
        lines.append(f"| … | | {len(audit) - TIMELINE_LIMIT + 1} more entries: `remedium incident show` |")
    return "\n".join(lines)

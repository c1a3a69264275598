"""What the three human channels share: one event rendered per channel's markup, and one way to fail.

Slack speaks mrkdwn, Jira (REST v2) wiki markup, PagerDuty notes plain text; the workflow
writes markdown, so each channel gets a conversion here. Every post carries a marker line
`[remedium:<event key>]`, which is how a retried activity recognises its own earlier post.
Failures become Temporal ApplicationErrors that say whether a retry can help (5xx, timeouts,
rate limits, honouring Retry-After) or not (bad token, unknown project), scrubbed of secrets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from temporalio.exceptions import ApplicationError

from remedium.errors import ErrorType
from remedium.models import ReportEvent

_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_BULLET = re.compile(r"^(\s*)[-*]\s+(.*)$")
_CODE = re.compile(r"`([^`\n]+)`")
MAX_RETRY_AFTER_S = 3600.0


# ------------------------------------------------------------------ shared facts


def marker(event: ReportEvent) -> str:
    return f"[remedium:{event.key}]"


def incident_link(event: ReportEvent, ui_base: str) -> str:
    """The incident's page in the Temporal UI."""
    if event.ui_url:
        return event.ui_url
    return f"{ui_base.rstrip('/')}/namespaces/default/workflows/{event.workflow_id}"


def event_facts(event: ReportEvent) -> list[tuple[str, str]]:
    """The structured fields of an event worth showing, in reading order."""
    facts = [
        ("Runbook", event.runbook),
        ("Step", event.step),
        ("Action", event.action),
        ("Risk", event.risk),
        ("Decision", f"{event.decision} by {event.decided_by or 'unknown'}" if event.decision else None),
        ("Outcome", event.outcome),
    ]
    return [(name, value) for name, value in facts if value]


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# ------------------------------------------------------------------ markup


def plain_text(event: ReportEvent, link: str) -> str:
    """A PagerDuty note: plain text, the marker last."""
    lines = [event.title]
    if event.markdown:
        lines += ["", _CODE.sub(r"\1", _BOLD.sub(r"\1", _LINK.sub(r"\1 (\2)", event.markdown)))]
    facts = event_facts(event)
    if facts:
        lines += [""] + [f"{name}: {value}" for name, value in facts]
    if event.dry_run and event.kind in ("dry_run", "approval_requested"):
        lines += ["", "Dry run:", event.dry_run]
    if event.followups:
        lines += ["", "Follow-ups:"] + [f"- {item}" for item in event.followups]
    lines += ["", f"Incident: {link}", marker(event)]
    return "\n".join(lines)


def jira_wiki(markdown: str) -> str:
    """Markdown as Jira wiki markup (what REST v2 comment and description bodies render)."""
    out: list[str] = []
    in_code = False
    for line in markdown.splitlines():
        if line.strip().startswith("```"):
            out.append("{code}")
            in_code = not in_code
            continue
        if in_code:
            out.append(line)
            continue
        if m := _HEADING.match(line):
            line = f"h{len(m[1])}. {m[2]}"
        elif m := _BULLET.match(line):
            line = "*" * (len(m[1]) // 2 + 1) + " " + m[2]
        elif line.startswith(">"):
            line = "bq. " + line.lstrip("> ")
        line = _LINK.sub(r"[\1|\2]", line)
        line = _BOLD.sub(r"*\1*", line)
        line = _CODE.sub(r"{{\1}}", line)
        out.append(line)
    if in_code:
        out.append("{code}")
    return "\n".join(out)


def jira_body(event: ReportEvent, link: str) -> str:
    parts = [f"*{event.title}*"]
    if event.markdown:
        parts.append(jira_wiki(event.markdown))
    facts = event_facts(event)
    if facts:
        parts.append("\n".join(f"* *{name}:* {value}" for name, value in facts))
    if event.dry_run and event.kind in ("dry_run", "approval_requested"):
        parts.append("Dry run:\n{noformat}\n" + event.dry_run + "\n{noformat}")
    parts.append(f"[Incident in Temporal|{link}]")
    parts.append("{color:#97a0af}" + marker(event) + "{color}")
    return clip("\n\n".join(parts), 32000)


def slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_mrkdwn(markdown: str) -> str:
    """Markdown as Slack mrkdwn: *bold*, <url|text>, bullets; special characters escaped."""
    out = []
    for line in markdown.splitlines():
        quote = line.startswith(">")
        body = slack_escape(line.lstrip("> ") if quote else line)
        if m := _HEADING.match(body):
            body = f"**{m[2]}**"
        elif m := _BULLET.match(body):
            body = f"{m[1]}• {m[2]}"
        body = _LINK.sub(lambda lm: f"<{lm[2]}|{lm[1]}>", body)
        body = _BOLD.sub(r"*\1*", body)
        out.append(("> " if quote else "") + body)
    return "\n".join(out)


# ------------------------------------------------------------------ failures


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def rate_limited(channel: str, retry_after: float | None, what: str = "") -> ApplicationError:
    when = f"retry after {retry_after:g}s" if retry_after is not None else "no Retry-After given"
    return ApplicationError(
        f"{channel}: rate limited (HTTP 429){f' on {what}' if what else ''}; {when}",
        type=ErrorType.REPORT_RATE_LIMITED,
        next_retry_delay=timedelta(seconds=retry_after) if retry_after is not None else None,
    )


def unavailable(channel: str, detail: str) -> ApplicationError:
    """Something a later attempt may get past: 5xx, timeout, connection refused."""
    return ApplicationError(f"{channel}: unavailable: {detail}", type=ErrorType.REPORT_UNAVAILABLE)


def rejected(channel: str, detail: str) -> ApplicationError:
    """The API refused the request for a reason retrying will not fix (auth, not found, invalid)."""
    return ApplicationError(
        f"{channel}: rejected: {detail}", type=ErrorType.REPORT_REJECTED, non_retryable=True
    )

"""What the workflow tells the humans' channels (Slack, Jira, PagerDuty), and what they answer.

One `ReportEvent` per moment worth reading; each channel's activity turns it into its own
shape and is idempotent by `key` (workflow id + event id), so a retried activity posts once.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from remedium.models.alert import AlertBrief
from remedium.models.common import Model

ReportKind = Literal[
    "opened",  # incident started: open the ticket / thread
    "diagnosis",  # facts gathered, runbook chosen (or not)
    "dry_run",  # what a step would do
    "approval_requested",  # a step waits for a human: Slack shows Approve / Reject buttons
    "approval_decided",  # who approved or rejected (Slack updates the button message)
    "action",  # a step ran (or was rolled back)
    "verification",  # verify verdict
    "degraded",  # another channel could not be reported to: say so where people still read
    "outcome",  # resolved / escalated / closed upstream: resolve or escalate upstream, close ticket
]


class ReportEvent(Model):
    workflow_id: str
    event_id: str = Field(description="unique within the incident, e.g. 'approval_requested:restart'")
    kind: ReportKind
    stage: str
    alert: AlertBrief = Field(description="id, title, service, severity, source, url: not the labels")
    title: str = Field(description="one line")
    markdown: str = Field(default="", description="the body, markdown")
    ui_url: str = Field(default="", description="the incident's page in the Temporal UI")
    runbook: str | None = None
    step: str | None = None
    request: int | None = Field(default=None, description="for approvals: the approval request's number")
    action: str | None = None
    risk: str | None = None
    dry_run: str | None = None
    decision: Literal["approve", "reject"] | None = None
    decided_by: str | None = None
    outcome: str | None = Field(default=None, description="for kind=outcome: resolved, escalated, ...")
    escalate: bool = Field(default=False, description="for kind=outcome: hand over to a human upstream")
    followups: list[str] = Field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.workflow_id}/{self.event_id}"


class ReportResult(Model):
    channel: Literal["slack", "jira", "pagerduty"]
    ok: bool
    skipped: bool = Field(default=False, description="channel not configured")
    detail: str = ""
    ref: str | None = Field(default=None, description="thread ts, ticket key, incident id")

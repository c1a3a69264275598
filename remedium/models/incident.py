"""What an incident knows and did: facts, decisions, approvals, actions, audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from remedium.models.alert import Alert
from remedium.models.common import Model
from remedium.models.llm import BreakerStatus, Finding, LlmSetup
from remedium.models.policy import Policy
from remedium.models.runbook import Risk, Runbook, VerifySpec

Stage = Literal[
    "triggered",
    "diagnosing",
    "deciding",
    "awaiting_approval",
    "frozen",
    "acting",
    "monitoring",
    "evaluating",
    "rolling_back",
    "escalated",
    "reporting",
    "resolved",
    "closed",
]
Outcome = Literal["resolved", "escalated", "rejected", "closed_upstream"]


class IncidentInput(Model):
    alert: Alert


class Fact(Model):
    """One diagnostic's result; a failed diagnostic is a fact too."""

    id: str
    kind: str
    ok: bool
    value: Any = None
    error: str | None = None
    query: str | None = Field(default=None, description="the rendered query, for the audit trail")
    duration_ms: int = 0


class RenderedStep(Model):
    """A plan step with its templates rendered against the facts: what will run."""

    id: str
    action: str
    params: dict[str, Any]
    description: str = ""
    risk: Risk
    state_changing: bool
    approval_required: bool = False
    # The runbook itself says this step always asks (`approval.required`): no autonomy level,
    # however earned, lifts an author's explicit gate.
    approval_by_runbook: bool = False
    approval_timeout_s: float | None = None
    timeout_s: float = 300
    skip_reason: str | None = None


class RunbookDecision(Model):
    runbook: str | None
    reason: str
    candidates: list[str] = Field(default_factory=list)
    steps: list[RenderedStep] = Field(default_factory=list)
    verify: VerifySpec | None = None
    max_actions: int = 10
    max_duration_s: float = 3600
    vars: dict[str, Any] = Field(
        default_factory=dict, description="the chosen runbook's vars, both groups, rendered once"
    )
    escalate: str | None = Field(
        default=None, description="an escalate.when condition holds after diagnosis: which, and why"
    )
    escalate_when: list[str] = Field(
        default_factory=list, description="the chosen runbook's escalate.when, checked at each verify round"
    )


class ActionRequest(Model):
    """Input of every `<action>.dry_run` / `<action>.execute` activity."""

    incident_id: str
    step_id: str
    action: str
    params: dict[str, Any]

    @property
    def idempotency_key(self) -> str:
        return f"{self.incident_id}/{self.step_id}"


class TargetScope(Model):
    """What a step would touch, as the guardrails need it (filled by actions that know)."""

    kind: str = ""
    namespace: str = ""
    name: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    replicas_before: int | None = None
    replicas_after: int | None = None
    # kind "http": every URL the step may send to (its request and its declared undo), and
    # what each host resolved to at dry-run time, so http.allow is checked before approval
    urls: list[str] = Field(default_factory=list)
    addresses: dict[str, list[str]] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


class DryRun(Model):
    action: str
    step_id: str
    target: str
    summary: str
    diff: str = ""
    would_change: bool = True
    scope: TargetScope | None = None

    @property
    def target_key(self) -> str:
        """The identity rate limits count against: namespace/name when known, else the target."""
        return self.scope.key if self.scope is not None and self.scope.name else self.target


class SlotRequest(Model):
    """Ask a target's limiter for one run of an action; idempotent by `key`."""

    key: str = Field(description="incident workflow id / step id")
    action: str
    target: str
    max: int
    per_s: float


class SlotGrant(Model):
    granted: bool
    reason: str
    used: int = 0
    retry_after: datetime | None = None


class FreezeState(Model):
    frozen: bool = False
    reason: str = ""
    by: str = ""
    since: datetime | None = None


class Checkpoint(Model):
    """What was captured before a change and what undoes it."""

    step_id: str
    action: str
    target: str
    captured: dict[str, Any] = Field(default_factory=dict)
    undo: str = Field(description="one sentence saying what rollback will do")


class ActionResult(Model):
    action: str
    step_id: str
    idempotency_key: str
    target: str
    changed: bool
    summary: str
    output: dict[str, Any] = Field(default_factory=dict)
    checkpoint: Checkpoint | None = None


class RollbackRequest(Model):
    incident_id: str
    checkpoint: Checkpoint

    @property
    def idempotency_key(self) -> str:
        return f"{self.incident_id}/{self.checkpoint.step_id}/rollback"


class ApprovalSignal(Model):
    """Body of the `approve` / `reject` signals; every field optional so the UI form never fails.

    A signal that names no step is ignored (and audited): it could otherwise approve whatever
    step happens to be pending when it is processed, one the sender never saw. `request`
    (the pending approval's number, shown in the UI's current details) binds it further.
    """

    step: str | None = None
    by: str | None = None
    reason: str = ""
    request: int | None = Field(default=None, description="the approval request's number")


class SlackInteraction(Model):
    """A Slack click exactly as the ingress received it, so the worker can verify it again.

    Anyone with Temporal access can send the `decide` update; only Slack (holding the signing
    secret) can produce a body whose signature matches, so the user id inside is trusted only
    after the worker checked it.
    """

    body: str = Field(max_length=1024 * 1024, description="the raw request body (form encoded)")
    timestamp: str = Field(max_length=32, description="X-Slack-Request-Timestamp")
    signature: str = Field(max_length=128, description="X-Slack-Signature")


class SlackVerification(Model):
    """What the worker's re-verification of a Slack click proved (or why it proved nothing)."""

    ok: bool
    reason: str = ""
    user_id: str = ""
    username: str = ""
    workflow_id: str = ""
    step: str | None = None
    request: int | None = None
    decision: Literal["approve", "reject"] | None = None


class DecideRequest(Model):
    """Argument of the `decide` update.

    `step` is optional in the type (the update's contract) but a decision without it is
    refused with the pending step named. `by` is self-declared unless `slack` carries a click
    the worker verifies; then the approver is the one the policy maps the Slack user id to.
    """

    decision: Literal["approve", "reject"]
    by: str
    step: str | None = None
    reason: str = ""
    request: int | None = Field(default=None, description="the approval request's number")
    slack: SlackInteraction | None = None


Channel = Literal["signal", "update", "slack"]


class Approval(Model):
    step: str
    approved: bool
    by: str
    reason: str = ""
    at: datetime
    via: Channel
    verified: str | None = Field(default=None, description="the identity the channel proved (Slack user id)")
    request: int = 0


class PendingApproval(Model):
    step: str
    action: str
    risk: Risk
    dry_run: DryRun
    requested_at: datetime
    deadline: datetime
    approvers: list[str]
    request: int = Field(default=0, description="this approval request's number within the incident")
    quorum: int = Field(default=1, description="distinct approvers the step needs")
    approved_by: list[str] = Field(default_factory=list, description="who approved so far")
    verified_only: bool = Field(default=False, description="only approvals from a verified channel count")
    rule: str | None = Field(default=None, description="the policy rule that required this approval")


class AuditEntry(Model):
    at: datetime
    stage: Stage
    kind: str
    message: str
    step: str | None = None
    actor: str = "remedium"
    data: dict[str, Any] = Field(default_factory=dict)


class Escalation(Model):
    reason: str
    message: str
    to: list[str] = Field(default_factory=list)


class PrepareResult(Model):
    """Policy snapshot and candidate runbooks, fixed for the incident's life."""

    policy: Policy
    candidates: list[Runbook]
    channels: list[str] = Field(default_factory=list, description="report channels the worker has")
    ui_url: str = Field(default="", description="Temporal UI base, for links in reports")
    vars: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="runbook name -> its vars rendered from the alert (a var that failed is absent)",
    )
    llm: LlmSetup | None = Field(default=None, description="the configured LLM investigator; None: none")


class VerifyRequest(Model):
    alert: Alert
    verify: VerifySpec
    facts: dict[str, Fact]
    round: int
    vars: dict[str, Any] = Field(
        default_factory=dict, description="the decision's vars; empty: recomputed from the runbook"
    )
    escalate_when: list[str] = Field(default_factory=list, description="the runbook's escalate.when")


class VerifyVerdict(Model):
    state: Literal["resolved", "not_resolved", "worse"]
    detail: str
    facts: dict[str, Fact] = Field(default_factory=dict)
    escalate: str | None = Field(default=None, description="an escalate.when condition holds: hand off now")


class DecideInput(Model):
    alert: Alert
    policy: Policy
    candidates: list[Runbook]
    facts: dict[str, Fact]
    vars: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="PrepareResult.vars; a runbook absent here is rendered now"
    )


class DiagnosticRequest(Model):
    incident_id: str
    alert: Alert
    spec_id: str
    kind: str
    params: dict[str, Any]
    facts: dict[str, Fact] = Field(default_factory=dict)
    vars: dict[str, Any] = Field(default_factory=dict, description="the runbook's vars known at this stage")


class ReportRequest(Model):
    alert: Alert
    runbook: Runbook | None
    outcome: Outcome
    reason: str
    facts: dict[str, Fact]
    actions: list[ActionResult]
    audit: list[AuditEntry]
    vars: dict[str, Any] = Field(
        default_factory=dict, description="the decision's vars; empty: recomputed from the runbook"
    )


class Report(Model):
    outcome: Outcome
    summary: str
    escalation: Escalation | None = None
    follow_ups: list[str] = Field(default_factory=list)
    markdown: str


class IncidentStatus(Model):
    workflow_id: str
    stage: Stage
    outcome: Outcome | None = None
    alert: Alert
    runbook: str | None = None
    pending_approval: PendingApproval | None = None
    facts: dict[str, Fact] = Field(default_factory=dict)
    actions: list[ActionResult] = Field(default_factory=list)
    approvals: list[Approval] = Field(default_factory=list)
    checkpoints: list[Checkpoint] = Field(default_factory=list)
    escalation: Escalation | None = None
    report: Report | None = None
    level: str | None = Field(default=None, description="earned-autonomy level it runs at; None: no trust")
    review: bool = Field(default=False, description="sampled for post-hoc review (`remedium review`)")
    breaker: BreakerStatus | None = Field(default=None, description="the LLM investigation's circuit breaker")
    finding: Finding | None = Field(default=None, description="the LLM investigation's finding (untrusted)")


class IncidentResult(Model):
    workflow_id: str
    outcome: Outcome
    reason: str
    runbook: str | None
    actions: list[ActionResult]
    report: Report

"""The policy file (`REMEDIUM_POLICY_FILE`): who may approve, what needs approval, what is urgent."""

from __future__ import annotations

from datetime import timedelta
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Discriminator, Field, HttpUrl, Tag, field_validator, model_validator

from remedium.models.common import Duration, UserModel
from remedium.models.llm import LlmPolicy
from remedium.models.rules import PolicyRule, check_unique_ids
from remedium.models.runbook import Risk
from remedium.models.trust import TrustPolicy
from remedium.selectors import check_selector

ALL_RISKS: tuple[Risk, ...] = ("low", "medium", "high")
DEFAULT_ESCALATION_LEVEL = 2  # the Incident resource does not expose its current level


class Approver(UserModel):
    """An approver with the identities a channel can verify (`{name: bob, slack: U0BOB}`).

    A Slack click counts only when its verified user id is one of these; the approval is then
    recorded under `name`, never under the Slack username, which anyone can choose.
    """

    name: str = Field(min_length=1, description="the approver's name")
    slack: str | None = Field(
        default=None, pattern=r"^[UW][A-Z0-9]{2,}$", description="Slack user id, e.g. U0BOB"
    )


def _approver_kind(value: Any) -> str:
    """A mapping is an Approver, anything else a name: only that shape's errors are reported."""
    return "approver" if isinstance(value, dict | Approver) else "name"


ApproverEntry = Annotated[
    Annotated[str, Tag("name")] | Annotated[Approver, Tag("approver")], Discriminator(_approver_kind)
]


def _anyone() -> list[ApproverEntry]:
    return ["*"]


class ApprovalPolicy(UserModel):
    approvers: list[ApproverEntry] = Field(
        default_factory=_anyone,
        description="who may approve or reject: a name, or {name, slack: <Slack user id>}; "
        "'*' allows anyone who names themselves",
    )
    required_for: list[Risk] = Field(
        default_factory=lambda: list(ALL_RISKS),
        description="risk levels whose steps wait for a human",
    )
    timeout: Duration = Field(default=timedelta(minutes=30), description="default approval timeout")
    require_verified: list[Risk] = Field(
        default_factory=list,
        description="risk levels whose steps count only approvals from a verified channel (Slack)",
    )
    quorum: dict[Risk, Annotated[int, Field(ge=1, le=10)]] = Field(
        default_factory=dict,
        description="distinct approvers a step of each risk level needs (default 1)",
    )

    @model_validator(mode="after")
    def _unique(self) -> Self:
        """One name, one Slack id per approver: a mapping must never be ambiguous."""
        names = self.names()
        if any(isinstance(a, Approver) and a.name == "*" for a in self.approvers):
            raise ValueError("'*' is not a name: list it on its own to allow anyone")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"approver {twice[0]!r} is listed twice")
        ids = [a.slack for a in self.approvers if isinstance(a, Approver) and a.slack]
        shared = sorted({i for i in ids if ids.count(i) > 1})
        if shared:
            raise ValueError(f"Slack user id {shared[0]!r} is mapped to more than one approver")
        return self

    def names(self) -> list[str]:
        """The approvers' names, as the UI and refusals show them."""
        return [a if isinstance(a, str) else a.name for a in self.approvers]

    def allows(self, user: str) -> bool:
        """Whether a self-declared name may decide (nothing proves who sent it)."""
        return bool(user) and ("*" in self.approvers or user in self.names())

    def slack_approver(self, user_id: str) -> str | None:
        """The approver a verified Slack user id is, or None when the policy maps none to it.

        With `'*'` anyone may decide, so an unmapped Slack user counts under its user id.
        """
        for approver in self.approvers:
            if isinstance(approver, Approver) and approver.slack == user_id:
                return approver.name
        return user_id if "*" in self.approvers and user_id else None

    def quorum_for(self, risk: Risk) -> int:
        return self.quorum.get(risk, 1)

    def verified_only(self, risk: Risk) -> bool:
        return risk in self.require_verified


Autonomy = Literal["auto", "approve_all", "dry_run_only"]


class BlastRadius(UserModel):
    """Where actions may reach. Anything outside is refused and escalated, never asked about."""

    namespaces: list[str] = Field(
        default_factory=lambda: ["*"], description="namespaces (globs) an action may touch"
    )
    label_selector: str = Field(
        default="", description="a Kubernetes label selector the target's labels must match"
    )

    @field_validator("label_selector")
    @classmethod
    def _selector_syntax(cls, value: str) -> str:
        return check_selector(value)

    max_replicas_delta: int | None = Field(
        default=None, ge=0, description="largest change of replicas one step may make"
    )
    always_approve: list[str] = Field(
        default_factory=list, description="actions (globs) that always wait for a human, whatever their risk"
    )


class RateLimit(UserModel):
    """At most `max` runs of `action` on one target per `per`, across all incidents."""

    action: str = Field(description="action name or glob, e.g. kubernetes.rollout_restart")
    target: str = Field(default="*", description="target glob, e.g. payments/api or payments/*")
    max: int = Field(ge=0)
    per: Duration


class FreezePolicy(UserModel):
    """What an incident does when it is about to act while `remedium freeze` is on."""

    on_frozen: Literal["wait", "escalate"] = "wait"
    max_wait: Duration = Field(default=timedelta(hours=1), description="then escalate")
    poll: Duration = Field(default=timedelta(seconds=30), description="how often a waiting incident checks")


class PagerDutyEscalation(UserModel):
    """How an incident Remedium could not fix is handed to humans upstream: one of the three."""

    escalation_level: int | None = Field(
        default=None, ge=1, description="raise the incident to this level of its escalation policy"
    )
    assign_to: list[str] = Field(
        default_factory=list, description="PagerDuty user ids to reassign the incident to"
    )
    escalation_policy: str | None = Field(
        default=None, description="id of an escalation policy to reassign the incident to"
    )

    @model_validator(mode="after")
    def _one_way(self) -> Self:
        chosen = [
            name
            for name, value in (
                ("escalation_level", self.escalation_level),
                ("assign_to", self.assign_to),
                ("escalation_policy", self.escalation_policy),
            )
            if value
        ]
        if len(chosen) > 1:
            raise ValueError(f"choose one way to escalate, not {' and '.join(chosen)}")
        return self

    def incident_change(self) -> dict[str, Any]:
        """The fields of `PUT /incidents/{id}` that hand the incident over (default: level 2)."""
        if self.assign_to:
            return {
                "assignments": [{"assignee": {"id": u, "type": "user_reference"}} for u in self.assign_to]
            }
        if self.escalation_policy:
            return {
                "escalation_policy": {"id": self.escalation_policy, "type": "escalation_policy_reference"}
            }
        return {"escalation_level": self.escalation_level or DEFAULT_ESCALATION_LEVEL}

    def describe(self) -> str:
        if self.assign_to:
            return "reassigns this incident to " + ", ".join(self.assign_to)
        if self.escalation_policy:
            return f"reassigns this incident to escalation policy {self.escalation_policy}"
        level = self.escalation_level or DEFAULT_ESCALATION_LEVEL
        return f"hands this incident over to escalation level {level}"


class EscalationPolicy(UserModel):
    pagerduty: PagerDutyEscalation = Field(default_factory=PagerDutyEscalation)


def check_allow_entry(entry: str) -> str:
    """An allow entry is scheme, host, optional port and path: nothing a prefix trick could hide in."""
    try:
        url = HttpUrl(entry)
    except ValueError:
        raise ValueError(f"http.allow entry {entry!r} is not an http(s) URL") from None
    if url.username or url.password:
        raise ValueError(f"http.allow entry {entry!r} must not carry a user name or password")
    if url.query is not None or url.fragment is not None or "?" in entry or "#" in entry:
        raise ValueError(f"http.allow entry {entry!r} is a prefix: no query or fragment")
    if not url.host:
        raise ValueError(f"http.allow entry {entry!r} names no host")
    return entry


class HttpPolicy(UserModel):
    """Where `http` diagnostics and `http.request` actions may send requests: nowhere by default.

    Each entry is a URL prefix (`https://api.example.com/admin/`): a request goes out only when
    its scheme, host and port equal an entry's and its path starts with the entry's path at a
    `/` boundary. Loopback, link-local and metadata addresses are reached only through an entry
    that names them (`http://127.0.0.1:8080`), never through a name that resolves to one.
    """

    allow: list[Annotated[str, AfterValidator(check_allow_entry)]] = Field(
        default_factory=list,
        description="URL prefixes outbound HTTP may reach; without any, every http step is refused",
    )


def _urgent_severities() -> list[str]:
    return ["P1", "critical"]


class UrgentRule(UserModel):
    """Which incidents jump the queue: any listed severity or service (globs) makes one urgent."""

    severity: list[str] = Field(
        default_factory=_urgent_severities,
        description="severities (PagerDuty priority or urgency, the alert's severity label), any case",
    )
    service: list[str] = Field(default_factory=list, description="service globs, e.g. payments-*")

    def matches(self, severity: str, service: str) -> bool:
        wanted = {s.casefold() for s in self.severity}
        if severity and severity.casefold() in wanted:
            return True
        return bool(service) and any(fnmatchcase(service, glob) for glob in self.service)


class PriorityPolicy(UserModel):
    """What the ingress starts on the reserved urgent task queue (`<task queue>-urgent`).

    A storm of lower incidents queues on the normal task queue; an urgent one is picked up by
    the worker's separate, reserved pollers and slots instead of waiting behind it.
    """

    urgent: UrgentRule = Field(default_factory=UrgentRule)

    def is_urgent(self, severity: str, service: str) -> bool:
        return self.urgent.matches(severity, service)


class Policy(UserModel):
    api_version: Literal["remedium/v1"] = Field(default="remedium/v1", alias="apiVersion")
    kind: Literal["Policy"] = "Policy"
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    autonomy: Autonomy = Field(
        default="auto",
        description="auto: approval per risk; approve_all: every state-changing step waits for a human; "
        "dry_run_only: never act, show the dry run and escalate",
    )
    blast_radius: BlastRadius = Field(default_factory=BlastRadius)
    rate_limits: list[RateLimit] = Field(default_factory=list)
    freeze: FreezePolicy = Field(default_factory=FreezePolicy)
    escalation: EscalationPolicy = Field(default_factory=EscalationPolicy)
    http: HttpPolicy = Field(default_factory=HttpPolicy)
    priority: PriorityPolicy = Field(default_factory=PriorityPolicy)
    llm: LlmPolicy = Field(default_factory=LlmPolicy, description="the LLM investigator's circuit breaker")
    rules: Annotated[list[PolicyRule], AfterValidator(check_unique_ids)] = Field(
        default_factory=list,
        description="ordered {id, when, effect} rules for state-changing steps: the first that holds decides",
    )
    trust: TrustPolicy | None = Field(
        default=None, description="earned autonomy per runbook; absent: risk-based approvals as before"
    )

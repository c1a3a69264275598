"""The policy file (`REMEDIUM_POLICY_FILE`): who may approve and what needs approval."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from remedium.models.common import Duration, UserModel
from remedium.models.runbook import Risk
from remedium.selectors import check_selector

ALL_RISKS: tuple[Risk, ...] = ("low", "medium", "high")
DEFAULT_ESCALATION_LEVEL = 2  # the Incident resource does not expose its current level


class ApprovalPolicy(UserModel):
    approvers: list[str] = Field(
        default_factory=lambda: ["*"],
        description="user names allowed to approve or reject; '*' allows anyone who names themselves",
    )
    required_for: list[Risk] = Field(
        default_factory=lambda: list(ALL_RISKS),
        description="risk levels whose steps wait for a human",
    )
    timeout: Duration = Field(default=timedelta(minutes=30), description="default approval timeout")

    def allows(self, user: str) -> bool:
        return bool(user) and ("*" in self.approvers or user in self.approvers)


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

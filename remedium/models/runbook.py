"""The runbook schema (`runbooks/*.yaml`): what users write, validated strictly."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator

from remedium.models.common import Duration, UserModel

SLUG = r"^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$"
VAR_NAME = r"^[A-Za-z][A-Za-z0-9_]*$"  # what `vars.<name>` can spell (a leading `_` is unreachable)
VarName = Annotated[str, StringConstraints(pattern=VAR_NAME)]
Risk = Literal["low", "medium", "high"]


class RunbookMetadata(UserModel):
    name: str = Field(pattern=SLUG, description="unique runbook name")
    description: str = ""
    owner: str = ""


class MatchSpec(UserModel):
    """Which alerts a runbook is a candidate for. Every given criterion must hold."""

    source: list[Literal["pagerduty", "alertmanager", "manual"]] = Field(default_factory=list)
    service: list[str] = Field(default_factory=list, description="glob patterns on the service")
    title: str | None = Field(default=None, description="regular expression searched in the title")
    labels: dict[str, str] = Field(default_factory=dict, description="label -> glob pattern")

    @field_validator("title")
    @classmethod
    def _title_is_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value


class DiagnosticSpec(UserModel):
    id: str = Field(pattern=SLUG)
    kind: str = Field(description="a registered diagnostic kind, e.g. http")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    timeout: Duration = timedelta(seconds=30)
    description: str = ""


class DecideSpec(UserModel):
    when: list[str] = Field(default_factory=list, description="conditions over facts; all must hold")
    priority: int = Field(default=0, description="higher wins when several runbooks match")


class ApprovalRule(UserModel):
    required: bool = Field(default=False, description="always ask a human, whatever the policy")
    timeout: Duration | None = Field(default=None, description="overrides the policy's timeout")


class PlanStep(UserModel):
    id: str = Field(pattern=SLUG)
    action: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    description: str = ""
    risk: Risk = "medium"
    approval: ApprovalRule = Field(default_factory=ApprovalRule)
    when: str | None = Field(default=None, description="condition; the step is skipped when false")
    timeout: Duration = timedelta(minutes=5)


class VerifySpec(UserModel):
    checks: list[DiagnosticSpec] = Field(default_factory=list)
    success: list[str] = Field(min_length=1, description="conditions meaning 'recovered'")
    worse_if: list[str] = Field(default_factory=list, description="conditions meaning 'roll back now'")
    every: Duration = timedelta(seconds=30)
    within: Duration = timedelta(minutes=5)
    initial_delay: Duration = timedelta(0)


class EscalateSpec(UserModel):
    to: list[str] = Field(default_factory=list)
    when: list[str] = Field(
        default_factory=list,
        description="escalation thresholds: conditions checked after diagnosis and at every verify round; "
        "any that holds hands the incident to a human at once, whatever the autonomy level",
    )
    message: str = "Remedium could not resolve {{ alert.title }}: {{ reason }}"


class ReportSpec(UserModel):
    summary: str = "{{ alert.title }}: {{ outcome }}"
    follow_ups: list[str] = Field(default_factory=list)


class LimitsSpec(UserModel):
    max_actions: int = Field(default=10, ge=1)
    max_duration: Duration = timedelta(hours=1)


class Runbook(UserModel):
    api_version: Literal["remedium/v1"] = Field(alias="apiVersion")
    kind: Literal["Runbook"]
    metadata: RunbookMetadata
    match: MatchSpec
    vars: dict[VarName, Any] = Field(
        default_factory=dict,
        description="named values, each a template or a literal, used as `vars.<name>`; rendered once: "
        "from the alert before diagnosis, or after diagnosis when they use facts",
    )
    diagnose: list[DiagnosticSpec] = Field(default_factory=list)
    decide: DecideSpec = Field(default_factory=DecideSpec)
    plan: list[PlanStep] = Field(min_length=1)
    verify: VerifySpec
    escalate: EscalateSpec = Field(default_factory=EscalateSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)

    @property
    def name(self) -> str:
        return self.metadata.name

"""Policy rules as code (`rules:` in the policy): ordered `{id, when, effect}`, first match wins.

Each rule's `when` is a condition in the runbook condition language (the Jinja sandbox of
`remedium.runbook.templating`, bounded by `template_limits`) over the step about to run, its
dry run, the alert, the facts, the runbook's autonomy level and the incident-local time. The
first rule whose condition holds decides: `deny` refuses the step, `allow` lets it run without
the policy's risk-based approval, `require_approval` makes it wait for a quorum of approvers.
No rule matching leaves the step to the rest of the policy, as if there were no rules.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Discriminator, Field, Tag, field_validator

from remedium.errors import TemplateError
from remedium.models.common import Model, UserModel
from remedium.runbook.templating import check_condition

RULE_ID = r"^[a-z0-9]([a-z0-9_.-]*[a-z0-9])?$"
Effect = Literal["allow", "deny", "require_approval"]


class ApprovalEffect(UserModel):
    """How many distinct approvers the step needs, and (optionally) which ones may count."""

    quorum: Annotated[int, Field(ge=1, le=10)] = Field(default=1, description="distinct approvers needed")
    approvers: list[str] | None = Field(
        default=None,
        description="only these approvers count for this step (each must also be a policy approver); "
        "default: the policy's approval.approvers",
    )


class RequireApproval(UserModel):
    require_approval: ApprovalEffect = Field(default_factory=ApprovalEffect)


def _effect_kind(value: Any) -> str:
    """A mapping is `{require_approval: ...}`, anything else a name: only that shape's errors show."""
    return "approval" if isinstance(value, dict | RequireApproval) else "name"


EffectEntry = Annotated[
    Annotated[Effect, Tag("name")] | Annotated[RequireApproval, Tag("approval")], Discriminator(_effect_kind)
]


class PolicyRule(UserModel):
    id: str = Field(pattern=RULE_ID, description="named in the audit and the approval request")
    description: str = ""
    when: str | None = Field(
        default=None,
        description="condition over step, dry_run, alert, facts, level and time; absent: always",
    )
    effect: EffectEntry = Field(
        description="allow | deny | require_approval | {require_approval: {quorum: N, approvers: [...]}}"
    )
    timezone: str = Field(default="UTC", description="the zone `time` is read in, e.g. Europe/Paris")

    @field_validator("when")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_condition(value)
            except TemplateError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Paris)") from None
        return value

    @property
    def kind(self) -> Effect:
        return "require_approval" if isinstance(self.effect, RequireApproval) else self.effect

    @property
    def approval(self) -> ApprovalEffect:
        return self.effect.require_approval if isinstance(self.effect, RequireApproval) else ApprovalEffect()


class RuleCheck(Model):
    """One rule's evaluation, as `remedium policy test` shows it."""

    id: str
    result: Literal["holds", "false", "unknown"]
    detail: str


class RuleDecision(Model):
    """What the rules decided for one step: the rule that fired (None: no rule), and why."""

    rule: str | None = None
    effect: Effect | None = None
    quorum: int = 1
    approvers: list[str] | None = None
    reason: str
    checks: list[RuleCheck] = Field(default_factory=list)


def check_unique_ids(rules: list[PolicyRule]) -> list[PolicyRule]:
    """Rule ids name decisions in the audit: one id, one rule."""
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise ValueError(f"rule id {rule.id!r} is used twice")
        seen.add(rule.id)
    return rules

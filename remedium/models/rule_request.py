"""Input of the `policy.rules` activity: everything a rule may look at, as the workflow saw it."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from remedium.models.alert import Alert
from remedium.models.common import Model
from remedium.models.incident import DryRun, Fact, RenderedStep
from remedium.models.rules import PolicyRule


class RuleRequest(Model):
    rules: list[PolicyRule]
    step: RenderedStep
    dry_run: DryRun
    alert: Alert
    facts: dict[str, Fact] = Field(default_factory=dict)
    runbook: str | None = None
    level: str | None = Field(default=None, description="the runbook's autonomy level; None without trust")
    now: datetime = Field(description="workflow.now(): the rules read the incident's own clock")

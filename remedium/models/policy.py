"""The policy file (`REMEDIUM_POLICY_FILE`): who may approve and what needs approval."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field

from remedium.models.common import Duration, UserModel
from remedium.models.runbook import Risk

ALL_RISKS: tuple[Risk, ...] = ("low", "medium", "high")


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


class Policy(UserModel):
    api_version: Literal["remedium/v1"] = Field(default="remedium/v1", alias="apiVersion")
    kind: Literal["Policy"] = "Policy"
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)

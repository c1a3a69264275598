"""The engine's own activities: policy and runbook selection, decision, verification, report.

They run the pure runbook engine on the worker so that every result (and the runbook
snapshot used) is recorded in the workflow history.
"""

from __future__ import annotations

from temporalio import activity

from remedium.models import (
    Alert,
    DecideInput,
    Policy,
    PrepareResult,
    Report,
    ReportRequest,
    Runbook,
    RunbookDecision,
    VerifyRequest,
    VerifyVerdict,
)
from remedium.runbook import engine


class RunbookActivities:
    def __init__(
        self, runbooks: list[Runbook], policy: Policy, channels: list[str] | None = None, ui_url: str = ""
    ) -> None:
        self._runbooks = runbooks
        self._policy = policy
        self._channels = channels or []
        self._ui_url = ui_url

    @activity.defn(name="incident.prepare")
    async def prepare(self, alert: Alert) -> PrepareResult:
        return PrepareResult(
            policy=self._policy,
            candidates=engine.candidates(self._runbooks, alert),
            channels=self._channels,
            ui_url=self._ui_url,
        )

    @activity.defn(name="runbook.decide")
    async def decide(self, request: DecideInput) -> RunbookDecision:
        return engine.decide(request)

    @activity.defn(name="runbook.verify")
    async def verify(self, request: VerifyRequest) -> VerifyVerdict:
        return engine.judge(request)

    @activity.defn(name="incident.report")
    async def report(self, request: ReportRequest) -> Report:
        return engine.report(request)

    def activities(self) -> list[object]:
        return [self.prepare, self.decide, self.verify, self.report]

"""The engine's own activities: policy and runbook selection, decision, verification, report.

They run the pure runbook engine on the worker so that every result (and the runbook
snapshot used) is recorded in the workflow history, the rendered `vars` too: prepare renders
each candidate's alert vars, decide its facts vars, and the decision hands both on.

The engine renders templates, so each activity runs it in a thread (`asyncio.to_thread`):
the worker's event loop, which under `remedium up` also serves the ingress, never waits for
a template, and each template is bounded in time and size there (`remedium.runbook.template_limits`).
"""

from __future__ import annotations

import asyncio

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
from remedium.models.llm import LlmSetup
from remedium.names import DECIDE_ACTIVITY, PREPARE_ACTIVITY, REPORT_ACTIVITY, VERIFY_ACTIVITY
from remedium.runbook import engine


class RunbookActivities:
    def __init__(
        self,
        runbooks: list[Runbook],
        policy: Policy,
        channels: list[str] | None = None,
        ui_url: str = "",
        llm: LlmSetup | None = None,
    ) -> None:
        self._llm = llm  # the LLM investigator, when one is configured
        self._runbooks = runbooks
        self._policy = policy
        self._channels = channels or []
        self._ui_url = ui_url

    @activity.defn(name=PREPARE_ACTIVITY)
    async def prepare(self, alert: Alert) -> PrepareResult:
        return await asyncio.to_thread(self._prepare, alert)

    def _prepare(self, alert: Alert) -> PrepareResult:
        candidates = engine.candidates(self._runbooks, alert)
        return PrepareResult(
            policy=self._policy,
            candidates=candidates,
            channels=self._channels,
            ui_url=self._ui_url,
            vars={rb.name: engine.render_alert_vars(rb, alert) for rb in candidates},
            llm=self._llm,
        )

    @activity.defn(name=DECIDE_ACTIVITY)
    async def decide(self, request: DecideInput) -> RunbookDecision:
        return await asyncio.to_thread(engine.decide, request)

    @activity.defn(name=VERIFY_ACTIVITY)
    async def verify(self, request: VerifyRequest) -> VerifyVerdict:
        if request.vars:
            return await asyncio.to_thread(engine.judge, request)
        # No vars: a workflow older than them; render them from the runbook this verify is from.
        runbook = next((rb for rb in self._runbooks if rb.verify == request.verify), None)
        return await asyncio.to_thread(engine.judge, request, runbook)

    @activity.defn(name=REPORT_ACTIVITY)
    async def report(self, request: ReportRequest) -> Report:
        return await asyncio.to_thread(engine.report, request)

    def activities(self) -> list[object]:
        return [self.prepare, self.decide, self.verify, self.report]

"""IncidentWorkflow: trigger → diagnose → decide → act → monitor → evaluate → report.

Every side effect is an activity named after the registered action or diagnostic, so
new integrations plug in without touching this file. Approvals arrive as the `approve`
/ `reject` signals (what the Temporal UI sends) or the `decide` update (CLI, Slack clicks);
the ApprovalGate keeps their state and rules, the Journal says what happened. This file
keeps what makes history: the order of activities, timers, waits and search attributes.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from remedium.models import (
        ActionRequest,
        ActionResult,
        Alert,
        AuditEntry,
        Checkpoint,
        DecideInput,
        DecideRequest,
        DiagnosticRequest,
        DryRun,
        Escalation,
        ExternalUpdate,
        Fact,
        IncidentInput,
        IncidentResult,
        IncidentStatus,
        Outcome,
        Policy,
        PrepareResult,
        RenderedStep,
        Report,
        ReportRequest,
        Runbook,
        RunbookDecision,
        Stage,
    )
    from remedium.models.runbook import DiagnosticSpec
    from remedium.names import (
        APPROVE_SIGNAL,
        AUDIT_QUERY,
        DECIDE_ACTIVITY,
        DECIDE_UPDATE,
        EXTERNAL_UPDATE_SIGNAL,
        LLM_DIAGNOSTIC_KIND,
        PREPARE_ACTIVITY,
        REJECT_SIGNAL,
        REPORT_ACTIVITY,
        SA_RUNBOOK,
        STATUS_QUERY,
        WORKFLOW_TYPE,
        action_activity,
        diagnostic_activity,
    )
    from workflows.approvals import APPROVE_HELP, DECIDE_HELP, REJECT_HELP, ApprovalGate
    from workflows.details import current_details, stage_attributes
    from workflows.escalation import ESCALATE_WHEN, HandOff, at_decision, at_verify
    from workflows.guardrails import Guardrails
    from workflows.investigation import BREAKER_RESET_HELP, BREAKER_RESET_UPDATE, BreakerReset, Investigator
    from workflows.journal import Journal
    from workflows.levels import IncidentAutonomy
    from workflows.monitor import monitor
    from workflows.retries import (
        ACTION_HEARTBEAT,
        ACTION_RETRY,
        DIAGNOSTIC_RETRY,
        ENGINE_RETRY,
        ENGINE_TIMEOUT,
        Abort,
        diagnostic_failure,
        diagnostic_heartbeat,
        failure_message,
    )
    from workflows.rollback import roll_back
    from workflows.rules import POLICY_RULES, PolicyRules


@workflow.defn(name=WORKFLOW_TYPE)
class IncidentWorkflow:
    """One incident, from alert to report; its state is what the `status` query shows."""

    @workflow.init
    def __init__(self, input: IncidentInput) -> None:
        self._alert: Alert = input.alert
        self._stage: Stage = "triggered"
        self._outcome: Outcome | None = None
        self._policy: Policy | None = None
        self._runbook: Runbook | None = None
        self._vars: dict[str, Any] = {}  # the chosen runbook's vars (RunbookDecision.vars)
        self._facts: dict[str, Fact] = {}
        self._actions: list[ActionResult] = []
        self._checkpoints: list[Checkpoint] = []
        self._external: ExternalUpdate | None = None
        self._escalation: Escalation | None = None
        self._report: Report | None = None
        self._journal = Journal(self._alert, lambda: self._stage)
        self._gate = ApprovalGate(self._journal, stage=lambda: self._stage, policy=lambda: self._policy)
        self._guards = Guardrails(
            self._journal, lambda: self._policy, set_stage=self._set_stage, sleep=self._sleep
        )
        self._level: str | None = None  # the runbook's autonomy level (workflows/levels.py); None: no trust
        self._autonomy = IncidentAutonomy(self._journal, lambda: self._policy)
        self._investigator = Investigator(self._journal, lambda: self._policy, host=self)
        self._rules = PolicyRules(self._journal, self._gate, lambda: self._policy, lambda: self._runbook)

    @workflow.run
    async def run(self, input: IncidentInput) -> IncidentResult:
        """Whatever stops the plan (refusal, failure, rejection) undoes what was done, then reports."""
        alert = input.alert
        self._journal.triggered()
        self._set_stage("triggered")
        reason = ""
        outcome: Outcome = "escalated"
        try:
            prepared = await workflow.execute_activity(
                PREPARE_ACTIVITY,
                alert,
                result_type=PrepareResult,
                start_to_close_timeout=ENGINE_TIMEOUT,
                retry_policy=ENGINE_RETRY,
            )
            self._policy = prepared.policy
            self._investigator.setup = prepared.llm
            if prepared.channels and workflow.patched("reporting-v1"):
                self._journal.open_channels(prepared)
            self._journal.candidates(prepared)
            outcome, reason = await self._remediate(alert, prepared)
        except Abort as abort:
            outcome, reason = abort.outcome, abort.reason
            if self._checkpoints and not isinstance(abort, HandOff):
                reason += await self._roll_back()
        return await self._finish(alert, outcome, reason)

    async def _remediate(self, alert: Alert, prepared: PrepareResult) -> tuple[Outcome, str]:
        """The stages in order; an upstream resolve/acknowledge ends them between any two."""
        if not prepared.candidates:
            if prepared.llm is None or not workflow.patched("llm-investigator-v1"):
                raise Abort("no runbook matches this alert")
            self._policy = (prepared := await self._investigator.investigate(alert, prepared)).policy

        self._set_stage("diagnosing")
        await self._diagnose(
            [(spec, prepared.vars.get(rb.name, {})) for rb in prepared.candidates for spec in rb.diagnose]
        )
        if self._stopped():
            return self._closed_upstream()

        self._set_stage("deciding")
        decision = await self._decide(alert, prepared)
        self._level = await self._autonomy.begin(decision.runbook or "")
        if decision.escalate is not None and workflow.patched(ESCALATE_WHEN):
            raise at_decision(self._journal, decision)

        self._set_stage("acting")
        deadline = workflow.now() + timedelta(seconds=decision.max_duration_s)
        executed = 0
        for step in decision.steps:
            if self._stopped():
                return self._closed_upstream()
            if step.skip_reason is not None:
                self._journal.skipped(step)
                continue
            if step.state_changing:
                if executed >= decision.max_actions:
                    raise Abort(f"circuit breaker: runbook limit of {decision.max_actions} action(s) reached")
                if workflow.now() >= deadline:
                    raise Abort(
                        f"circuit breaker: runbook max_duration of {decision.max_duration_s:.0f}s exceeded"
                    )
            await self._act(step)
            executed += 1
            if self._stopped():
                return self._closed_upstream()

        if decision.verify is None:
            return "resolved", "plan completed; the runbook declares no verification"
        self._set_stage("monitoring")
        verdict = await monitor(
            alert, decision, self._journal, self._facts,
            diagnose=self._diagnose, sleep=self._sleep, stopped=self._stopped,
        )  # fmt: skip
        if self._stopped():
            return self._closed_upstream()

        self._set_stage("evaluating")
        self._journal.evaluated(verdict)
        if verdict.escalate is not None and workflow.patched(ESCALATE_WHEN):
            raise at_verify(self._journal, verdict, self._checkpoints)
        if verdict.state == "resolved":
            return "resolved", verdict.detail
        raise Abort(
            "verification failed, the incident got worse: " + verdict.detail.removeprefix("worse: ")
            if verdict.state == "worse"
            else "verification failed: " + verdict.detail
        )

    async def _diagnose(self, specs: list[tuple[DiagnosticSpec, dict[str, Any]]]) -> None:
        """Run diagnostics concurrently, each with its runbook's vars; every result becomes a fact."""
        if not specs:
            return
        facts = await asyncio.gather(*(self._run_diagnostic(spec, given) for spec, given in specs))
        for fact in facts:
            self._facts[fact.id] = fact
            self._journal.fact(fact)

    async def _run_diagnostic(self, spec: DiagnosticSpec, given: dict[str, Any]) -> Fact:
        """A diagnostic that fails or times out is a fact too: the decision can see it."""
        if spec.kind == LLM_DIAGNOSTIC_KIND and workflow.patched("llm-diagnostic-v1"):
            return await self._investigator.diagnose(spec, self._alert)  # workflows/investigation.py
        request = DiagnosticRequest(
            incident_id=workflow.info().workflow_id,
            alert=self._alert,
            spec_id=spec.id,
            kind=spec.kind,
            params=spec.with_,
            facts=self._facts,
            vars=given,
        )
        try:
            fact: Fact = await workflow.execute_activity(
                diagnostic_activity(spec.kind),
                request,
                result_type=Fact,
                schedule_to_close_timeout=spec.timeout,
                start_to_close_timeout=spec.timeout,
                heartbeat_timeout=diagnostic_heartbeat(spec.timeout),
                retry_policy=DIAGNOSTIC_RETRY,
            )
        except ActivityError as err:
            error, refused = diagnostic_failure(err, spec.timeout)
            if refused:
                self._journal.diagnostic_refused(spec.id, spec.kind, error)  # audit only: no command
            return Fact(id=spec.id, kind=spec.kind, ok=False, error=error)
        return fact

    async def _decide(self, alert: Alert, prepared: PrepareResult) -> RunbookDecision:
        """Pick the runbook and render its plan against the facts; no runbook escalates."""
        decision: RunbookDecision = await workflow.execute_activity(
            DECIDE_ACTIVITY,
            DecideInput(
                alert=alert,
                policy=prepared.policy,
                candidates=prepared.candidates,
                facts=self._facts,
                vars=prepared.vars,
            ),
            result_type=RunbookDecision,
            start_to_close_timeout=ENGINE_TIMEOUT,
            retry_policy=ENGINE_RETRY,
        )
        self._journal.decided(decision, self._facts)
        if decision.runbook is None:
            raise Abort(decision.reason)
        self._runbook = next(rb for rb in prepared.candidates if rb.name == decision.runbook)
        self._vars = decision.vars
        workflow.upsert_search_attributes([SA_RUNBOOK.value_set(decision.runbook)])
        self._journal.plan(decision)
        return decision

    async def _act(self, step: RenderedStep) -> None:
        """Dry run, guardrails and approval first, then the change, which leaves a checkpoint."""
        request = ActionRequest(
            incident_id=workflow.info().workflow_id, step_id=step.id, action=step.action, params=step.params
        )
        if step.state_changing:
            try:
                dry = await workflow.execute_activity(
                    action_activity(step.action, "dry_run"),
                    request,
                    result_type=DryRun,
                    start_to_close_timeout=timedelta(seconds=60),
                    heartbeat_timeout=ACTION_HEARTBEAT,
                    retry_policy=ACTION_RETRY,
                )
            except ActivityError as err:
                raise Abort(f"dry run of step {step.id} failed: {failure_message(err)}") from None
            self._journal.dry_run(step, dry)
            guarded = workflow.patched("guardrails-v1")
            needs_approval = self._autonomy.needs_approval(step, self._level)
            if guarded:
                if (refusal := self._guards.refusal(step, dry)) is not None:
                    raise Abort(refusal)
                needs_approval = self._guards.forces_approval(step) or needs_approval
            if self._rules.active() and workflow.patched(POLICY_RULES):
                needs_approval = await self._rules.approval(step, dry, needs_approval, self.status())
            if needs_approval:
                await self._await_approval(step, dry)
                if self._stopped():
                    return
                self._set_stage("acting")
            if guarded:
                if (refusal := await self._guards.wait_unfrozen(step)) is not None:
                    raise Abort(refusal)
                if self._stopped():
                    return
                if (refusal := await self._guards.acquire_slot(step, dry)) is not None:
                    raise Abort(refusal)
        self._journal.record("action_started", f"executing {step.id} ({step.action})", step=step.id)
        try:
            result = await workflow.execute_activity(
                action_activity(step.action, "execute"),
                request,
                result_type=ActionResult,
                start_to_close_timeout=timedelta(seconds=step.timeout_s),
                heartbeat_timeout=ACTION_HEARTBEAT,
                retry_policy=ACTION_RETRY,
            )
        except ActivityError as err:
            self._journal.action_failed(step, failure_message(err))
            raise Abort(f"step {step.id} ({step.action}) failed: {failure_message(err)}") from None
        self._actions.append(result)
        if result.checkpoint is not None:
            self._checkpoints.append(result.checkpoint)
        self._journal.action_done(step, result)

    async def _await_approval(self, step: RenderedStep, dry: DryRun) -> None:
        """Hold the step until a human decides, the deadline passes, or it is closed upstream."""
        timeout = self._gate.open(step, dry)
        self._set_stage("awaiting_approval")
        self._gate.announce(step, dry)
        try:
            await workflow.wait_condition(
                lambda: self._gate.verdict is not None or self._stopped(), timeout=timeout
            )
        except TimeoutError:
            self._gate.expire(step, timeout)
            raise Abort(f"approval of step {step.id} timed out after {timeout}") from None
        verdict = self._gate.take()
        self._update_details()
        if verdict is None:  # stopped upstream while waiting
            return
        if not verdict.approved:
            raise Abort(
                f"step {step.id} rejected by {verdict.by}"
                + (f": {verdict.reason}" if verdict.reason else ""),
                outcome="rejected",
            )

    async def _sleep(self, duration: timedelta) -> bool:
        """A durable timer that an upstream resolve/acknowledge cuts short; True when it did."""
        try:
            await workflow.wait_condition(self._stopped, timeout=duration)
        except TimeoutError:
            pass
        return self._stopped()

    async def _roll_back(self) -> str:
        """Undo checkpoints newest first (saga, workflows/rollback.py); say what could not be undone."""
        self._set_stage("rolling_back")
        reason = await roll_back(self._journal, self._checkpoints)
        self._checkpoints = []
        return reason

    def _closed_upstream(self) -> tuple[Outcome, str]:
        ext = self._external
        assert ext is not None
        return "closed_upstream", f"incident {ext.event} upstream" + (f" by {ext.by}" if ext.by else "")

    async def _finish(self, alert: Alert, outcome: Outcome, reason: str) -> IncidentResult:
        """Write the report, tell the channels (bounded), and end once every handler is done."""
        self._outcome = outcome
        if outcome in ("escalated", "rejected"):
            self._set_stage("escalated")
        self._set_stage("reporting")
        report = await workflow.execute_activity(
            REPORT_ACTIVITY,
            ReportRequest(
                alert=alert,
                runbook=self._runbook,
                outcome=outcome,
                reason=reason,
                facts=self._facts,
                actions=self._actions,
                audit=self._journal.entries,
                vars=self._vars,
            ),
            result_type=Report,
            start_to_close_timeout=ENGINE_TIMEOUT,
            retry_policy=ENGINE_RETRY,
        )
        self._report = report
        self._escalation = report.escalation
        self._journal.reported(report, outcome, reason)
        await self._autonomy.report(outcome, self._actions, self._gate.approvals)
        self._set_stage(
            "resolved" if outcome == "resolved" else "escalated" if self._escalation else "closed"
        )
        runbook = self._runbook.name if self._runbook else None
        self._journal.outcome(report, outcome, runbook)
        await self._journal.close()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return IncidentResult(
            workflow_id=workflow.info().workflow_id,
            outcome=outcome,
            reason=reason,
            runbook=runbook,
            actions=self._actions,
            report=report,
        )

    # ------------------------------------------- signals, updates and queries

    @workflow.signal(name=APPROVE_SIGNAL, description=APPROVE_HELP)
    def approve(self, payload: Any = None) -> None:
        self._gate.on_signal(payload, approved=True)
        self._update_details()

    @workflow.signal(name=REJECT_SIGNAL, description=REJECT_HELP)
    def reject(self, payload: Any = None) -> None:
        self._gate.on_signal(payload, approved=False)
        self._update_details()

    @workflow.signal(
        name=EXTERNAL_UPDATE_SIGNAL,
        description="Lifecycle event from upstream (resolved/acknowledged stop further actions).",
    )
    def external_update(self, update: ExternalUpdate) -> None:
        self._journal.external_update(update)
        if update.event in ("resolved", "acknowledged") and self._external is None:
            self._external = update
            self._update_details()

    @workflow.update(name=DECIDE_UPDATE, description=DECIDE_HELP)
    async def decide(self, request: DecideRequest) -> str:
        """No validator: the gate audits a refusal, then raises it. A Slack click is re-verified
        by the worker, since anyone with Temporal access can send this update."""
        verified = await self._gate.verify_slack(request)
        try:
            return self._gate.decide(request, verified)
        finally:
            self._update_details()

    @workflow.update(name=BREAKER_RESET_UPDATE, description=BREAKER_RESET_HELP)
    def breaker_reset(self, request: BreakerReset) -> str:
        return self._investigator.reset(request)

    @workflow.query(
        name=STATUS_QUERY, description="Stage, pending approval (with its dry run), facts, actions."
    )
    def status(self) -> IncidentStatus:
        return IncidentStatus(
            workflow_id=workflow.info().workflow_id,
            stage=self._stage,
            outcome=self._outcome,
            alert=self._alert,
            runbook=self._runbook.name if self._runbook else None,
            pending_approval=self._gate.pending,
            facts=self._facts,
            actions=self._actions,
            approvals=self._gate.approvals,
            checkpoints=self._checkpoints,
            escalation=self._escalation,
            report=self._report,
            level=self._level,
            review=self._autonomy.review,
            **self._investigator.status_fields(),
        )

    @workflow.query(name=AUDIT_QUERY, description="The decision log, oldest first.")
    def audit(self) -> list[AuditEntry]:
        return self._journal.entries

    def _stopped(self) -> bool:
        return self._external is not None

    def _set_stage(self, stage: Stage) -> None:
        """The stage is searchable (and the first one carries service and severity)."""
        self._stage = stage
        workflow.upsert_search_attributes(stage_attributes(stage, self._alert))
        self._update_details()

    def _update_details(self) -> None:
        workflow.set_current_details(current_details(self.status()))

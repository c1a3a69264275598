"""IncidentWorkflow: trigger → diagnose → decide → act → monitor → evaluate → report.

Every side effect is an activity named after the registered action or diagnostic, so
new integrations plug in without touching this file. Approvals arrive as the `approve`
/ `reject` signals (what the Temporal UI and Slack send) or the validated `decide` update.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from remedium.guards import approval_forced, blast_radius_refusal, rate_limit_for
    from remedium.models import (
        ActionRequest,
        ActionResult,
        Approval,
        ApprovalSignal,
        AuditEntry,
        Checkpoint,
        DecideInput,
        DecideRequest,
        DiagnosticRequest,
        DryRun,
        Escalation,
        ExternalUpdate,
        Fact,
        FreezeState,
        IncidentInput,
        IncidentResult,
        IncidentStatus,
        Outcome,
        PendingApproval,
        Policy,
        PrepareResult,
        RenderedStep,
        Report,
        ReportEvent,
        ReportKind,
        ReportRequest,
        RollbackRequest,
        Runbook,
        RunbookDecision,
        SlotGrant,
        SlotRequest,
        Stage,
        VerifyRequest,
        VerifyVerdict,
    )
    from remedium.models.common import utc_text
    from remedium.models.runbook import DiagnosticSpec
    from remedium.names import SA_RUNBOOK, SA_SERVICE, SA_SEVERITY, SA_STAGE
    from remedium.summary import fact_brief
    from workflows.details import current_details
    from workflows.outbox import Outbox

ENGINE_TIMEOUT = timedelta(seconds=30)
ENGINE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
# ~2.5 minutes of retries: an API server restarting or a brief network partition delays
# a step instead of failing it; non-retryable errors (404, 403, bad params) stop at once.
ACTION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
    non_retryable_error_types=["InvalidParams", "TemplateError"],
)
ACTION_HEARTBEAT = timedelta(seconds=10)
REPORT_DRAIN = timedelta(minutes=15)


class _Abort(Exception):
    """The plan cannot go on; the reason is escalated with everything gathered so far."""

    def __init__(self, reason: str, outcome: Outcome = "escalated") -> None:
        super().__init__(reason)
        self.reason = reason
        self.outcome: Outcome = outcome


def _failure_message(err: BaseException) -> str:
    cause = err.cause if isinstance(err, ActivityError) else None
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    return str(cause or err)


@workflow.defn(name="IncidentWorkflow")
class IncidentWorkflow:
    @workflow.init
    def __init__(self, input: IncidentInput) -> None:
        self._alert = input.alert
        self._stage: Stage = "triggered"
        self._outcome: Outcome | None = None
        self._policy: Policy | None = None
        self._runbook: Runbook | None = None
        self._facts: dict[str, Fact] = {}
        self._actions: list[ActionResult] = []
        self._checkpoints: list[Checkpoint] = []
        self._approvals: list[Approval] = []
        self._pending: PendingApproval | None = None
        self._verdict: Approval | None = None
        self._external: ExternalUpdate | None = None
        self._escalation: Escalation | None = None
        self._report: Report | None = None
        self._audit: list[AuditEntry] = []
        self._outbox: Outbox | None = None
        self._report_seq = 0
        self._ui_url = ""

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, input: IncidentInput) -> IncidentResult:
        alert = input.alert
        self._record(
            "triggered", f"alert from {alert.source}: {alert.title}", data=alert.model_dump(mode="json")
        )
        self._set_stage("triggered")
        reason = ""
        outcome: Outcome = "escalated"
        try:
            prepared = await workflow.execute_activity(
                "incident.prepare",
                alert,
                result_type=PrepareResult,
                start_to_close_timeout=ENGINE_TIMEOUT,
                retry_policy=ENGINE_RETRY,
            )
            self._policy = prepared.policy
            if prepared.channels and workflow.patched("reporting-v1"):
                self._ui_url = prepared.ui_url
                self._outbox = Outbox(prepared.channels, self._record_report, self._channel_failed)
                self._notify("opened", f"Remedium took incident: {alert.title}", self._opening_note(prepared))
            self._record(
                "candidates",
                f"{len(prepared.candidates)} candidate runbook(s): "
                + (", ".join(rb.name for rb in prepared.candidates) or "none"),
            )
            outcome, reason = await self._remediate(alert, prepared)
        except _Abort as abort:
            outcome, reason = abort.outcome, abort.reason
            if self._checkpoints:
                reason += await self._roll_back()
        return await self._finish(alert, outcome, reason)

    async def _remediate(self, alert: Any, prepared: PrepareResult) -> tuple[Outcome, str]:
        if not prepared.candidates:
            raise _Abort("no runbook matches this alert")

        self._set_stage("diagnosing")
        specs = [spec for rb in prepared.candidates for spec in rb.diagnose]
        await self._diagnose(specs)
        if self._stopped():
            return self._closed_upstream()

        self._set_stage("deciding")
        decision = await workflow.execute_activity(
            "runbook.decide",
            DecideInput(
                alert=alert, policy=prepared.policy, candidates=prepared.candidates, facts=self._facts
            ),
            result_type=RunbookDecision,
            start_to_close_timeout=ENGINE_TIMEOUT,
            retry_policy=ENGINE_RETRY,
        )
        self._record(
            "decision", decision.reason, data={"runbook": decision.runbook, "candidates": decision.candidates}
        )
        self._notify(
            "diagnosis",
            f"Diagnosis: {decision.reason}",
            self._facts_markdown(),
            runbook=decision.runbook,
        )
        if decision.runbook is None:
            raise _Abort(decision.reason)
        self._runbook = next(rb for rb in prepared.candidates if rb.name == decision.runbook)
        workflow.upsert_search_attributes([SA_RUNBOOK.value_set(decision.runbook)])
        self._record(
            "plan",
            f"plan of {len(decision.steps)} step(s): "
            + ", ".join(f"{s.id} ({s.action})" for s in decision.steps),
            data={"steps": [s.model_dump(mode="json") for s in decision.steps]},
        )

        self._set_stage("acting")
        deadline = workflow.now() + timedelta(seconds=decision.max_duration_s)
        executed = 0
        for step in decision.steps:
            if self._stopped():
                return self._closed_upstream()
            if step.skip_reason is not None:
                self._record("step_skipped", f"step {step.id} skipped: {step.skip_reason}", step=step.id)
                continue
            if step.state_changing:
                if executed >= decision.max_actions:
                    raise _Abort(
                        f"circuit breaker: runbook limit of {decision.max_actions} action(s) reached"
                    )
                if workflow.now() >= deadline:
                    raise _Abort(
                        f"circuit breaker: runbook max_duration of {decision.max_duration_s:.0f}s exceeded"
                    )
            await self._act(step)
            executed += 1
            if self._stopped():
                return self._closed_upstream()

        if decision.verify is None:
            return "resolved", "plan completed; the runbook declares no verification"
        self._set_stage("monitoring")
        verdict = await self._monitor(alert, decision)
        if self._stopped():
            return self._closed_upstream()
        self._set_stage("evaluating")
        self._record("evaluation", verdict.detail, data={"state": verdict.state})
        self._notify("verification", f"Verification: {verdict.state}: {verdict.detail}")
        if verdict.state == "resolved":
            return "resolved", verdict.detail
        raise _Abort(
            "verification failed, the incident got worse: " + verdict.detail.removeprefix("worse: ")
            if verdict.state == "worse"
            else "verification failed: " + verdict.detail
        )

    # ------------------------------------------------------------ diagnose

    async def _diagnose(self, specs: list[DiagnosticSpec]) -> None:
        if not specs:
            return
        facts = await asyncio.gather(*(self._run_diagnostic(spec) for spec in specs))
        for fact in facts:
            self._facts[fact.id] = fact
            shown = fact_brief(fact.value) if fact.ok else f"failed: {fact.error}"
            self._record(
                "diagnostic",
                f"{fact.id} ({fact.kind}): {shown}",
                data={"query": fact.query, "ok": fact.ok, "value": _bounded(fact.value), "error": fact.error},
            )

    async def _run_diagnostic(self, spec: DiagnosticSpec) -> Fact:
        request = DiagnosticRequest(
            incident_id=workflow.info().workflow_id,
            alert=self._alert,
            spec_id=spec.id,
            kind=spec.kind,
            params=spec.with_,
            facts=self._facts,
        )
        try:
            fact: Fact = await workflow.execute_activity(
                f"diagnose.{spec.kind}",
                request,
                result_type=Fact,
                schedule_to_close_timeout=spec.timeout,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    maximum_attempts=3,
                    non_retryable_error_types=["InvalidParams", "TemplateError"],
                ),
            )
        except ActivityError as err:
            error = _failure_message(err)
            if err.retry_state == RetryState.TIMEOUT:
                error = f"timed out: no answer within its {spec.timeout} timeout (last: {error})"
            return Fact(id=spec.id, kind=spec.kind, ok=False, error=error)
        return fact

    # ----------------------------------------------------------------- act

    async def _act(self, step: RenderedStep) -> None:
        request = ActionRequest(
            incident_id=workflow.info().workflow_id, step_id=step.id, action=step.action, params=step.params
        )
        if step.state_changing:
            try:
                dry = await workflow.execute_activity(
                    f"{step.action}.dry_run",
                    request,
                    result_type=DryRun,
                    start_to_close_timeout=timedelta(seconds=60),
                    retry_policy=ACTION_RETRY,
                )
            except ActivityError as err:
                raise _Abort(f"dry run of step {step.id} failed: {_failure_message(err)}") from None
            self._record(
                "dry_run",
                f"dry run of {step.id}: {dry.summary}"
                + ("" if dry.target in dry.summary else f" (target {dry.target})"),
                step=step.id,
                data=dry.model_dump(mode="json"),
            )
            self._notify(
                "dry_run",
                f"Dry run of `{step.id}` ({step.action}): {dry.summary}",
                f"```\n{dry.diff}\n```" if dry.diff else "",
                step=step.id,
                action=step.action,
                risk=step.risk,
                dry_run=dry.summary,
            )
            guarded = workflow.patched("guardrails-v1")
            needs_approval = step.approval_required
            if guarded:
                needs_approval = self._check_policy(step, dry) or needs_approval
            if needs_approval:
                await self._await_approval(step, dry)
                if self._stopped():
                    return
                self._set_stage("acting")
            if guarded:
                await self._wait_unfrozen(step)
                if self._stopped():
                    return
                await self._acquire_slot(step, dry)
        self._record("action_started", f"executing {step.id} ({step.action})", step=step.id)
        try:
            result = await workflow.execute_activity(
                f"{step.action}.execute",
                request,
                result_type=ActionResult,
                start_to_close_timeout=timedelta(seconds=step.timeout_s),
                heartbeat_timeout=ACTION_HEARTBEAT,
                retry_policy=ACTION_RETRY,
            )
        except ActivityError as err:
            self._record("action_failed", f"step {step.id} failed: {_failure_message(err)}", step=step.id)
            self._notify(
                "action",
                f"Step `{step.id}` failed: {_failure_message(err)}",
                step=step.id,
                action=step.action,
            )
            raise _Abort(f"step {step.id} ({step.action}) failed: {_failure_message(err)}") from None
        self._actions.append(result)
        if result.checkpoint is not None:
            self._checkpoints.append(result.checkpoint)
        self._notify(
            "action",
            f"Step `{step.id}` done: {result.summary}",
            f"Checkpoint: {result.checkpoint.undo}" if result.checkpoint else "",
            step=step.id,
            action=step.action,
        )
        self._record(
            "action_succeeded",
            f"{step.id}: {result.summary}",
            step=step.id,
            data={
                "output": _bounded(result.output),
                "checkpoint": result.checkpoint.model_dump(mode="json") if result.checkpoint else None,
            },
        )

    async def _await_approval(self, step: RenderedStep, dry: DryRun) -> None:
        assert self._policy is not None
        timeout = timedelta(seconds=step.approval_timeout_s or self._policy.approval.timeout.total_seconds())
        now = workflow.now()
        self._verdict = None
        self._pending = PendingApproval(
            step=step.id,
            action=step.action,
            risk=step.risk,
            dry_run=dry,
            requested_at=now,
            deadline=now + timeout,
            approvers=self._policy.approval.approvers,
        )
        self._record(
            "approval_requested",
            f"step {step.id} waits for approval until {utc_text(self._pending.deadline)}",
            step=step.id,
        )
        self._set_stage("awaiting_approval")
        self._notify(
            "approval_requested",
            f"Approval needed for `{step.id}` ({step.action}, risk {step.risk}) "
            f"until {self._pending.deadline:%Y-%m-%d %H:%M} UTC",
            f"Would: {dry.summary}\n\nApprove: `remedium approve {workflow.info().workflow_id} "
            f"--step {step.id} --as <you>` or the Approve button.",
            step=step.id,
            action=step.action,
            risk=step.risk,
            dry_run=dry.summary,
        )
        try:
            await workflow.wait_condition(
                lambda: self._verdict is not None or self._stopped(), timeout=timeout
            )
        except TimeoutError:
            self._pending = None
            self._record("approval_timeout", f"no decision on step {step.id} within {timeout}", step=step.id)
            raise _Abort(f"approval of step {step.id} timed out after {timeout}") from None
        verdict, self._pending, self._verdict = self._verdict, None, None
        self._update_details()
        if verdict is None:  # stopped upstream while waiting
            return
        if not verdict.approved:
            raise _Abort(
                f"step {step.id} rejected by {verdict.by}"
                + (f": {verdict.reason}" if verdict.reason else ""),
                outcome="rejected",
            )

    # ---------------------------------------------------------- guardrails

    def _check_policy(self, step: RenderedStep, dry: DryRun) -> bool:
        """Refuse what the blast radius forbids; True when policy forces an approval."""
        assert self._policy is not None
        refusal = blast_radius_refusal(self._policy, step, dry)
        if refusal is not None:
            self._record("guard_refused", refusal, step=step.id)
            raise _Abort(f"blast radius: {refusal}")
        if self._policy.autonomy == "dry_run_only":
            self._record(
                "guard_refused", f"policy autonomy is dry_run_only: step {step.id} not run", step=step.id
            )
            raise _Abort(
                f"policy autonomy is dry_run_only: step {step.id} ({step.action}) was not run; "
                f"it would: {dry.summary}"
            )
        forced = approval_forced(self._policy, step)
        if forced is not None and not step.approval_required:
            self._record("approval_forced", f"step {step.id} needs approval: {forced}", step=step.id)
        return forced is not None

    async def _wait_unfrozen(self, step: RenderedStep) -> None:
        """No state-changing action starts while `remedium freeze` is on: wait or escalate per policy."""
        assert self._policy is not None
        rules = self._policy.freeze
        started = workflow.now()
        announced = False
        while True:
            state: FreezeState = await workflow.execute_activity(
                "guard.freeze_state",
                result_type=FreezeState,
                start_to_close_timeout=ENGINE_TIMEOUT,
                retry_policy=ENGINE_RETRY,
            )
            if not state.frozen:
                if announced:
                    self._record("unfrozen", f"freeze lifted; step {step.id} goes ahead", step=step.id)
                    self._set_stage("acting")
                return
            why = f"global freeze by {state.by or 'unknown'}: {state.reason or 'no reason given'}"
            if rules.on_frozen == "escalate":
                self._record("guard_refused", f"step {step.id} not started: {why}", step=step.id)
                raise _Abort(f"step {step.id} not started: {why}")
            if not announced:
                self._record(
                    "frozen",
                    f"step {step.id} waits for the freeze to lift (up to {rules.max_wait}): {why}",
                    step=step.id,
                )
                self._set_stage("frozen")
                announced = True
            if workflow.now() - started >= rules.max_wait:
                raise _Abort(f"step {step.id} waited {rules.max_wait} for the freeze to lift: {why}")
            await self._sleep(min(rules.poll, rules.max_wait))
            if self._stopped():
                return

    async def _acquire_slot(self, step: RenderedStep, dry: DryRun) -> None:
        assert self._policy is not None
        target = dry.target_key
        limit = rate_limit_for(self._policy, step.action, target)
        if limit is None:
            return
        grant: SlotGrant = await workflow.execute_activity(
            "guard.acquire_slot",
            SlotRequest(
                key=f"{workflow.info().workflow_id}/{step.id}",
                action=step.action,
                target=target,
                max=limit.max,
                per_s=limit.per.total_seconds(),
            ),
            result_type=SlotGrant,
            start_to_close_timeout=ENGINE_TIMEOUT,
            retry_policy=ENGINE_RETRY,
        )
        self._record(
            "rate_limit" if grant.granted else "guard_refused",
            grant.reason,
            step=step.id,
            data=grant.model_dump(mode="json"),
        )
        if not grant.granted:
            raise _Abort(grant.reason)

    # --------------------------------------------------- monitor / evaluate

    async def _monitor(self, alert: Any, decision: RunbookDecision) -> VerifyVerdict:
        verify = decision.verify
        assert verify is not None
        start = workflow.now()
        deadline = start + verify.within
        if verify.initial_delay > timedelta(0):
            await self._sleep(verify.initial_delay)
        round_ = 0
        while True:
            round_ += 1
            await self._diagnose(verify.checks)
            verdict: VerifyVerdict = await workflow.execute_activity(
                "runbook.verify",
                VerifyRequest(alert=alert, verify=verify, facts=self._facts, round=round_),
                result_type=VerifyVerdict,
                start_to_close_timeout=ENGINE_TIMEOUT,
                retry_policy=ENGINE_RETRY,
            )
            self._record("verify", f"round {round_}: {verdict.detail}", data={"state": verdict.state})
            if verdict.state != "not_resolved" or self._stopped():
                return verdict
            if workflow.now() + verify.every > deadline:
                return VerifyVerdict(
                    state="not_resolved", detail=f"not recovered within {verify.within}: {verdict.detail}"
                )
            await self._sleep(verify.every)
            if self._stopped():
                return verdict

    async def _sleep(self, duration: timedelta) -> None:
        """A durable timer that an upstream resolve/acknowledge cuts short."""
        try:
            await workflow.wait_condition(self._stopped, timeout=duration)
        except TimeoutError:
            pass

    async def _roll_back(self) -> str:
        """Undo checkpoints newest first (saga); say what could not be undone."""
        self._set_stage("rolling_back")
        failures = []
        for checkpoint in reversed(self._checkpoints):
            self._record(
                "rollback_started",
                f"rolling back {checkpoint.step_id}: {checkpoint.undo}",
                step=checkpoint.step_id,
            )
            try:
                result = await workflow.execute_activity(
                    f"{checkpoint.action}.rollback",
                    RollbackRequest(incident_id=workflow.info().workflow_id, checkpoint=checkpoint),
                    result_type=ActionResult,
                    start_to_close_timeout=timedelta(minutes=5),
                    heartbeat_timeout=ACTION_HEARTBEAT,
                    retry_policy=ACTION_RETRY,
                )
                self._record(
                    "rolled_back", f"{checkpoint.step_id}: {result.summary}", step=checkpoint.step_id
                )
                self._notify(
                    "action",
                    f"Rolled back `{checkpoint.step_id}`: {result.summary}",
                    step=checkpoint.step_id,
                    action=checkpoint.action,
                )
            except ActivityError as err:
                failures.append(checkpoint.step_id)
                self._record(
                    "rollback_failed",
                    f"rollback of {checkpoint.step_id} failed, undo by hand ({checkpoint.undo}): "
                    f"{_failure_message(err)}",
                    step=checkpoint.step_id,
                )
        self._checkpoints = []
        if failures:
            return f"; rollback FAILED for {', '.join(failures)}: undo by hand"
        return "; all changes were rolled back"

    # -------------------------------------------------------------- report

    def _closed_upstream(self) -> tuple[Outcome, str]:
        ext = self._external
        assert ext is not None
        return "closed_upstream", f"incident {ext.event} upstream" + (f" by {ext.by}" if ext.by else "")

    async def _finish(self, alert: Any, outcome: Outcome, reason: str) -> IncidentResult:
        self._outcome = outcome
        if outcome in ("escalated", "rejected"):
            self._set_stage("escalated")
        self._set_stage("reporting")
        report = await workflow.execute_activity(
            "incident.report",
            ReportRequest(
                alert=alert,
                runbook=self._runbook,
                outcome=outcome,
                reason=reason,
                facts=self._facts,
                actions=self._actions,
                audit=self._audit,
            ),
            result_type=Report,
            start_to_close_timeout=ENGINE_TIMEOUT,
            retry_policy=ENGINE_RETRY,
        )
        self._report = report
        self._escalation = report.escalation
        if report.escalation is not None:
            self._record(
                "escalated", report.escalation.message, data={"reason": reason, "to": report.escalation.to}
            )
        self._record("report", report.summary, data={"outcome": outcome})
        self._set_stage(
            "resolved" if outcome == "resolved" else "escalated" if self._escalation else "closed"
        )
        if self._outbox is not None:
            self._notify(
                "outcome",
                f"{outcome.replace('_', ' ').capitalize()}: {report.summary}",
                report.markdown,
                runbook=self._runbook.name if self._runbook else None,
                outcome=outcome,
                escalate=report.escalation is not None,
                followups=report.follow_ups,
            )
            await self._outbox.close(within=REPORT_DRAIN)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return IncidentResult(
            workflow_id=workflow.info().workflow_id,
            outcome=outcome,
            reason=reason,
            runbook=self._runbook.name if self._runbook else None,
            actions=self._actions,
            report=report,
        )

    # ------------------------------------------------- signals and updates

    @workflow.signal(
        name="approve",
        description="Approve the pending step. "
        'Data: {"by": "<your name>", "step": "<optional>", "reason": "..."}',
    )
    def approve(self, payload: Any = None) -> None:
        self._on_signal(payload, approved=True)

    @workflow.signal(
        name="reject",
        description='Reject the pending step and escalate. Data: {"by": "<your name>", "reason": "..."}',
    )
    def reject(self, payload: Any = None) -> None:
        self._on_signal(payload, approved=False)

    @workflow.signal(
        name="external_update",
        description="Lifecycle event from upstream (resolved/acknowledged stop further actions).",
    )
    def external_update(self, update: ExternalUpdate) -> None:
        who = f" by {update.by}" if update.by else ""
        self._record(
            "external_update",
            f"{update.source or 'upstream'}: incident {update.event}{who}"
            + (f": {update.note}" if update.note else ""),
            actor=update.by or "upstream",
        )
        if update.event in ("resolved", "acknowledged") and self._external is None:
            self._external = update
            self._update_details()

    @workflow.update(
        name="decide",
        description="Approve or reject the pending step with validation. "
        'Data: {"decision": "approve"|"reject", "by": "<you>", "step": "<optional>", "reason": "..."}',
    )
    def decide(self, request: DecideRequest) -> str:
        step = self._decide_step(request.step)
        self._accept(step, request.by, request.reason, request.decision == "approve", via="update")
        return f"step {step} {'approved' if request.decision == 'approve' else 'rejected'} by {request.by}"

    @decide.validator
    def _validate_decide(self, request: DecideRequest) -> None:
        refusal = self._refusal(request.step, request.by)
        if refusal is not None:
            raise ApplicationError(refusal, type="ApprovalRefused", non_retryable=True)

    @workflow.query(name="status", description="Stage, pending approval (with its dry run), facts, actions.")
    def status(self) -> IncidentStatus:
        return IncidentStatus(
            workflow_id=workflow.info().workflow_id,
            stage=self._stage,
            outcome=self._outcome,
            alert=self._alert,
            runbook=self._runbook.name if self._runbook else None,
            pending_approval=self._pending,
            facts=self._facts,
            actions=self._actions,
            approvals=self._approvals,
            checkpoints=self._checkpoints,
            escalation=self._escalation,
            report=self._report,
        )

    @workflow.query(name="audit", description="The decision log, oldest first.")
    def audit(self) -> list[AuditEntry]:
        return self._audit

    # ------------------------------------------------------------- helpers

    def _refusal(self, step: str | None, by: str | None) -> str | None:
        if not by:
            return 'an approval must say who decides: set "by" to your user name'
        if self._pending is None:
            return f"no approval is pending (stage {self._stage})" + (
                f"; step {step!r} is not waiting" if step else ""
            )
        if step is not None and step != self._pending.step:
            return f"step {step!r} is not the pending step (pending: {self._pending.step!r})"
        assert self._policy is not None
        if not self._policy.approval.allows(by):
            return f"{by!r} may not approve: the policy allows {', '.join(self._policy.approval.approvers)}"
        return None

    def _decide_step(self, step: str | None) -> str:
        assert self._pending is not None
        return step or self._pending.step

    def _on_signal(self, payload: Any, approved: bool) -> None:
        verb = "approve" if approved else "reject"
        if payload is None:
            self._record(
                "approval_ignored", f'{verb} signal with no data ignored: send {{"by": "<your name>"}}'
            )
            return
        try:
            signal = ApprovalSignal.model_validate(payload)
        except ValidationError as exc:
            self._record(
                "approval_ignored",
                f"{verb} signal ignored: its data is not an approval ({exc.error_count()} problem(s): "
                f'{exc.errors()[0]["msg"]}); send {{"by": "<your name>"}}',
            )
            return
        refusal = self._refusal(signal.step, signal.by)
        if refusal is not None:
            self._record(
                "approval_ignored",
                f"{verb} signal from {signal.by or 'nobody'} ignored: {refusal}",
                step=signal.step,
                actor=signal.by or "unknown",
            )
            return
        assert signal.by is not None
        self._accept(self._decide_step(signal.step), signal.by, signal.reason, approved, via="signal")

    def _accept(self, step: str, by: str, reason: str, approved: bool, via: Any) -> None:
        approval = Approval(step=step, approved=approved, by=by, reason=reason, at=workflow.now(), via=via)
        self._approvals.append(approval)
        self._verdict = approval
        self._record(
            "approved" if approved else "rejected",
            f"step {step} {'approved' if approved else 'rejected'} by {by} via {via}"
            + (f": {reason}" if reason else ""),
            step=step,
            actor=by,
        )
        self._notify(
            "approval_decided",
            f"Step `{step}` {'approved' if approved else 'rejected'} by {by}"
            + (f": {reason}" if reason else ""),
            step=step,
            decision="approve" if approved else "reject",
            decided_by=by,
        )

    def _stopped(self) -> bool:
        return self._external is not None

    def _set_stage(self, stage: Stage) -> None:
        self._stage = stage
        pairs = [SA_STAGE.value_set(stage)]
        if stage == "triggered":
            if self._alert.service:
                pairs.append(SA_SERVICE.value_set(self._alert.service))
            if self._alert.severity:
                pairs.append(SA_SEVERITY.value_set(self._alert.severity))
        workflow.upsert_search_attributes(pairs)
        self._update_details()

    def _update_details(self) -> None:
        workflow.set_current_details(current_details(self.status()))

    # ------------------------------------------------------------ channels

    def _notify(self, kind: ReportKind, title: str, markdown: str = "", **fields: Any) -> None:
        """Queue an event for Slack/Jira/PagerDuty; never waits, never fails the incident."""
        if self._outbox is None:
            return
        self._report_seq += 1
        workflow_id = workflow.info().workflow_id
        ui = f"{self._ui_url.rstrip('/')}/namespaces/{workflow.info().namespace}/workflows/{workflow_id}"
        self._outbox.post(
            ReportEvent(
                workflow_id=workflow_id,
                event_id=f"{self._report_seq:03d}-{kind}"
                + (f"-{fields['step']}" if fields.get("step") else ""),
                kind=kind,
                stage=self._stage,
                alert=self._alert,
                title=title,
                markdown=markdown,
                ui_url=ui if self._ui_url else "",
                **fields,
            )
        )

    def _channel_failed(self, channel: str, why: str) -> None:
        if workflow.patched("degraded-note-v1"):
            self._notify(
                "degraded",
                f"Reporting to {channel} failed; follow the incident here and in the Temporal UI",
            )  # the outbox prefixes the body with which channel failed and why

    def _record_report(self, kind: str, message: str, data: dict[str, Any]) -> None:
        self._record(kind, message, data=data)

    def _opening_note(self, prepared: PrepareResult) -> str:
        names = ", ".join(rb.name for rb in prepared.candidates) or "none"
        return (
            f"Alert from {self._alert.source}: **{self._alert.title}** "
            f"(service {self._alert.service or 'unknown'}, severity {self._alert.severity or 'unknown'}).\n"
            f"Candidate runbooks: {names}."
        )

    def _facts_markdown(self) -> str:
        lines = []
        for fact in self._facts.values():
            shown = fact_brief(fact.value) if fact.ok else f"FAILED: {fact.error}"
            lines.append(f"- `{fact.id}` ({fact.kind}): {shown}")
        return "\n".join(lines)

    def _record(
        self,
        kind: str,
        message: str,
        *,
        step: str | None = None,
        actor: str = "remedium",
        data: dict[str, Any] | None = None,
    ) -> None:
        self._audit.append(
            AuditEntry(
                at=workflow.now(),
                stage=self._stage,
                kind=kind,
                message=message,
                step=step,
                actor=actor,
                data=data or {},
            )
        )


def _bounded(value: Any, limit: int = 4000) -> Any:
    """Keep audit entries small: large values are cut, with a note saying so."""
    text = repr(value)
    if len(text) <= limit:
        return value
    return {"truncated": True, "preview": text[:limit]}

"""The incident's journal: its audit trail, and what the humans' channels are told.

What each stage says (in the `audit` query, the report, Slack, Jira, PagerDuty) is worded
here, so incident.py reads as the stages; the approval gate and the guardrails word their
own refusals and decisions through `record` and `notify`. The audit trail is workflow state
stamped with `workflow.now()`; channel events go to the Outbox, which never makes remediation
wait. Operators and tests rely on this wording: change a message only on purpose.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from remedium.models import (
        ActionResult,
        Alert,
        AuditEntry,
        Checkpoint,
        DryRun,
        ExternalUpdate,
        Fact,
        Outcome,
        PrepareResult,
        RenderedStep,
        Report,
        ReportEvent,
        ReportKind,
        RunbookDecision,
        Stage,
        VerifyVerdict,
    )
    from remedium.summary import fact_brief, redact
    from workflows.outbox import Outbox
    from workflows.telemetry import IncidentMetrics

# An incident ends only after its reports went out, or after this long trying.
REPORT_DRAIN = timedelta(minutes=15)


class Journal:
    """Audit entries and channel notifications of one incident.

    The stage is read through `stage` at each entry rather than stored here, so the journal
    can never disagree with what the `status` query and the search attributes say.
    """

    def __init__(self, alert: Alert, stage: Callable[[], Stage]) -> None:
        self.entries: list[AuditEntry] = []
        self._alert = alert
        self._stage = stage
        self._outbox: Outbox | None = None
        self._report_seq = 0
        self._ui_url = ""
        self.metrics = IncidentMetrics()  # counts each entry as it is recorded

    # ------------------------------------------------------------ the two primitives

    def record(
        self,
        kind: str,
        message: str,
        *,
        step: str | None = None,
        actor: str = "remedium",
        data: dict[str, Any] | None = None,
    ) -> None:
        """Append to the audit trail (the `audit` query, and the report's input), and count it."""
        entry = AuditEntry(
            at=workflow.now(),
            stage=self._stage(),
            kind=kind,
            message=message,
            step=step,
            actor=actor,
            data=data or {},
        )
        self.entries.append(entry)
        self.metrics.observe(entry)

    def notify(self, kind: ReportKind, title: str, markdown: str = "", **fields: Any) -> None:
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
                stage=self._stage(),
                alert=self._alert.brief(),
                title=title,
                markdown=markdown,
                ui_url=ui if self._ui_url else "",
                **fields,
            )
        )

    # ------------------------------------------------------------ channels

    def open_channels(self, prepared: PrepareResult) -> None:
        """Start the outbox and tell the channels the incident is taken.

        Until then (and in histories from before reporting) `notify` is a no-op.
        """
        self._ui_url = prepared.ui_url
        self._outbox = Outbox(prepared.channels, self.record_report, self.channel_failed)
        self.metrics.channels(prepared.channels)
        self.notify("opened", f"Remedium took incident: {self._alert.title}", self.opening_note(prepared))

    async def close(self, within: timedelta = REPORT_DRAIN) -> None:
        """Give queued reports a bounded time to go out; an incident without channels has none."""
        if self._outbox is not None:
            await self._outbox.close(within=within)

    def record_report(self, kind: str, message: str, data: dict[str, Any]) -> None:
        """The outbox's way into the audit trail: a channel that fails is on record."""
        self.record(kind, message, data=data)

    def channel_failed(self, channel: str, why: str) -> None:
        """Tell the channels that still work, once, that one went dark (patched: older runs did not)."""
        if workflow.patched("degraded-note-v1"):
            self.notify(
                "degraded",
                f"Reporting to {channel} failed; follow the incident here and in the Temporal UI",
            )  # the outbox prefixes the body with which channel failed and why

    # ------------------------------------------------------------ trigger

    def triggered(self) -> None:
        """The first entry carries the whole alert, so the trail stands on its own."""
        alert = self._alert
        self.record(
            "triggered", f"alert from {alert.source}: {alert.title}", data=alert.model_dump(mode="json")
        )
        # Workflow state only, no command: no patch needed, and no history recorded before
        # `Alert.truncated` existed has anything in it, so replay takes the same path.
        if alert.truncated:
            self.record(
                "alert_truncated",
                "the alert was cut to fit the input limits: " + "; ".join(alert.truncated),
                data={"truncated": list(alert.truncated)},
            )

    def opening_note(self, prepared: PrepareResult) -> str:
        names = ", ".join(rb.name for rb in prepared.candidates) or "none"
        return (
            f"Alert from {self._alert.source}: **{self._alert.title}** "
            f"(service {self._alert.service or 'unknown'}, severity {self._alert.severity or 'unknown'}).\n"
            f"Candidate runbooks: {names}."
        )

    def candidates(self, prepared: PrepareResult) -> None:
        self.record(
            "candidates",
            f"{len(prepared.candidates)} candidate runbook(s): "
            + (", ".join(rb.name for rb in prepared.candidates) or "none"),
        )

    def external_update(self, update: ExternalUpdate) -> None:
        who = f" by {update.by}" if update.by else ""
        self.record(
            "external_update",
            f"{update.source or 'upstream'}: incident {update.event}{who}"
            + (f": {update.note}" if update.note else ""),
            actor=update.by or "upstream",
        )
        self.metrics.upstream(update.event)

    # ------------------------------------------------------------ diagnose / decide

    def skipped(self, step: RenderedStep) -> None:
        self.record("step_skipped", f"step {step.id} skipped: {step.skip_reason}", step=step.id)

    def fact(self, fact: Fact) -> None:
        """A failed diagnostic is recorded like any other: the decision saw it too."""
        shown = fact_brief(fact.value) if fact.ok else redact(f"failed: {fact.error}")
        self.record(
            "diagnostic",
            f"{fact.id} ({fact.kind}): {shown}",
            data={
                "query": fact.query,
                "ok": fact.ok,
                "value": _bounded(fact.value),
                "error": redact(fact.error),
            },
        )

    def diagnostic_refused(self, spec_id: str, kind: str, why: str) -> None:
        """A diagnostic the policy would not let out (http.allow): a guardrail refusal on record."""
        self.record(
            "guard_refused",
            f"diagnostic {spec_id} ({kind}) not run: {why}",
            data={"diagnostic": spec_id, "guard": "http_allow"},
        )

    def decided(self, decision: RunbookDecision, facts: dict[str, Fact]) -> None:
        self.record(
            "decision", decision.reason, data={"runbook": decision.runbook, "candidates": decision.candidates}
        )
        self.notify(
            "diagnosis",
            f"Diagnosis: {decision.reason}",
            self.facts_markdown(facts),
            runbook=decision.runbook,
        )

    def facts_markdown(self, facts: dict[str, Fact]) -> str:
        lines = []
        for fact in facts.values():
            shown = fact_brief(fact.value) if fact.ok else redact(f"FAILED: {fact.error}")
            lines.append(f"- `{fact.id}` ({fact.kind}): {shown}")
        return "\n".join(lines)

    def plan(self, decision: RunbookDecision) -> None:
        self.record(
            "plan",
            f"plan of {len(decision.steps)} step(s): "
            + ", ".join(f"{s.id} ({s.action})" for s in decision.steps),
            data={"steps": [s.model_dump(mode="json") for s in decision.steps]},
        )

    # ------------------------------------------------------------ act

    def dry_run(self, step: RenderedStep, dry: DryRun) -> None:
        """What the step would do, before any approval: the humans decide on this."""
        self.record(
            "dry_run",
            f"dry run of {step.id}: {dry.summary}"
            + ("" if dry.target in dry.summary else f" (target {dry.target})"),
            step=step.id,
            data=dry.model_dump(mode="json"),
        )
        self.notify(
            "dry_run",
            f"Dry run of `{step.id}` ({step.action}): {dry.summary}",
            f"```\n{dry.diff}\n```" if dry.diff else "",
            step=step.id,
            action=step.action,
            risk=step.risk,
            dry_run=dry.summary,
        )

    def action_failed(self, step: RenderedStep, why: str) -> None:
        self.record("action_failed", f"step {step.id} failed: {why}", step=step.id)
        self.notify("action", f"Step `{step.id}` failed: {why}", step=step.id, action=step.action)

    def action_done(self, step: RenderedStep, result: ActionResult) -> None:
        """The checkpoint goes on record, so a human can undo what the saga could not."""
        self.notify(
            "action",
            f"Step `{step.id}` done: {result.summary}",
            f"Checkpoint: {result.checkpoint.undo}" if result.checkpoint else "",
            step=step.id,
            action=step.action,
        )
        self.record(
            "action_succeeded",
            f"{step.id}: {result.summary}",
            step=step.id,
            data={
                "output": _bounded(result.output),
                "checkpoint": result.checkpoint.model_dump(mode="json") if result.checkpoint else None,
            },
        )

    def rollback_started(self, checkpoint: Checkpoint) -> None:
        self.record(
            "rollback_started",
            f"rolling back {checkpoint.step_id}: {checkpoint.undo}",
            step=checkpoint.step_id,
        )

    def rolled_back(self, checkpoint: Checkpoint, result: ActionResult) -> None:
        self.record("rolled_back", f"{checkpoint.step_id}: {result.summary}", step=checkpoint.step_id)
        self.notify(
            "action",
            f"Rolled back `{checkpoint.step_id}`: {result.summary}",
            step=checkpoint.step_id,
            action=checkpoint.action,
        )

    def rollback_failed(self, checkpoint: Checkpoint, why: str) -> None:
        """Says how to undo by hand: nothing else will."""
        self.record(
            "rollback_failed",
            f"rollback of {checkpoint.step_id} failed, undo by hand ({checkpoint.undo}): {why}",
            step=checkpoint.step_id,
        )

    # ------------------------------------------------------------ evaluate / report

    def evaluated(self, verdict: VerifyVerdict) -> None:
        self.record("evaluation", verdict.detail, data={"state": verdict.state})
        self.notify("verification", f"Verification: {verdict.state}: {verdict.detail}")

    def reported(self, report: Report, outcome: Outcome, reason: str) -> None:
        """After the report activity: these entries are in the `audit` query, not in the report."""
        if report.escalation is not None:
            self.record(
                "escalated", report.escalation.message, data={"reason": reason, "to": report.escalation.to}
            )
        self.record("report", report.summary, data={"outcome": outcome})

    def outcome(self, report: Report, outcome: Outcome, runbook: str | None) -> None:
        """The last event: channels resolve, escalate or close upstream on it."""
        self.notify(
            "outcome",
            f"{outcome.replace('_', ' ').capitalize()}: {report.summary}",
            report.markdown,
            runbook=runbook,
            outcome=outcome,
            escalate=report.escalation is not None,
            followups=report.follow_ups,
        )


def _bounded(value: Any, limit: int = 4000) -> Any:
    """Keep audit entries small and free of secrets: large values are cut, with a note saying so."""
    value = redact(value)
    text = repr(value)
    if len(text) <= limit:
        return value
    return {"truncated": True, "preview": text[:limit]}

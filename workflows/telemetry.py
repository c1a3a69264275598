"""The incident's metrics, counted from its audit entries as the journal writes them.

Every entry the journal records passes through `IncidentMetrics.observe`, so an audited event
is counted exactly once, and what the dashboard shows can always be traced to the audit trail.
The counters and histograms go through `workflow.metric_meter()`, which records nothing while
a workflow replays (a cache eviction, a worker restart): no double counting. Emitting a metric
is no workflow command, so histories replay unchanged. Names live in `remedium.metrics`.

Labels come from what the entries carry about the runbook (its name, its steps' actions), the
channel, the guard and the outcome; never from alert content.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from remedium import metrics
    from remedium.models import AuditEntry

NO_RUNBOOK = "none"


class IncidentMetrics:
    """What one incident contributes to the worker's `/metrics`; it reads entries, never writes."""

    def __init__(self) -> None:
        self._runbook = NO_RUNBOOK
        self._actions: dict[str, str] = {}  # step id -> action, from the plan entry
        self._asked: dict[str, datetime] = {}  # step id -> when its approval was requested
        self._acted = False
        self._closed_upstream = False
        self._handlers: dict[str, Callable[[AuditEntry], None]] = {
            "triggered": self._triggered,
            "decision": self._decision,
            "plan": self._plan,
            "action_started": self._action_started,
            "action_succeeded": lambda e: self._action(e, "succeeded"),
            "action_failed": lambda e: self._action(e, "failed"),
            "rolled_back": lambda e: self._rollback(e, "rolled_back"),
            "rollback_failed": lambda e: self._rollback(e, "failed"),
            "approval_requested": self._approval_requested,
            "approved": lambda e: self._approval(e, "approved"),
            "rejected": lambda e: self._approval(e, "rejected"),
            "approval_refused": lambda e: self._approval(e, "refused"),
            "approval_timeout": lambda e: self._approval(e, "timed_out"),
            "guard_refused": lambda e: self._guard(e, "refused"),
            "frozen": lambda e: self._guard(e, "waited", "freeze"),
            "approval_forced": lambda e: self._guard(e, "approval_forced", "approval_policy"),
            "report_failed": self._report_failed,
            "report": self._report,
            "llm_call": self._llm_call,
            "llm_call_failed": lambda e: self._count(metrics.LLM_CALLS, result=str(e.data.get("result"))),
            "breaker": lambda e: self._count(metrics.BREAKER_TRANSITIONS, state=str(e.data.get("to"))),
        }

    def observe(self, entry: AuditEntry) -> None:
        """Count one audit entry; outside a workflow (unit tests of the journal) nothing is emitted."""
        handler = self._handlers.get(entry.kind)
        if handler is not None and workflow.in_workflow():
            handler(entry)

    def channels(self, channels: list[str]) -> None:
        """The incident's report channels are known: their failure counters start at 0."""
        if workflow.in_workflow():
            for channel in channels:
                self._count(metrics.REPORTER_FAILURES, 0, channel=channel)

    def upstream(self, event: str) -> None:
        """A resolve or acknowledge from upstream: a human closed the incident outside Remedium."""
        if event in ("resolved", "acknowledged") and not self._closed_upstream and workflow.in_workflow():
            self._closed_upstream = True
            self._count(metrics.INTERVENTIONS, kind="closed_upstream", runbook=self._runbook)

    # ------------------------------------------------------------ per entry kind

    def _prime_incident(self) -> None:
        """Start at 0 what this incident may count under its runbook (none until one is chosen)."""
        runbook = self._runbook
        for outcome in metrics.OUTCOMES:
            self._count(metrics.INCIDENTS, 0, outcome=outcome, runbook=runbook)
        for kind in metrics.INTERVENTION_KINDS:
            self._count(metrics.INTERVENTIONS, 0, kind=kind, runbook=runbook)
        for guard, effect in metrics.GUARD_EFFECTS:
            self._count(metrics.GUARD_TRIPS, 0, guard=guard, effect=effect, runbook=runbook)

    def _decision(self, entry: AuditEntry) -> None:
        self._runbook = str(entry.data.get("runbook") or NO_RUNBOOK)
        if self._runbook != NO_RUNBOOK:
            self._prime_incident()

    def _plan(self, entry: AuditEntry) -> None:
        for step in entry.data.get("steps", []):
            if isinstance(step, dict) and "id" in step and "action" in step:
                action = str(step["action"])
                self._actions[str(step["id"])] = action
                for result in metrics.ACTION_RESULTS:
                    self._count(metrics.ACTIONS, 0, action=action, result=result, runbook=self._runbook)
                for result in metrics.ROLLBACK_RESULTS:
                    self._count(metrics.ROLLBACKS, 0, action=action, result=result, runbook=self._runbook)

    def _action_started(self, entry: AuditEntry) -> None:
        if not self._acted:
            self._acted = True
            self._observe(metrics.TIME_TO_FIRST_ACTION, self._since_start(entry.at), runbook=self._runbook)

    def _action(self, entry: AuditEntry, result: str) -> None:
        self._count(metrics.ACTIONS, action=self._action_of(entry), result=result, runbook=self._runbook)

    def _rollback(self, entry: AuditEntry, result: str) -> None:
        self._count(metrics.ROLLBACKS, action=self._action_of(entry), result=result, runbook=self._runbook)

    def _approval_requested(self, entry: AuditEntry) -> None:
        if entry.step is not None:
            self._asked[entry.step] = entry.at
        runbook = self._runbook
        for channel in metrics.APPROVAL_CHANNELS:
            for decision in metrics.APPROVAL_DECISIONS:
                self._count(metrics.APPROVALS, 0, channel=channel, decision=decision, runbook=runbook)
        self._count(metrics.APPROVALS, 0, channel="none", decision="timed_out", runbook=runbook)

    def _approval(self, entry: AuditEntry, decision: str) -> None:
        channel = str(entry.data.get("channel") or "none")
        self._count(metrics.APPROVALS, channel=channel, decision=decision, runbook=self._runbook)
        if decision in ("approved", "rejected"):
            kind = "approve" if decision == "approved" else "reject"
            self._count(metrics.INTERVENTIONS, kind=kind, runbook=self._runbook)
        asked = self._asked.get(entry.step or "")
        if asked is not None and decision != "refused":
            wait = max((entry.at - asked).total_seconds(), 0.0)
            self._observe(metrics.APPROVAL_WAIT, wait, channel=channel, decision=decision)

    def _guard(self, entry: AuditEntry, effect: str, guard: str | None = None) -> None:
        name = guard or str(entry.data.get("guard") or "other")
        self._count(metrics.GUARD_TRIPS, guard=name, effect=effect, runbook=self._runbook)

    def _report_failed(self, entry: AuditEntry) -> None:
        if entry.data.get("skipped"):  # not sent after an earlier failure: not another failure
            return
        self._count(metrics.REPORTER_FAILURES, channel=str(entry.data.get("channel") or "unknown"))

    def _report(self, entry: AuditEntry) -> None:
        outcome = str(entry.data.get("outcome") or "unknown")
        self._count(metrics.INCIDENTS, outcome=outcome, runbook=self._runbook)
        if outcome == "resolved":
            self._observe(metrics.TIME_TO_RESOLVE, self._since_start(entry.at), runbook=self._runbook)

    def _triggered(self, entry: AuditEntry) -> None:
        """Every incident may be investigated: the LLM series start at 0 too (they carry no runbook)."""
        self._prime_incident()
        for result in metrics.LLM_CALL_RESULTS:
            self._count(metrics.LLM_CALLS, 0, result=result)
        for kind in metrics.LLM_TOKEN_KINDS:
            self._count(metrics.LLM_TOKENS, 0, kind=kind)
        for state in metrics.BREAKER_STATES:
            self._count(metrics.BREAKER_TRANSITIONS, 0, state=state)
        self._count(metrics.LLM_COST, 0)

    def _llm_call(self, entry: AuditEntry) -> None:
        self._count(metrics.LLM_CALLS, result="answered")
        for kind in metrics.LLM_TOKEN_KINDS:
            self._count(metrics.LLM_TOKENS, int(entry.data.get(f"{kind}_tokens") or 0), kind=kind)
        self._count(metrics.LLM_COST, round(float(entry.data.get("cost_usd") or 0.0) * 1_000_000))

    # ------------------------------------------------------------ emission

    def _action_of(self, entry: AuditEntry) -> str:
        return self._actions.get(entry.step or "", "unknown")

    @staticmethod
    def _since_start(at: datetime) -> float:
        return max((at - workflow.info().workflow_start_time).total_seconds(), 0.0)

    @staticmethod
    def _count(family: metrics.Family, value: int = 1, **labels: str) -> None:
        meter = workflow.metric_meter()
        meter.create_counter(family.name, family.help).add(value, labels)

    @staticmethod
    def _observe(family: metrics.Family, seconds: float, **labels: str) -> None:
        meter = workflow.metric_meter()
        meter.create_histogram_float(family.name, family.help, "s").record(seconds, labels)

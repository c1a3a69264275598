"""An incident's Temporal history read back as the inputs and outcomes of its decisions.

The history holds every decision input: the alert (the workflow input), the facts at
decision time (`runbook.decide`'s input) and at each verify round (`runbook.verify`'s
input), the dry runs, the freeze and rate-limit answers, the step executions, and the audit
trail (`incident.report`'s input) with the humans' approvals and the guard refusals; with
earned autonomy the `autonomy.standing` answer (the level), with policy rules each
`policy.rules` input (its clock), and for an LLM investigation the proposal (`llm.propose`'s
input and result), the finding and the breaker's transitions (the audit).
Payloads decode with `remedium.codec.data_converter`, so encrypted histories read with the
configured keys. Used by `remedium replay --shadow` (remedium.shadow).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter

from remedium.codec import data_converter
from remedium.errors import ShadowError
from remedium.models import (
    ActionRequest,
    ActionResult,
    Alert,
    AuditEntry,
    DecideInput,
    DryRun,
    Fact,
    FreezeState,
    IncidentInput,
    PrepareResult,
    ReportRequest,
    RunbookDecision,
    SlotGrant,
    SlotRequest,
    VerifyRequest,
    VerifyVerdict,
)
from remedium.models.llm import Finding, ProposalRequest, ProposedRunbook
from remedium.models.rule_request import RuleRequest
from remedium.models.trust import Standing, StandingRequest
from remedium.names import (
    ACQUIRE_SLOT_ACTIVITY,
    AUTONOMY_STANDING_ACTIVITY,
    DECIDE_ACTIVITY,
    FREEZE_STATE_ACTIVITY,
    LLM_CHAT_ACTIVITY,
    LLM_PROPOSE_ACTIVITY,
    POLICY_RULES_ACTIVITY,
    PREPARE_ACTIVITY,
    REPORT_ACTIVITY,
    VERIFY_ACTIVITY,
)
from remedium.settings import Settings

# An outcome the history cannot settle: the shadow needs something that was never recorded.
UNKNOWN = "unknown"


# ------------------------------------------------------------------ what the history holds


@dataclass
class Recording:
    """The decision inputs and outcomes one incident's history holds, in the workflow's terms."""

    workflow_id: str
    alert: Alert
    prepared: PrepareResult | None = None
    decide_input: DecideInput | None = None
    decision: RunbookDecision | None = None
    dry_runs: dict[str, DryRun] = field(default_factory=dict)
    freeze: dict[str, FreezeState] = field(default_factory=dict)  # step id -> last freeze answer
    slots: dict[str, SlotGrant] = field(default_factory=dict)
    executed: dict[str, bool] = field(default_factory=dict)  # step id -> the execution succeeded
    rounds: list[tuple[VerifyRequest, VerifyVerdict]] = field(default_factory=list)
    diagnosed: dict[str, Fact] = field(default_factory=dict)  # diagnostics completed, last wins
    report: ReportRequest | None = None
    started_at: datetime | None = None  # the workflow's start: the incident's own clock
    dry_run_at: dict[str, datetime] = field(default_factory=dict)  # step id -> its dry run completed
    standing_for: StandingRequest | None = None  # what autonomy.standing was asked ...
    standing: Standing | None = None  # ... and answered: the level the incident ran at
    rule_requests: dict[str, RuleRequest] = field(default_factory=dict)  # step id -> policy.rules input
    llm_calls: int = 0  # llm.chat activities completed: the model's replies are recorded facts
    proposal: ProposalRequest | None = None  # llm.propose's input: the finding's proposal
    proposed: ProposedRunbook | None = None  # ... and what the library made of it

    @property
    def investigated(self) -> bool:
        """An LLM investigation ran (no runbook matched and an investigator was configured)."""
        return self.llm_calls > 0 or any(e.kind == "investigation" for e in self.audit)

    @property
    def finding(self) -> Finding | None:
        """The model's last valid finding, as the audit recorded it (untrusted model output)."""
        found = None
        for entry in self.audit:
            if entry.kind == "finding" and entry.data.get("valid") and "summary" in entry.data:
                fields = {k: v for k, v in entry.data.items() if k in Finding.model_fields}
                found = Finding.model_validate(fields)
        return found

    @property
    def breaker(self) -> str | None:
        """The investigation's breaker state at the end (None: no investigation ran)."""
        if not self.investigated:
            return None
        state = "ARMED"
        for entry in self.audit:
            if entry.kind == "breaker" and "to" in entry.data:
                state = str(entry.data["to"])
        return state

    @property
    def audit(self) -> list[AuditEntry]:
        return self.report.audit if self.report is not None else []

    @property
    def outcome(self) -> str:
        return self.report.outcome if self.report is not None else UNKNOWN

    def approval_of(self, step_id: str) -> str | None:
        """The humans' final answer on a step: approved, rejected, timeout, or None (never asked/decided)."""
        answer = None
        for entry in self.audit:
            if entry.step == step_id and entry.kind in ("approved", "rejected", "approval_timeout"):
                answer = "timeout" if entry.kind == "approval_timeout" else entry.kind
        return answer

    def asked(self, step_id: str) -> bool:
        return any(e.step == step_id and e.kind == "approval_requested" for e in self.audit)


async def _decode(converter: DataConverter, payloads: Sequence[Payload], kind: type) -> Any:
    values = await converter.decode(list(payloads), [kind])
    return values[0] if values else None


async def read_history(history: WorkflowHistory, settings: Settings | None = None) -> Recording:
    """Decode an incident's history (encrypted ones with the configured codec keys)."""
    converter = data_converter(settings or Settings.load())
    events = list(history.events)
    if not events or events[0].event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
        raise ShadowError("it does not start with a workflow execution")
    started = events[0].workflow_execution_started_event_attributes
    try:
        incident: IncidentInput = await _decode(converter, started.input.payloads, IncidentInput)
    except Exception as exc:
        raise ShadowError(f"its input is not an incident's alert: {exc}") from None
    rec = Recording(workflow_id=incident.alert.workflow_id, alert=incident.alert)
    rec.started_at = events[0].event_time.ToDatetime().replace(tzinfo=UTC)
    scheduled: dict[int, tuple[str, Sequence[Payload]]] = {}
    current_step = ""  # the step whose dry run was scheduled last: freeze answers belong to it
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            name = attrs.activity_type.name
            scheduled[event.event_id] = (name, attrs.input.payloads)
            await _on_scheduled(rec, converter, name, attrs.input.payloads)
            if name.endswith(".dry_run"):
                current_step = (await _decode(converter, attrs.input.payloads, ActionRequest)).step_id
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            done = event.activity_task_completed_event_attributes
            name, given = scheduled.get(done.scheduled_event_id, ("", []))
            await _on_completed(rec, converter, name, given, done.result.payloads, current_step)
            if name.endswith(".dry_run"):
                rec.dry_run_at[current_step] = event.event_time.ToDatetime().replace(tzinfo=UTC)
        elif event.event_type in (
            EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
            EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
        ):
            attrs_f = (
                event.activity_task_failed_event_attributes
                if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
                else event.activity_task_timed_out_event_attributes
            )
            name, given = scheduled.get(attrs_f.scheduled_event_id, ("", []))
            if name.endswith(".execute"):
                rec.executed[(await _decode(converter, given, ActionRequest)).step_id] = False
    return rec


async def _on_scheduled(
    rec: Recording, converter: DataConverter, name: str, given: Sequence[Payload]
) -> None:
    if name == DECIDE_ACTIVITY:
        rec.decide_input = await _decode(converter, given, DecideInput)
    elif name == REPORT_ACTIVITY:
        rec.report = await _decode(converter, given, ReportRequest)
    elif name == POLICY_RULES_ACTIVITY:
        request: RuleRequest = await _decode(converter, given, RuleRequest)
        rec.rule_requests[request.step.id] = request
    elif name == LLM_PROPOSE_ACTIVITY:
        rec.proposal = await _decode(converter, given, ProposalRequest)
    elif name == AUTONOMY_STANDING_ACTIVITY:
        rec.standing_for = await _decode(converter, given, StandingRequest)


async def _on_completed(
    rec: Recording,
    converter: DataConverter,
    name: str,
    given: Sequence[Payload],
    result: Sequence[Payload],
    current_step: str,
) -> None:
    if name == PREPARE_ACTIVITY:
        rec.prepared = await _decode(converter, result, PrepareResult)
    elif name == DECIDE_ACTIVITY:
        rec.decision = await _decode(converter, result, RunbookDecision)
    elif name == VERIFY_ACTIVITY:
        request = await _decode(converter, given, VerifyRequest)
        rec.rounds.append((request, await _decode(converter, result, VerifyVerdict)))
    elif name == AUTONOMY_STANDING_ACTIVITY:
        rec.standing = await _decode(converter, result, Standing)
    elif name == LLM_CHAT_ACTIVITY:
        rec.llm_calls += 1
    elif name == LLM_PROPOSE_ACTIVITY:
        rec.proposed = await _decode(converter, result, ProposedRunbook)
    elif name == FREEZE_STATE_ACTIVITY:
        rec.freeze[current_step] = await _decode(converter, result, FreezeState)
    elif name == ACQUIRE_SLOT_ACTIVITY:
        request_s: SlotRequest = await _decode(converter, given, SlotRequest)
        rec.slots[request_s.key.rsplit("/", 1)[-1]] = await _decode(converter, result, SlotGrant)
    elif name.endswith(".dry_run"):
        dry: DryRun = await _decode(converter, result, DryRun)
        rec.dry_runs[(await _decode(converter, given, ActionRequest)).step_id] = dry
    elif name.endswith(".execute"):
        action: ActionResult = await _decode(converter, result, ActionResult)
        rec.executed[action.step_id] = True
    elif name.startswith("diagnose."):
        try:
            fact = await _decode(converter, result, Fact)
        except Exception:  # not a diagnostic after all: nothing to learn from it
            return
        rec.diagnosed[fact.id] = fact


def load_history_file(path: Path) -> WorkflowHistory:
    try:
        return WorkflowHistory.from_json(path.stem, path.read_text())
    except (OSError, ValueError, KeyError) as exc:
        raise ShadowError(f"{path} is not a workflow history: {exc}") from None

"""The workflow's helpers without a Temporal server: names, the approval gate's rules, the journal.

Temporal names are written as literals here on purpose: they are what recorded histories,
the UI and the CLI already use, so a change of a constant must fail this file.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from remedium.models import (
    Alert,
    Channel,
    DecideRequest,
    DryRun,
    Fact,
    PendingApproval,
    Policy,
    Stage,
)
from workflows.approvals import ApprovalGate, Claim
from workflows.freeze import FREEZE_WORKFLOW_ID, FreezeWorkflow
from workflows.incident import IncidentWorkflow
from workflows.journal import Journal, _bounded
from workflows.limiter import TargetLimiterWorkflow
from workflows.retries import ACTION_RETRY, DIAGNOSTIC_RETRY, failure_message

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
ALERT = Alert(source="manual", id="t-1", title="web health check failing", service="web", severity="P2")


def test_workflow_names_are_the_recorded_ones() -> None:
    incident = workflow._Definition.must_from_class(IncidentWorkflow)
    assert incident.name == "IncidentWorkflow"
    assert set(incident.signals) == {"approve", "external_update", "reject"}
    assert set(incident.updates) == {"decide", "breaker_reset"}
    assert set(incident.queries) == {"audit", "status"}
    assert incident.signals["approve"].description == (
        "Approve the pending step. "
        'Data: {"step": "<the pending step>", "by": "<your name>", "request": <its number>, "reason": "..."}'
    )
    freeze = workflow._Definition.must_from_class(FreezeWorkflow)
    assert (freeze.name, set(freeze.updates), set(freeze.queries)) == (
        "Freeze",
        {"freeze", "unfreeze"},
        {"state"},
    )
    limiter = workflow._Definition.must_from_class(TargetLimiterWorkflow)
    assert (limiter.name, set(limiter.updates), set(limiter.queries)) == (
        "TargetLimiter",
        {"acquire"},
        {"grants"},
    )
    assert FREEZE_WORKFLOW_ID == "remedium-freeze"


def test_retry_policies_never_retry_bad_params_or_templates() -> None:
    for policy in (ACTION_RETRY, DIAGNOSTIC_RETRY):
        assert list(policy.non_retryable_error_types or []) == ["InvalidParams", "TemplateError"]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`workflow.now()` outside a workflow: the helpers only read it, so a fixed time will do.

    `workflow.patched` answers as in a new run (the step is required) and `workflow.info` names
    the incident, so the gate's rules run here exactly as in a live workflow.
    """
    monkeypatch.setattr(workflow, "now", lambda: NOW)
    monkeypatch.setattr(workflow, "patched", lambda patch_id: True)
    monkeypatch.setattr(workflow, "info", lambda: SimpleNamespace(workflow_id="incident-manual-t-1"))
    yield


def _gate(approvers: list[str], stage: Stage = "awaiting_approval") -> tuple[ApprovalGate, Journal]:
    policy = Policy.model_validate({"approval": {"approvers": approvers}})
    journal = Journal(ALERT, lambda: stage)
    return ApprovalGate(journal, stage=lambda: stage, policy=lambda: policy), journal


def _pending(gate: ApprovalGate, step: str = "restart-pool") -> None:
    dry = DryRun(action="http.request", step_id=step, target="http://web/admin/restart", summary="would POST")
    gate.pending = PendingApproval(
        step=step,
        action="http.request",
        risk="medium",
        dry_run=dry,
        requested_at=NOW,
        deadline=NOW + timedelta(minutes=30),
        approvers=["alice"],
        request=1,
    )


def _claim(
    step: str | None, by: str | None, channel: Channel = "signal", request: int | None = None
) -> Claim:
    return Claim("approve", by, step, "", channel, request=request)


@pytest.mark.usefixtures("clock")
def test_refusals_say_what_is_wrong() -> None:
    gate, _ = _gate(["alice"], stage="acting")
    assert gate.refusal(_claim(None, None)) == 'an approval must say who decides: set "by" to your user name'
    assert gate.refusal(_claim("restart-pool", "alice")) == (
        "no approval is pending (stage acting); step 'restart-pool' is not waiting"
    )
    _pending(gate)
    assert gate.refusal(_claim("other", "alice")) == (
        "step 'other' is not the pending step (pending: 'restart-pool')"
    )
    assert gate.refusal(_claim(None, "mallory")) == "'mallory' may not approve: the policy allows alice"
    assert gate.refusal(_claim(None, "alice")) == (
        'it names no step; the pending step is "restart-pool": send {"step": "restart-pool", "by": "alice"}'
    )
    assert gate.refusal(_claim(None, "alice", channel="update")) == (
        'it names no step; the pending step is "restart-pool": '
        "remedium approve incident-manual-t-1 --step restart-pool --as alice"
    )
    assert gate.refusal(_claim("restart-pool", "alice", request=2)) == (
        "approval request 2 is closed; the pending one is request 1 (step 'restart-pool')"
    )
    assert gate.refusal(_claim("restart-pool", "alice")) is None
    assert gate.refusal(_claim("restart-pool", "alice", request=1)) is None


@pytest.mark.usefixtures("clock")
def test_refused_update_is_audited_then_an_approval_refused_error() -> None:
    gate, journal = _gate(["alice"])
    _pending(gate)
    with pytest.raises(ApplicationError) as refused:
        gate.decide(DecideRequest(decision="approve", by="mallory", step="restart-pool"))
    assert refused.value.type == "ApprovalRefused"
    assert refused.value.non_retryable
    assert gate.verdict is None
    entry = journal.entries[-1]
    assert (entry.kind, entry.actor, entry.message) == (
        "approval_refused",
        "mallory",
        "approve by mallory via update refused: 'mallory' may not approve: the policy allows alice",
    )
    assert entry.data["channel"] == "update"


@pytest.mark.usefixtures("clock")
def test_bad_signals_are_recorded_and_change_nothing() -> None:
    gate, journal = _gate(["alice"])
    _pending(gate)
    gate.on_signal(None, approved=True)
    gate.on_signal({"by": 42}, approved=True)
    gate.on_signal({"by": "mallory"}, approved=False)
    gate.on_signal({"by": "alice"}, approved=True)
    assert [e.kind for e in journal.entries] == ["approval_refused"] * 4
    assert journal.entries[0].message == (
        "approve signal from nobody ignored: it has no data: "
        'send {"step": "restart-pool", "by": "<your name>"}'
    )
    assert journal.entries[2].message == (
        "reject signal from mallory ignored: 'mallory' may not approve: the policy allows alice"
    )
    assert journal.entries[2].actor == "mallory"
    assert journal.entries[3].message == (
        'approve signal from alice ignored: it names no step; the pending step is "restart-pool": '
        'send {"step": "restart-pool", "by": "alice"}'
    )
    assert all(e.data["channel"] == "signal" for e in journal.entries)
    assert gate.verdict is None and gate.approvals == []


@pytest.mark.usefixtures("clock")
def test_an_accepted_decision_is_the_verdict_and_on_record() -> None:
    gate, journal = _gate(["alice"])
    _pending(gate)
    answer = gate.decide(DecideRequest(decision="reject", by="alice", step="restart-pool", reason="not now"))
    assert answer == "step restart-pool rejected by alice"
    assert gate.verdict is not None and not gate.verdict.approved and gate.verdict.via == "update"
    assert gate.approvals == [gate.verdict]
    entry = journal.entries[-1]
    assert (entry.kind, entry.message, entry.step, entry.actor, entry.at) == (
        "rejected",
        "step restart-pool rejected by alice via update, self-declared: not now",
        "restart-pool",
        "alice",
        NOW,
    )
    verdict = gate.take()
    assert verdict is not None and gate.pending is None and gate.verdict is None


def test_facts_markdown_and_bounded_values() -> None:
    journal = Journal(ALERT, lambda: "diagnosing")
    facts = {
        "health": Fact(id="health", kind="http", ok=True, value={"status": 500}),
        "logs": Fact(id="logs", kind="loki", ok=False, error="timed out"),
    }
    assert journal.facts_markdown(facts) == (
        "- `health` (http): status=500\n- `logs` (loki): FAILED: timed out"
    )
    assert _bounded({"a": 1}) == {"a": 1}
    cut = _bounded("x" * 5000)
    assert cut["truncated"] is True and len(cut["preview"]) == 4000


def test_notify_is_silent_without_channels() -> None:
    journal = Journal(ALERT, lambda: "triggered")
    journal.notify("diagnosis", "Diagnosis: nothing")  # no outbox: no workflow context needed
    assert journal.entries == []


def test_failure_message_is_the_plain_error_outside_activities() -> None:
    assert failure_message(ValueError("boom")) == "boom"

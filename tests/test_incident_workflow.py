"""IncidentWorkflow on the time-skipping test server, with the real worker and HTTP actions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from remedium.models import AuditEntry, DecideRequest, ExternalUpdate, IncidentStatus
from remedium.names import SA_RUNBOOK, SA_STAGE
from tests.support import (
    TargetService,
    alert_for,
    restart_runbook,
    settings_for,
    start,
    wait_for_stage,
    worker_for,
    write_config,
)


@pytest.fixture
def target() -> Iterator[TargetService]:
    service = TargetService().start()
    yield service
    service.stop()


async def _audit(handle: WorkflowHandle[Any, Any]) -> list[AuditEntry]:
    entries: list[AuditEntry] = await handle.query("audit", result_type=list[AuditEntry])
    return entries


def _kinds(audit: list[AuditEntry]) -> list[str]:
    return [a.kind for a in audit]


async def test_thirty_minute_approval_timeout_escalates(
    ts_env: WorkflowEnvironment, tmp_path: Path, target: TargetService
) -> None:
    rb_dir, policy = write_config(tmp_path, [restart_runbook(approval_timeout="30m")], allow=[target.url])
    settings = settings_for(tmp_path, rb_dir, policy)
    async with worker_for(ts_env.client, settings):
        handle = await start(ts_env.client, settings, alert_for(target))
        result = await handle.result()
        audit = await _audit(handle)
    assert result.outcome == "escalated"
    assert "approval of step restart-pool timed out after 0:30:00" in result.reason
    assert result.report.escalation is not None
    assert target.applied_to("/restart") == []  # nothing was done without approval
    requested = next(a for a in audit if a.kind == "approval_requested")
    timed_out = next(a for a in audit if a.kind == "approval_timeout")
    assert (timed_out.at - requested.at).total_seconds() >= 30 * 60  # the durable timer really ran
    # the dry run was recorded before the wait
    assert _kinds(audit).index("dry_run") < _kinds(audit).index("approval_requested")


async def test_approve_by_signal_runs_action_and_verifies(
    ts_env: WorkflowEnvironment, tmp_path: Path, target: TargetService
) -> None:
    rb_dir, policy = write_config(tmp_path, [restart_runbook()], allow=[target.url])
    settings = settings_for(tmp_path, rb_dir, policy)
    async with worker_for(ts_env.client, settings):
        handle = await start(ts_env.client, settings, alert_for(target))
        status = await wait_for_stage(handle, "awaiting_approval")
        assert status.pending_approval is not None
        assert status.pending_approval.step == "restart-pool"
        assert "would send POST" in status.pending_approval.dry_run.summary
        assert target.applied == []  # the dry run touched nothing
        desc = await handle.describe()
        assert desc.typed_search_attributes.get(SA_STAGE) == "awaiting_approval"
        assert desc.typed_search_attributes.get(SA_RUNBOOK) == "web-restart"
        await handle.signal("approve", {"step": "restart-pool", "by": "alice", "reason": "go"})
        result = await handle.result()
        audit = await _audit(handle)
    assert result.outcome == "resolved", result.reason
    assert [d.body for d in target.applied_to("/restart")] == [{"pool": "web"}]
    assert target.applied_to("/restart")[0].key == f"{handle.id}/restart-pool"
    approved = next(a for a in audit if a.kind == "approved")
    assert approved.actor == "alice" and "via signal, self-declared" in approved.message
    assert result.report.follow_ups == ["check why the web-frontend pool wedged"]
    desc = await handle.describe()
    assert desc.typed_search_attributes.get(SA_STAGE) == "resolved"


async def test_update_validator_refuses_disallowed_and_wrong_step(
    ts_env: WorkflowEnvironment, tmp_path: Path, target: TargetService
) -> None:
    rb_dir, policy = write_config(tmp_path, [restart_runbook()], approvers=["alice"], allow=[target.url])
    settings = settings_for(tmp_path, rb_dir, policy)
    async with worker_for(ts_env.client, settings):
        handle = await start(ts_env.client, settings, alert_for(target))
        await wait_for_stage(handle, "awaiting_approval")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                "decide", DecideRequest(decision="approve", by="mallory"), result_type=str
            )
        assert isinstance(refused.value.cause, ApplicationError)
        assert refused.value.cause.message == "'mallory' may not approve: the policy allows alice"
        with pytest.raises(WorkflowUpdateFailedError) as wrong_step:
            await handle.execute_update(
                "decide", DecideRequest(decision="approve", by="alice", step="scale-up"), result_type=str
            )
        assert isinstance(wrong_step.value.cause, ApplicationError)
        assert (
            "'scale-up' is not the pending step (pending: 'restart-pool')" in wrong_step.value.cause.message
        )
        still = await handle.query("status", result_type=IncidentStatus)
        assert still.stage == "awaiting_approval" and still.approvals == []
        message = await handle.execute_update(
            "decide", DecideRequest(decision="approve", by="alice", step="restart-pool"), result_type=str
        )
        assert message == "step restart-pool approved by alice"
        result = await handle.result()
    assert result.outcome == "resolved"
    assert len(target.applied_to("/restart")) == 1
    # the end-of-incident summary tells the story from the audit trail
    summary = result.report.markdown
    assert "- **Outcome:** resolved (recovered: all conditions hold)" in summary
    assert "### Root cause" in summary and "`health` (http)" in summary
    assert "- `restart-pool` http.request: sent POST" in summary
    assert "  - dry run: dry run of restart-pool: would send POST" in summary
    assert "  - step restart-pool approved by alice via update" in summary
    assert "  - checkpoint: " in summary
    assert "### Verification" in summary and "### Follow-ups" in summary
    assert "- check why the web-frontend pool wedged" in summary
    assert "| time (UTC) | stage | event |" in summary and "approved (alice)" in summary


async def test_disallowed_or_misdirected_signals_are_ignored_and_audited(
    ts_env: WorkflowEnvironment, tmp_path: Path, target: TargetService
) -> None:
    rb_dir, policy = write_config(tmp_path, [restart_runbook()], approvers=["alice"], allow=[target.url])
    settings = settings_for(tmp_path, rb_dir, policy)
    async with worker_for(ts_env.client, settings):
        handle = await start(ts_env.client, settings, alert_for(target))
        # a pre-approval of a step that is not pending yet must never apply later
        await handle.signal("approve", {"by": "alice", "step": "restart-pool"})
        await wait_for_stage(handle, "awaiting_approval")
        await handle.signal("approve", {"by": "mallory"})
        await handle.signal("approve", {"by": "alice", "step": "other-step"})
        await handle.signal("approve")  # the UI's "Send a Signal" with no data
        await handle.signal("approve", "yes please")
        status = await handle.query("status", result_type=IncidentStatus)
        assert status.stage == "awaiting_approval" and status.approvals == []
        ignored = [a for a in await _audit(handle) if a.kind == "approval_refused"]
        rejection = {"step": "restart-pool", "by": "alice", "reason": "not during the sale"}
        await handle.signal("reject", rejection)
        result = await handle.result()
    messages = [a.message for a in ignored]
    assert len(messages) == 5, messages
    assert "no approval is pending" in messages[0]
    assert any(
        "'mallory' may not approve" in m and a.actor == "mallory"
        for m, a in zip(messages, ignored, strict=True)
    )
    assert any("'other-step' is not the pending step" in m for m in messages)
    assert any("ignored: it has no data" in m for m in messages)
    assert any("its data is not an approval" in m for m in messages)
    assert result.outcome == "rejected"
    assert "rejected by alice: not during the sale" in result.reason
    assert target.applied == []


async def test_failed_verification_rolls_back_then_escalates(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    target = TargetService(health_after_restart=503).start()
    try:
        rb_dir, policy = write_config(
            tmp_path, [restart_runbook(approval_required=False)], required_for=[], allow=[target.url]
        )
        settings = settings_for(tmp_path, rb_dir, policy)
        async with worker_for(ts_env.client, settings):
            handle = await start(ts_env.client, settings, alert_for(target))
            result = await handle.result()
            audit = await _audit(handle)
    finally:
        target.stop()
    assert result.outcome == "escalated"
    assert result.reason.startswith("verification failed: not recovered within 0:02:00")
    assert result.reason.endswith("all changes were rolled back")
    assert [d.path for d in target.applied] == ["/admin/restart", "/admin/restore"]
    assert target.applied[1].key == f"{handle.id}/restart-pool/rollback"
    kinds = _kinds(audit)
    assert kinds.count("verify") == 4  # rounds at 0, 30, 60, 90 s within 2 minutes
    assert kinds.index("rolled_back") < kinds.index("escalated")


async def test_worse_rolls_back_at_once(ts_env: WorkflowEnvironment, tmp_path: Path) -> None:
    target = TargetService(health_after_restart=503).start()
    try:
        runbook = restart_runbook(
            approval_required=False,
            worse_if=["facts.health_after.ok and facts.health_after.value.status == 503"],
        )
        rb_dir, policy = write_config(tmp_path, [runbook], required_for=[], allow=[target.url])
        settings = settings_for(tmp_path, rb_dir, policy)
        async with worker_for(ts_env.client, settings):
            handle = await start(ts_env.client, settings, alert_for(target))
            result = await handle.result()
            audit = await _audit(handle)
    finally:
        target.stop()
    assert result.outcome == "escalated"
    assert "got worse" in result.reason
    assert _kinds(audit).count("verify") == 1
    assert [d.path for d in target.applied] == ["/admin/restart", "/admin/restore"]


async def test_no_runbook_matched_escalates_with_context(
    ts_env: WorkflowEnvironment, tmp_path: Path, target: TargetService
) -> None:
    rb_dir, policy = write_config(tmp_path, [restart_runbook()], allow=[target.url])
    settings = settings_for(tmp_path, rb_dir, policy)
    alert = alert_for(target).model_copy(update={"service": "billing"})
    async with worker_for(ts_env.client, settings):
        handle = await start(ts_env.client, settings, alert)
        result = await handle.result()
    assert result.outcome == "escalated"
    assert result.reason == "no runbook matches this alert"
    assert result.report.escalation is not None
    assert "web health check failing" in result.report.escalation.message
    desc = await handle.describe()
    assert desc.typed_search_attributes.get(SA_STAGE) == "escalated"


async def test_upstream_resolve_stops_actions(
    ts_env: WorkflowEnvironment, tmp_path: Path, target: TargetService
) -> None:
    rb_dir, policy = write_config(tmp_path, [restart_runbook()], allow=[target.url])
    settings = settings_for(tmp_path, rb_dir, policy)
    async with worker_for(ts_env.client, settings):
        handle = await start(ts_env.client, settings, alert_for(target))
        await wait_for_stage(handle, "awaiting_approval")
        await handle.signal("external_update", ExternalUpdate(event="resolved", by="Tenex Engineer"))
        result = await handle.result()
    assert result.outcome == "closed_upstream"
    assert result.reason == "incident resolved upstream by Tenex Engineer"
    assert target.applied == []


async def test_status_query_and_current_details_guide_the_operator(
    ts_env: WorkflowEnvironment, tmp_path: Path, target: TargetService
) -> None:
    rb_dir, policy = write_config(tmp_path, [restart_runbook()], allow=[target.url])
    settings = settings_for(tmp_path, rb_dir, policy)
    client: Client = ts_env.client
    async with worker_for(client, settings):
        handle = await start(client, settings, alert_for(target))
        status = await wait_for_stage(handle, "awaiting_approval")
        metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        rejection = {"step": "restart-pool", "by": "bob", "reason": "pool is fine, DB is down"}
        await handle.signal("reject", rejection)
        await handle.result()
        after = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert status.facts["health"].ok and status.facts["health"].value["status"] == 500
    details = metadata.current_details
    assert "Waiting for approval of step `restart-pool`" in details
    assert '"step": "restart-pool"' in details
    assert f"remedium approve {handle.id} --step restart-pool --as <you>" in details
    assert re.search(r"Deadline: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(then escalates\)", details), details
    assert "#### Rejected\n- `restart-pool` by bob: pool is fine, DB is down" in after.current_details
    signals = {s.name: s.description for s in metadata.definition.signal_definitions}
    assert set(signals) >= {"approve", "reject", "external_update"}
    assert all(signals.values())
    updates = {u.name: u.description for u in metadata.definition.update_definitions}
    assert set(updates) == {"decide", "breaker_reset"}  # the UI lists each with its description
    assert all(updates.values())

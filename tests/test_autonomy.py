"""Earned autonomy end to end: a runbook climbs on its record, falls at once, and obeys humans.

Real Temporal (the session dev server), real workers (in process, and a `remedium worker`
subprocess that is SIGKILLed), the `remedium autonomy` CLI as a user runs it, and an http
runbook against a loopback service that really restarts and really fails to recover.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from remedium.models import AuditEntry, IncidentResult, IncidentStatus
from remedium.settings import Settings
from tests.conftest import dev_address
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

BIN = Path(sys.executable).parent
SHOW_OUT = Path("/tmp/autonomy_show.json")
POLICY_OUT = Path("/tmp/autonomy_policy.yaml")


def _config(tmp: Path, target: TargetService, trust: dict[str, Any]) -> tuple[str, Settings]:
    """A fresh runbook name (each test its own entity on the shared server) and its settings."""
    name = f"web-restart-{uuid.uuid4().hex[:6]}"
    runbook = restart_runbook(name=name, approval_required=False, within="4s", every="1s")
    rb_dir, policy = write_config(
        tmp, [runbook], required_for=["medium", "high"], allow=[target.url], policy_extra={"trust": trust}
    )
    return name, settings_for(tmp, rb_dir, policy)


def _env(dev_env: WorkflowEnvironment, settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "REMEDIUM_TEMPORAL_ADDRESS": dev_address(dev_env),
        "REMEDIUM_TASK_QUEUE": settings.task_queue,
        "REMEDIUM_RUNBOOKS_DIR": str(settings.runbooks_dir),
        "REMEDIUM_POLICY_FILE": str(settings.policy_file),
    }


async def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a thread: the in-process worker's event loop must keep serving meanwhile."""
    return await asyncio.to_thread(
        subprocess.run, [str(BIN / "remedium"), *args], env=env, capture_output=True, text=True, timeout=90
    )


async def _show(env: dict[str, str], runbook: str) -> dict[str, Any]:
    done = await _cli(env, "autonomy", "show", runbook, "--json")
    assert done.returncode == 0, done.stderr
    views = json.loads(done.stdout)
    assert isinstance(views, list) and len(views) == 1
    view: dict[str, Any] = views[0]
    assert set(view) == {"runbook", "level", "cap", "record", "history"}
    return view


async def _until_level(
    env: dict[str, str], runbook: str, level: str, deadline_s: float = 30
) -> dict[str, Any]:
    """The entity applies a report as it arrives; poll for the level rather than assume when."""
    stop = time.monotonic() + deadline_s
    while True:
        view = await _show(env, runbook)
        if view["level"] == level or time.monotonic() > stop:
            return view
        await asyncio.sleep(0.3)


async def _incident(
    client: Client, settings: Settings, target: TargetService, *, approve: bool, recovers: bool = True
) -> tuple[IncidentResult, list[AuditEntry], IncidentStatus, bool]:
    """One incident on a failing service; True in the last place when it asked for approval."""
    target.health_status = 500
    target.health_after_restart = 200 if recovers else 500
    handle: WorkflowHandle[Any, IncidentResult] = await start(client, settings, alert_for(target))
    asked = False
    if approve:
        await wait_for_stage(handle, "awaiting_approval", timeout=60)
        asked = True
        await handle.signal("approve", {"step": "restart-pool", "by": "alice"})
    result = await asyncio.wait_for(handle.result(), 90)
    audit = await handle.query("audit", result_type=list[AuditEntry])
    status = await handle.query("status", result_type=IncidentStatus)
    asked = asked or any(e.kind == "approval_requested" for e in audit)
    return result, audit, status, asked


def _autonomy_entry(audit: list[AuditEntry]) -> AuditEntry:
    entries = [e for e in audit if e.kind == "autonomy" and "runs at level" in e.message]
    assert len(entries) == 1, [e.message for e in audit if e.kind == "autonomy"]
    return entries[0]


async def test_a_runbook_earns_supervised_and_falls_back_at_once_on_a_rollback(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    target = TargetService().start()
    trust = {
        "start": "advisory",
        "promote": {"supervised": {"after": 3, "success_rate": 1.0}},
        "review_sample": 1.0,  # every supervised incident is flagged for post-hoc review
    }
    name, settings = _config(tmp_path, target, trust)
    env = _env(dev_env, settings)
    client = dev_env.client
    try:
        async with worker_for(client, settings):
            for n in range(3):  # advisory: every state-changing step waits; approved unchanged
                result, audit, status, asked = await _incident(client, settings, target, approve=True)
                assert result.outcome == "resolved", result.reason
                assert asked and status.level == "advisory"
                entry = _autonomy_entry(audit)
                assert entry.data["level"] == "advisory"
                assert (
                    ("no record yet" in entry.message)
                    if n == 0
                    else (f"{n} incident(s) at advisory" in entry.message)
                )
            promoted = await _until_level(env, name, "supervised")
            assert promoted["level"] == "supervised", promoted
            assert promoted["history"][-1]["kind"] == "promoted"
            assert "3 incident(s) at advisory, success rate 100%" in promoted["history"][-1]["reason"]

            # supervised: the medium-risk restart runs without asking
            result, audit, status, asked = await _incident(client, settings, target, approve=False)
            assert result.outcome == "resolved", result.reason
            assert not asked and status.approvals == [] and status.level == "supervised"
            assert "promoted to supervised" in _autonomy_entry(audit).message
            assert status.review and "flagged for post-hoc review" in _autonomy_entry(audit).message
            assert any(e.kind == "autonomy" and "runs without asking" in e.message for e in audit)

            # the restart does not help: verification fails, it is rolled back, the runbook falls at once
            result, audit, status, asked = await _incident(
                client, settings, target, approve=False, recovers=False
            )
            assert result.outcome == "escalated" and "rolled back" in result.reason, result.reason
            assert not asked and _autonomy_entry(audit).data["level"] == "supervised"
            demoted = await _until_level(env, name, "advisory")
            assert demoted["level"] == "advisory", demoted
            last = demoted["history"][-1]
            assert last["kind"] == "demoted" and last["previous"] == "supervised"
            assert "rollback" in last["figures"]["events"] and "verify_failed" in last["figures"]["events"]

            # and the next one asks again
            result, audit, status, asked = await _incident(client, settings, target, approve=True)
            assert result.outcome == "resolved" and asked and status.level == "advisory"
            assert "demotes to advisory" in _autonomy_entry(audit).message
            final = await _show(env, name)
    finally:
        target.stop()
    record = final["record"]
    assert record["incidents"] == 6 and record["rollbacks"] == 1 and record["verify_failed"] == 1
    assert (
        record["by_level"]["advisory"]["resolved"] == 4 and record["by_level"]["supervised"]["resolved"] == 1
    )
    assert [h["kind"] for h in final["history"]] == ["start", "promoted", "demoted"]
    SHOW_OUT.write_text(json.dumps([final], indent=2) + "\n")
    assert settings.policy_file is not None
    POLICY_OUT.write_text(Path(settings.policy_file).read_text())
    assert yaml.safe_load(POLICY_OUT.read_text())["trust"] == trust


def _report_reset_point(events: list[Any]) -> int:
    """The workflow task that scheduled the outcome report: resetting there runs the report again."""
    for event in events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == "autonomy.report":
                return int(attrs.workflow_task_completed_event_id)
    raise AssertionError("the incident never reported its outcome")


async def test_an_outcome_reported_again_after_a_worker_sigkill_counts_once(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    target = TargetService().start()
    name, settings = _config(tmp_path, target, {"start": "full"})
    env = _env(dev_env, settings)
    client = dev_env.client
    logs = [open(tmp_path / f"worker{i}.log", "w") for i in (1, 2)]  # closed below
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            subprocess.Popen([str(BIN / "remedium"), "worker"], env=env, stdout=logs[0], stderr=logs[0])
        )
        target.health_status = 500
        handle: WorkflowHandle[Any, IncidentResult] = await start(client, settings, alert_for(target))
        stop = time.monotonic() + 60
        while not target.applied_to("/restart") and time.monotonic() < stop:
            await asyncio.sleep(0.02)
        assert target.applied_to("/restart"), "the incident never acted"
        procs[0].send_signal(signal.SIGKILL)  # its last action just ran: verify and the report are to come
        procs[0].wait(10)
        procs.append(
            subprocess.Popen([str(BIN / "remedium"), "worker"], env=env, stdout=logs[1], stderr=logs[1])
        )
        result = await asyncio.wait_for(handle.result(), 120)
        assert result.outcome == "resolved", result.reason
        first = await _show(env, name)
        assert first["record"]["incidents"] == 1, first

        # The report delivered a second time (what a retry after a crash does): reset the
        # finished incident to the task that scheduled its report, so the report runs again.
        history = await handle.fetch_history()
        point = _report_reset_point(list(history.events))
        described = await handle.describe()
        reset = await client.workflow_service.reset_workflow_execution(
            ResetWorkflowExecutionRequest(
                namespace=client.namespace,
                workflow_execution=WorkflowExecution(workflow_id=handle.id, run_id=described.run_id),
                reason="test: deliver the outcome report again",
                workflow_task_finish_event_id=point,
                request_id=uuid.uuid4().hex,
            )
        )
        again = client.get_workflow_handle(handle.id, run_id=reset.run_id, result_type=IncidentResult)
        assert (await asyncio.wait_for(again.result(), 120)).outcome == "resolved"
        rerun = await again.fetch_history()
        reports = [
            e
            for e in rerun.events
            if e.HasField("activity_task_completed_event_attributes")
            and any(
                s.event_id == e.activity_task_completed_event_attributes.scheduled_event_id
                and s.activity_task_scheduled_event_attributes.activity_type.name == "autonomy.report"
                for s in rerun.events
                if s.HasField("activity_task_scheduled_event_attributes")
            )
        ]
        assert reports, "the reset run did not report again"
        final = await _show(env, name)
    finally:
        target.stop()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)
        for log in logs:
            log.close()
    assert final["record"]["incidents"] == 1, final
    assert final["record"]["by_level"] == {"full": {"resolved": 1}}, final


async def test_autonomy_set_caps_and_demotes_and_promotion_past_the_cap_is_refused(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    target = TargetService().start()
    trust = {"start": "full", "promote": {"supervised": {"after": 1, "success_rate": 1.0}}}
    name, settings = _config(tmp_path, target, trust)
    env = _env(dev_env, settings)
    client = dev_env.client
    try:
        async with worker_for(client, settings):
            before = await _show(env, name)  # no record yet: the policy's start level
            assert (before["level"], before["cap"], before["history"]) == ("full", "full", [])

            done = await _cli(
                env, "autonomy", "set", name, "advisory", "--as", "alice", "--reason", "new on-call"
            )
            assert done.returncode == 0, done.stderr
            assert f"runbook {name} is now at advisory (cap advisory)" in done.stdout

            result, audit, status, asked = await _incident(client, settings, target, approve=True)
            assert result.outcome == "resolved" and asked and status.level == "advisory"
            assert "set by alice: new on-call" in _autonomy_entry(audit).message

            view = await _show(env, name)
            assert (view["level"], view["cap"]) == ("advisory", "advisory"), view
            assert [h["kind"] for h in view["history"]] == ["start", "set", "promotion_refused"]
            refused = view["history"][-1]
            assert "promotion to supervised refused, capped at advisory by a human" in refused["reason"]

            stop = time.monotonic() + 30  # the listing reads visibility, which lags a little
            while True:
                listed = await _cli(env, "autonomy", "show", "--json")
                assert listed.returncode == 0, listed.stderr
                if name in [v["runbook"] for v in json.loads(listed.stdout)] or time.monotonic() > stop:
                    break
                await asyncio.sleep(0.5)
            assert name in [v["runbook"] for v in json.loads(listed.stdout)]

            missing = await _cli(env, "autonomy", "set", name, "sideways", "--as", "alice", "--reason", "x")
            assert missing.returncode == 2 and "Traceback" not in missing.stderr
            unknown = await _cli(env, "review", "incident-manual-nope", "--verdict", "bad", "--as", "alice")
            assert unknown.returncode == 1 and unknown.stderr.startswith("remedium: no incident")

            # a bad review of the incident is recorded on the runbook's entity
            reviewed = await _cli(env, "review", status.workflow_id, "--verdict", "bad", "--as", "bob")
            assert reviewed.returncode == 0, reviewed.stderr
            view = await _show(env, name)
            assert view["record"]["bad_reviews"] == 1
            assert (
                view["history"][-1]["kind"] == "review"
                and "reviewed bad by bob" in view["history"][-1]["reason"]
            )
    finally:
        target.stop()


def test_a_bad_trust_section_is_refused_with_its_line(tmp_path: Path) -> None:
    from remedium.policy_loader import validate_policy_file

    path = tmp_path / "policy.yaml"
    path.write_text(
        "apiVersion: remedium/v1\nkind: Policy\ntrust:\n  start: sideways\n"
        "  promote:\n    supervised: {aftr: 3}\n"
    )
    messages = [str(p) for p in validate_policy_file(path, display="policy.yaml")]
    wrong = "trust.start: expected 'advisory', 'supervised', 'conditional' or 'full', got 'sideways'"
    assert f"policy.yaml:4:10: {wrong}" in messages
    assert any(m.startswith("policy.yaml:6:18: unknown key 'aftr'") for m in messages), messages
    path.write_text("trust:\n  promote:\n    conditional: {after: 2, agreement: 0.5}\n")
    messages = [str(p) for p in validate_policy_file(path, display="policy.yaml")]
    assert any(
        m.startswith("policy.yaml:2:3: trust: promote.conditional.agreement")
        and "measured at advisory only" in m
        for m in messages
    ), messages


def test_the_window_and_duplicates_are_honoured_by_the_record() -> None:
    """The record's rules on their own (pure, given `now`): a stale incident does not count."""
    from datetime import UTC, datetime, timedelta

    from remedium.models.trust import AutonomyState, OutcomeReport, TrustPolicy
    from workflows.autonomy import TrustRecord

    trust = TrustPolicy.model_validate({"promote": {"supervised": {"after": 2, "window": "1h"}}})
    record = TrustRecord(AutonomyState(runbook="rb", trust=trust))
    t0 = datetime(2026, 12, 1, tzinfo=UTC)

    def report(n: int, at: datetime) -> bool:
        done = OutcomeReport(
            incident_id=f"i{n}", runbook="rb", level="advisory", outcome="resolved", trust=trust
        )
        return record.report(done, at)

    assert report(1, t0) and not report(1, t0 + timedelta(minutes=1))  # the same incident twice: once
    assert report(2, t0 + timedelta(hours=2)) and record.level() == "advisory"  # i1 is out of the window
    assert report(3, t0 + timedelta(hours=2, minutes=30)) and record.level() == "supervised"
    assert record.view(t0).record["incidents"] == 3

"""Escalation thresholds (`escalate.when`) hand the incident to a human at once, at every level.

On a real worker and dev server: one incident whose threshold holds after diagnosis (nothing
runs; the reason names the plan it would have run), one whose threshold holds at the first
verify round (the change stays, nothing is rolled back), under a policy without `trust` and
at each earned-autonomy level. What is asserted is what a user sees: the outcome and its
reason, the audit trail, what the target service received, and that the history replays.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from remedium.models import Alert, AuditEntry, DecideInput, Fact, IncidentStatus, Policy
from remedium.models.runbook import Runbook
from remedium.replay import replay_paths
from remedium.runbook import engine
from tests.support import (
    TargetService,
    alert_for,
    restart_runbook,
    settings_for,
    start,
    write_config,
)
from tests.support import worker_for as worker

BIN = Path(sys.executable).parent
IMPACT = "facts.health.ok and facts.health.value.status >= 500"
LEVELS = [None, "advisory", "supervised", "conditional", "full"]


def _runbook(name: str, service: str, escalate_when: list[str]) -> dict[str, Any]:
    runbook = restart_runbook(name=name, approval_required=False, every="1s", within="30s")
    runbook["match"] = {"source": ["manual"], "service": [service]}
    runbook["escalate"] = {"to": ["oncall-payments"], "when": escalate_when}
    return runbook


async def _drive(handle: WorkflowHandle[Any, Any]) -> None:
    """Approve whatever the level makes wait (advisory asks for every step), until the end."""
    while True:
        desc = await handle.describe()
        if desc.status is not None and desc.status.name != "RUNNING":
            return
        status: IncidentStatus = await handle.query("status", result_type=IncidentStatus)
        pending = status.pending_approval
        if pending is not None and not pending.approved_by:
            await handle.signal("approve", {"step": pending.step, "by": "alice", "request": pending.request})
        await asyncio.sleep(0.2)


async def _replays(handle: WorkflowHandle[Any, Any], tmp: Path) -> str | None:
    path = tmp / f"{handle.id.replace('/', '_')}.json"
    path.write_text((await handle.fetch_history()).to_json())
    ((_, failure),) = await replay_paths([path])
    return failure


@pytest.mark.parametrize("level", LEVELS, ids=[str(level) for level in LEVELS])
async def test_threshold_after_diagnosis_and_at_a_verify_round_hands_off_at_once(
    dev_env: WorkflowEnvironment, tmp_path: Path, level: str | None
) -> None:
    before, during = TargetService().start(), TargetService(health_after_restart=503).start()
    tag = uuid.uuid4().hex[:6]
    try:
        rb_dir, policy = write_config(
            tmp_path,
            [
                # customer impact already visible in the diagnosis: hand off before acting
                _runbook(f"impact-{tag}", "web-impact*", [IMPACT]),
                # the check after the change shows an SLA breach coming: hand off while monitoring
                _runbook(f"sla-{tag}", "web-sla*", ["facts.health_after.value.status == 503"]),
            ],
            required_for=[],
            policy_extra={"trust": {"start": level}} if level else None,
            allow=[before.url, during.url],
        )
        settings = settings_for(tmp_path, rb_dir, policy)
        impact = alert_for(before).model_copy(update={"service": "web-impact"})
        sla = alert_for(during).model_copy(update={"service": "web-sla"})
        async with worker(dev_env.client, settings):
            first = await start(dev_env.client, settings, impact)
            second = await start(dev_env.client, settings, sla)
            await asyncio.wait_for(asyncio.gather(_drive(first), _drive(second)), 90)
            results = [await first.result(), await second.result()]
            audits = [await h.query("audit", result_type=list[AuditEntry]) for h in (first, second)]
            final = await second.query("status", result_type=IncidentStatus)
            replays = [await _replays(h, tmp_path) for h in (first, second)]
    finally:
        before.stop()
        during.stop()

    assert replays == [None, None]
    at_diagnosis, at_verify = results
    assert at_diagnosis.outcome == "escalated"
    assert at_diagnosis.reason == (
        "escalation threshold after diagnosis: escalate.when "
        "`facts.health.ok and facts.health.value.status >= 500` holds; nothing was run "
        "(the plan would have run: restart-pool (http.request))"
    )
    assert before.deliveries == [], "nothing ran"
    escalation = at_diagnosis.report.escalation
    assert escalation is not None and escalation.to == ["oncall-payments"]
    kinds = [e.kind for e in audits[0]]
    assert "escalation_threshold" in kinds and "action_started" not in kinds
    assert kinds.index("plan") < kinds.index("escalation_threshold"), "the plan it would run is on record"

    assert at_verify.outcome == "escalated"
    assert at_verify.reason == (
        "escalation threshold while monitoring: escalate.when "
        "`facts.health_after.value.status == 503` holds; changes kept, not rolled back: restart-pool"
    )
    assert len(during.applied_to("/admin/restart")) == 1
    assert during.applied_to("/admin/restore") == [], "a threshold is not a rollback"
    assert [c.step_id for c in final.checkpoints] == ["restart-pool"]
    verify_rounds = [e.message for e in audits[1] if e.kind == "verify"]
    assert verify_rounds == [
        "round 1: escalation threshold: escalate.when `facts.health_after.value.status == 503` holds"
    ], "handed off at the first round that breached, without waiting for `within`"
    assert "rollback_started" not in [e.kind for e in audits[1]]
    if level is not None:
        assert any(e.kind == "autonomy" for e in audits[0]), "the audit names the level it ran at"


def _validate(tmp: Path, when: list[str]) -> subprocess.CompletedProcess[str]:
    runbook = _runbook("bad-threshold", "web*", when)
    path = tmp / "bad-threshold.yaml"
    path.write_text(yaml.safe_dump(runbook, sort_keys=False))
    return subprocess.run(
        [str(BIN / "remedium"), "runbook", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_runbook_validate_points_at_a_broken_threshold(tmp_path: Path) -> None:
    done = _validate(tmp_path, ["facts.health.ok", "facts.health.value.status >="])
    assert done.returncode == 1
    lines = [line for line in done.stdout.splitlines() if "escalate" in line or "condition" in line]
    assert len(lines) == 1, done.stdout
    text = (tmp_path / "bad-threshold.yaml").read_text().splitlines()
    path, line_no, col, message = lines[0].split(":", 3)
    assert path.endswith("bad-threshold.yaml") and "condition syntax error" in message
    assert "facts.health.value.status >=" in text[int(line_no) - 1], (lines[0], text)
    assert int(col) >= 1


def test_a_failed_fact_the_threshold_reads_is_said_and_hands_off() -> None:
    """Unknown is never false: the decision names the diagnostic that failed and hands off."""
    runbook = Runbook.model_validate(
        _runbook("failed-fact", "web*", ["facts.health.value.status >= 500"]) | {"decide": {"when": []}}
    )
    alert = Alert(
        source="manual", id="failed-fact", title="down", service="web", annotations={"base_url": "http://x"}
    )
    failed = Fact(id="health", kind="http", ok=False, error="connection refused")
    decision = engine.decide(
        DecideInput(alert=alert, policy=Policy(), candidates=[runbook], facts={"health": failed})
    )
    assert decision.runbook == "failed-fact"
    assert decision.escalate is not None
    assert "diagnostic health failed: connection refused" in decision.escalate
    assert decision.escalate.endswith("so it counts as holding")

"""Policy rules as code: first match wins, each decision names its rule; on a real worker.

- an out-of-hours rule refuses the step with the rule id (and the same rule in hours lets it run);
- a rule's quorum: one approval keeps it waiting, the same approver twice too, an approver the
  rule does not name is refused, a second distinct named approver releases it; the approval
  request, `remedium approvals` and the audit name the rule;
- the green/yellow/red zones of the shipped example policy: green runs unasked although the
  policy's risk settings would ask, red is refused;
- `remedium policy test`: which rule fires and why, `--json`, and `path:line:col` for a bad policy.

The quorum machinery itself (distinct approvers, the same one twice counting once) is asserted
for `approval.quorum` in tests/test_approvals_trust.py
(test_quorum_of_two_waits_for_two_distinct_approvers_and_one_reject_rejects); here it is driven
by a rule. Times are the incident's own clock read in a fixed-offset zone chosen so that "now"
is hours away from the 08:00-18:00 boundary, whenever the test runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from remedium.models import AuditEntry, DecideRequest, IncidentStatus
from remedium.replay import replay_paths
from tests.conftest import dev_address
from tests.support import (
    TargetService,
    alert_for,
    restart_runbook,
    settings_for,
    start,
    wait_for_stage,
    write_config,
)
from tests.support import worker_for as worker

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ZONES = REPO / "examples" / "policy-zones.yaml"
OUT_OF_HOURS = 'step.params.json.namespace == "payments" and not (8 <= time.hour < 18)'


def zone_at(local_hour: int) -> str:
    """A fixed-offset zone (`Etc/GMT-3` is UTC+3) in which it is now `local_hour` o'clock."""
    offset = (local_hour - datetime.now(UTC).hour + 12) % 24 - 12  # -12 .. +11
    return f"Etc/GMT{-offset:+d}"


def payments_runbook(name: str = "payments-restart", risk: str = "medium") -> dict[str, Any]:
    runbook = restart_runbook(name=name, approval_required=False, every="1s", within="30s")
    runbook["plan"][0]["with"]["json"]["namespace"] = "payments"
    runbook["plan"][0]["risk"] = risk
    return runbook


async def _audit(handle: WorkflowHandle[Any, Any]) -> list[AuditEntry]:
    entries: list[AuditEntry] = await handle.query("audit", result_type=list[AuditEntry])
    return entries


async def _replays(handle: WorkflowHandle[Any, Any], tmp: Path) -> str | None:
    path = tmp / f"{handle.id.replace('/', '_')}.json"
    path.write_text((await handle.fetch_history()).to_json())
    ((_, failure),) = await replay_paths([path])
    return failure


def _remedium(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "remedium"), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


@pytest.mark.parametrize(("local_hour", "refused"), [(22, True), (12, False)], ids=["22h", "12h"])
async def test_out_of_hours_rule_refuses_the_step_with_the_rule_id(
    dev_env: WorkflowEnvironment, tmp_path: Path, local_hour: int, refused: bool
) -> None:
    target = TargetService().start()
    try:
        rule = {"id": "payments-after-hours", "when": OUT_OF_HOURS, "timezone": zone_at(local_hour)}
        rb_dir, policy = write_config(
            tmp_path,
            [payments_runbook()],
            required_for=[],  # without the rule, the step runs unasked
            policy_extra={"rules": [rule | {"effect": "deny"}]},
            allow=[target.url],
        )
        settings = settings_for(tmp_path, rb_dir, policy)
        async with worker(dev_env.client, settings):
            handle = await start(dev_env.client, settings, alert_for(target))
            result = await asyncio.wait_for(handle.result(), 60)
            audit = await _audit(handle)
            replay = await _replays(handle, tmp_path)
    finally:
        target.stop()

    assert replay is None
    decision = next(e for e in audit if e.kind == "policy_rule")
    if refused:
        assert result.outcome == "escalated"
        assert result.reason.startswith("refused by policy rule payments-after-hours: ")
        assert target.applied_to("/admin/restart") == []
        refusal = next(e for e in audit if e.kind == "guard_refused")
        assert refusal.data == {"guard": "policy_rule", "rule": "payments-after-hours"}
        assert refusal.message == "step restart-pool refused by policy rule payments-after-hours"
        assert decision.data["rule"] == "payments-after-hours" and decision.data["effect"] == "deny"
        assert decision.message.endswith(f"{zone_at(local_hour)})"), "the local time it was read at"
    else:
        assert result.outcome == "resolved", result.reason
        assert len(target.applied_to("/admin/restart")) == 1
        assert decision.data["rule"] is None
        assert decision.message.startswith("no policy rule fires for step restart-pool")


async def test_a_rule_quorum_waits_for_two_distinct_named_approvers_and_the_inbox_names_the_rule(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    target = TargetService().start()
    rule = {
        "id": "payments-two-person",
        "when": 'step.params.json.namespace == "payments"',
        "effect": {"require_approval": {"quorum": 2, "approvers": ["alice", "bob"]}},
    }
    try:
        rb_dir, policy = write_config(
            tmp_path,
            [payments_runbook()],
            approvers=["alice", "bob", "carol"],
            required_for=[],  # only the rule asks
            policy_extra={"rules": [rule]},
            allow=[target.url],
        )
        settings = settings_for(tmp_path, rb_dir, policy)
        env = {
            **os.environ,
            "REMEDIUM_TEMPORAL_ADDRESS": dev_address(dev_env),
            "REMEDIUM_TASK_QUEUE": settings.task_queue,
            "REMEDIUM_RUNBOOKS_DIR": str(rb_dir),
            "REMEDIUM_POLICY_FILE": str(policy),
        }
        async with worker(dev_env.client, settings):
            handle = await start(dev_env.client, settings, alert_for(target))
            try:
                waiting = await wait_for_stage(handle, "awaiting_approval", timeout=60)
                refusals = []
                for by in ("carol", "alice", "alice"):
                    try:
                        answer = await handle.execute_update(
                            "decide",
                            DecideRequest(decision="approve", by=by, step="restart-pool"),
                            result_type=str,
                        )
                        refusals.append(f"ok: {answer}")
                    except WorkflowUpdateFailedError as err:
                        cause = err.cause
                        assert isinstance(cause, ApplicationError) and cause.type == "ApprovalRefused"
                        refusals.append(f"refused: {cause.message}")
                half: IncidentStatus = await handle.query("status", result_type=IncidentStatus)
                delivered_at_one = list(target.applied)
                rows: list[dict[str, Any]] = []
                for _ in range(100):  # the visibility store catches up with the stage on its own time
                    listed = await asyncio.to_thread(_remedium, "approvals", "--json", env=env)
                    assert listed.returncode == 0, listed.stderr
                    rows = [r for r in json.loads(listed.stdout) if r["workflow_id"] == handle.id]
                    if rows:
                        break
                    await asyncio.sleep(0.2)
                table = await asyncio.to_thread(_remedium, "approvals", env=env)
                await handle.execute_update(
                    "decide",
                    DecideRequest(decision="approve", by="bob", step="restart-pool"),
                    result_type=str,
                )
                result = await asyncio.wait_for(handle.result(), 60)
                audit = await _audit(handle)
                replay = await _replays(handle, tmp_path)
            finally:
                try:
                    await handle.terminate("test finished")
                except Exception:
                    pass  # it ended on its own
    finally:
        target.stop()

    pending = waiting.pending_approval
    assert pending is not None
    assert (pending.rule, pending.quorum, pending.approvers) == ("payments-two-person", 2, ["alice", "bob"])
    assert refusals == [
        "refused: 'carol' may not approve step restart-pool: "
        "policy rule payments-two-person allows only alice, bob",
        "ok: step restart-pool approved by alice (1 of 2 approvals): waiting for 1 more",
        "refused: alice already approved step restart-pool; it needs 2 distinct approvers (1 of 2 approvals)",
    ]
    assert half.stage == "awaiting_approval" and delivered_at_one == [], "one approver of two runs nothing"
    assert result.outcome == "resolved", result.reason
    assert len(target.applied_to("/admin/restart")) == 1
    assert replay is None
    requested = next(e for e in audit if e.kind == "approval_requested")
    assert requested.message.endswith("; it needs 2 distinct approvers (policy rule payments-two-person)")
    assert requested.data["rule"] == "payments-two-person"
    assert [e.actor for e in audit if e.kind == "approved"] == ["alice", "bob"]
    (row,) = rows
    assert row["rule"] == "payments-two-person"
    assert (row["quorum"], row["approved_by"], row["approvers"]) == (2, ["alice"], ["alice", "bob"])
    assert row["risk"] == "medium" and row["dry_run"] and row["deadline"]
    assert table.returncode == 0, table.stderr
    assert "may approve: alice, bob (policy rule payments-two-person)" in table.stdout


@pytest.mark.parametrize(("risk", "outcome"), [("low", "resolved"), ("high", "escalated")])
async def test_example_zones_green_runs_unasked_and_red_is_refused(
    dev_env: WorkflowEnvironment, tmp_path: Path, risk: str, outcome: str
) -> None:
    import yaml

    target = TargetService().start()
    zones = yaml.safe_load(ZONES.read_text())
    try:
        rb_dir, policy = write_config(
            tmp_path,
            [payments_runbook(name=f"zoned-{risk}", risk=risk)],
            required_for=["low", "medium", "high"],  # the risk settings alone would ask for every step
            policy_extra={"rules": zones["rules"]},
            allow=[target.url],
        )
        settings = settings_for(tmp_path, rb_dir, policy)
        alert = alert_for(target).model_copy(update={"labels": {"env": "prod"}})
        async with worker(dev_env.client, settings):
            handle = await start(dev_env.client, settings, alert)
            result = await asyncio.wait_for(handle.result(), 60)
            audit = await _audit(handle)
    finally:
        target.stop()

    decision = next(e for e in audit if e.kind == "policy_rule")
    assert result.outcome == outcome, result.reason
    assert "approval_requested" not in [e.kind for e in audit]
    if risk == "low":
        assert decision.data["rule"] == "green-zone" and decision.data["effect"] == "allow"
        assert len(target.applied_to("/admin/restart")) == 1
    else:
        assert decision.data["rule"] == "red-zone" and decision.data["effect"] == "deny"
        assert result.reason.startswith("refused by policy rule red-zone")
        assert target.applied_to("/admin/restart") == []


def _step_file(tmp: Path, **fields: Any) -> Path:
    body = {
        "step": {"id": "scale-up", "action": "kubernetes.scale", "risk": "medium"},
        "time": "2026-12-01T20:30:00+00:00",
    }
    body["step"] |= fields.pop("step", {})
    body |= fields
    path = tmp / "step.json"
    path.write_text(json.dumps(body))
    return path


def test_policy_test_prints_which_rule_fires_and_why(tmp_path: Path) -> None:
    out_of_hours = _step_file(
        tmp_path, step={"params": {"namespace": "payments", "name": "api", "replicas": 4}}
    )
    done = _remedium("policy", "test", str(ZONES), "--step", str(out_of_hours))
    assert done.returncode == 0, done.stderr
    last = done.stdout.splitlines()[-1]
    assert last.startswith(
        "policy rule payments-scale-out-of-hours (require_approval: 2 distinct approver(s)) "
        "fires for step scale-up: "
    )
    assert "(at tue 21:30 Europe/Paris)" in last

    in_hours = _step_file(
        tmp_path, step={"params": {"namespace": "payments"}}, time="2026-12-01T10:00:00+00:00"
    )
    as_json = _remedium("policy", "test", str(ZONES), "--step", str(in_hours), "--json")
    assert as_json.returncode == 0, as_json.stderr
    decided = json.loads(as_json.stdout)
    assert (decided["rule"], decided["effect"], decided["quorum"]) == ("yellow-zone", "require_approval", 1)
    assert [c["id"] for c in decided["checks"]][:2] == ["red-zone", "payments-scale-out-of-hours"]
    assert decided["checks"][1]["result"] == "false"

    failed = _step_file(
        tmp_path,
        step={"action": "http.request", "risk": "low"},
        facts={"error_rate": {"id": "error_rate", "kind": "prometheus", "ok": False, "error": "timeout"}},
    )
    unknown = json.loads(_remedium("policy", "test", str(ZONES), "--step", str(failed), "--json").stdout)
    assert unknown["rule"] == "customer-impact"
    assert "diagnostic error_rate failed: timeout" in unknown["reason"]


def test_policy_test_reports_a_bad_policy_at_its_line_and_a_bad_step_in_one_sentence(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text(
        "rules:\n"
        "  - id: a\n"
        "    when: step.risk ==\n"
        "    effect: deny\n"
        "  - id: a\n"
        "    effect: maybe\n"
        "    timezone: Mars/Base\n"
    )
    step = _step_file(tmp_path)
    done = _remedium("policy", "test", str(bad), "--step", str(step))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"{bad}:3:11: rules[0].when: condition syntax error: unexpected 'end of template'",
        f"{bad}:6:13: rules[1].effect.name: expected 'allow', 'deny' or 'require_approval', got 'maybe'",
        f"{bad}:7:15: rules[1].timezone: unknown time zone 'Mars/Base' "
        "(use an IANA name such as Europe/Paris)",
    ]
    (tmp_path / "broken.json").write_text("{not json")
    broken = _remedium("policy", "test", str(ZONES), "--step", str(tmp_path / "broken.json"))
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    assert broken.stderr.startswith("remedium: ") and len(broken.stderr.splitlines()) == 1
    usage = _remedium("policy", "test", str(ZONES))
    assert usage.returncode == 2

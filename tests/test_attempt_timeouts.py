"""A worker that dies mid-attempt costs seconds, not the incident; a failed fact is never a false one.

Issue 12: a diagnostic had only a schedule-to-close timeout, so an attempt on a worker that
died was never retried and its fact failed at the deadline; the decision then read
"condition `facts.health.ok and …` is false", as if the service were unhealthy.
"""

from __future__ import annotations

import ast
import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from remedium.models import (
    Alert,
    AuditEntry,
    DecideInput,
    Fact,
    IncidentResult,
    Policy,
    Runbook,
    VerifyRequest,
)
from remedium.names import diagnostic_activity
from remedium.runbook import engine
from remedium.runbook.templating import fact_ids
from tests.conftest import dev_address
from tests.support import TargetService, alert_for, restart_runbook, settings_for, start, write_config
from workflows.retries import DIAGNOSTIC_HEARTBEAT, diagnostic_heartbeat

BIN = Path(sys.executable).parent

TIMED_OUT = "timed out: no answer within its 0:00:15 timeout (last: activity Heartbeat timeout)"


def _alert() -> Alert:
    return Alert(
        source="manual",
        id="attempt-timeouts",
        title="web health check failing",
        service="web-frontend",
        severity="P2",
        annotations={"base_url": "http://127.0.0.1:9"},
    )


def _runbook(**decide: Any) -> Runbook:
    raw = restart_runbook(name="web-health-restart")
    raw["decide"].update(decide)
    return Runbook.model_validate(raw)


def _decide(runbook: Runbook, facts: dict[str, Fact]) -> str:
    decision = engine.decide(DecideInput(alert=_alert(), policy=Policy(), candidates=[runbook], facts=facts))
    assert decision.runbook is None
    return decision.reason


# --- which facts a condition reads ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "ids"),
    [
        ("facts.health.ok and facts.health.value.status != 200", ["health"]),
        ("facts['disk'].value > 90 or facts.health.ok", ["disk", "health"]),
        ("facts | length > 2", []),  # not by name: nothing to name
        ("alert.severity == 'P1'", []),
        ("[1 for facts in alert.labels] | length", []),  # facts as a loop variable, not the facts
        ("facts.health.ok and", []),  # does not parse: the syntax check says so elsewhere
    ],
)
def test_fact_ids_come_from_the_syntax_tree(condition: str, ids: list[str]) -> None:
    assert fact_ids(condition, condition=True) == ids


# --- the decision's reason --------------------------------------------------------------------------


def test_a_failed_fact_is_named_not_read_as_a_false_condition() -> None:
    failed = {"health": Fact(id="health", kind="http", ok=False, error=TIMED_OUT)}
    assert _decide(_runbook(), failed) == (
        f"no candidate runbook's conditions hold (web-health-restart: diagnostic health failed: {TIMED_OUT})"
    )


def test_a_condition_that_cannot_be_evaluated_names_the_failed_fact() -> None:
    """`facts.health.value.status` of a failed fact is undefined: the failure, not the template error."""
    runbook = _runbook(when=["facts.health.value.status != 200"])
    failed = {"health": Fact(id="health", kind="http", ok=False, error="connection refused")}
    assert _decide(runbook, failed) == (
        "no candidate runbook's conditions hold "
        "(web-health-restart: diagnostic health failed: connection refused)"
    )


def test_every_failed_fact_a_condition_reads_is_named_and_ok_ones_are_not() -> None:
    runbook = _runbook(when=["facts.health.ok and facts.disk.ok and facts.load.ok"])
    facts = {
        "health": Fact(id="health", kind="http", ok=False, error="503"),
        "disk": Fact(id="disk", kind="http", ok=True, value={"status": 200}),
        "load": Fact(id="load", kind="http", ok=False, error="refused by policy"),
    }
    assert _decide(runbook, facts) == (
        "no candidate runbook's conditions hold (web-health-restart: "
        "diagnostic health failed: 503; diagnostic load failed: refused by policy)"
    )


def test_a_false_condition_over_good_facts_still_says_false() -> None:
    healthy = {"health": Fact(id="health", kind="http", ok=True, value={"status": 200})}
    assert _decide(_runbook(), healthy) == (
        "no candidate runbook's conditions hold "
        "(web-health-restart: condition `facts.health.ok and facts.health.value.status != 200` is false)"
    )


def test_a_condition_that_holds_over_a_failed_fact_is_the_runbook_s_choice() -> None:
    runbook = _runbook(when=["not facts.health.ok"])
    failed = {"health": Fact(id="health", kind="http", ok=False, error="timeout")}
    decision = engine.decide(DecideInput(alert=_alert(), policy=Policy(), candidates=[runbook], facts=failed))
    assert decision.runbook == "web-health-restart"


def test_verification_names_the_failed_check() -> None:
    runbook = _runbook()
    facts = {"health_after": Fact(id="health_after", kind="http", ok=False, error="connection refused")}
    verdict = engine.judge(VerifyRequest(alert=_alert(), verify=runbook.verify, facts=facts, round=1))
    assert verdict.state == "not_resolved"
    assert verdict.detail == "not recovered yet: diagnostic health_after failed: connection refused"


def test_every_activity_the_workflows_schedule_has_an_attempt_timeout() -> None:
    """A schedule-to-close timeout alone never retries an attempt whose worker died."""
    calls = [
        (path.name, node.lineno, {kw.arg for kw in node.keywords})
        for path in sorted((Path(__file__).parent.parent / "workflows").glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("execute_activity", "start_activity", "execute_local_activity")
    ]
    assert len(calls) >= 10, calls  # the scan does find them
    missing = [
        (name, line) for name, line, kws in calls if not kws & {"start_to_close_timeout", "heartbeat_timeout"}
    ]
    assert missing == []


def test_a_diagnostic_heartbeat_is_never_longer_than_its_timeout() -> None:
    assert diagnostic_heartbeat(timedelta(seconds=30)) == DIAGNOSTIC_HEARTBEAT
    assert diagnostic_heartbeat(timedelta(seconds=2)) == timedelta(seconds=2)


# --- a real worker killed mid-diagnostic -----------------------------------------------------------


@pytest.fixture
def slow_target() -> Iterator[TargetService]:
    """Health answers after 3 s: long enough to kill the worker that asked, mid-attempt."""
    service = TargetService(health_delay_s=(3.0, 3.0)).start()
    yield service
    service.stop()


async def _diagnosing_worker(handle: WorkflowHandle[Any, Any], asked: threading.Event) -> int:
    """The pid of the worker whose attempt of the health diagnostic is waiting for its answer."""
    await asyncio.to_thread(asked.wait, 60)
    assert asked.is_set(), "the health diagnostic never reached the target"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for pending in (await handle.describe()).raw_description.pending_activities:
            if (
                pending.activity_type.name == diagnostic_activity("http")
                and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                and pending.last_worker_identity
            ):
                return int(pending.last_worker_identity.split("@", 1)[0])  # the SDK's "pid@host"
        await asyncio.sleep(0.05)
    raise AssertionError("no started health diagnostic")


async def test_worker_killed_mid_diagnostic_the_other_worker_answers(
    dev_env: WorkflowEnvironment, tmp_path: Path, slow_target: TargetService
) -> None:
    asked = threading.Event()

    def on_request(kind: str, prefix: str, client: tuple[str, int]) -> None:
        if kind == "health":
            asked.set()

    slow_target.on_request = on_request
    rb_dir, policy = write_config(
        tmp_path, [restart_runbook(approval_required=False)], required_for=[], allow=[slow_target.url]
    )
    settings = settings_for(tmp_path, rb_dir, policy)
    env = {
        **os.environ,
        "REMEDIUM_TEMPORAL_ADDRESS": dev_address(dev_env),
        "REMEDIUM_TASK_QUEUE": settings.task_queue,
        "REMEDIUM_RUNBOOKS_DIR": str(settings.runbooks_dir),
        "REMEDIUM_POLICY_FILE": str(settings.policy_file),
    }
    logs = [open(tmp_path / f"worker{i}.log", "w") for i in (1, 2)]  # closed below
    command = [str(BIN / "remedium"), "worker"]
    procs = [subprocess.Popen(command, env=env, stdout=log, stderr=log) for log in logs]
    workers = {proc.pid: proc for proc in procs}
    try:
        handle = await start(dev_env.client, settings, alert_for(slow_target))
        victim = await _diagnosing_worker(handle, asked)
        assert victim in workers, (victim, list(workers))
        workers[victim].send_signal(signal.SIGKILL)  # its health request is still waiting for the answer
        workers[victim].wait(10)
        result: IncidentResult = await asyncio.wait_for(
            dev_env.client.get_workflow_handle(handle.id, result_type=IncidentResult).result(), 120
        )
        audit = await handle.query("audit", result_type=list[AuditEntry])
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)
        for log in logs:
            log.close()
    logs_text = "".join((tmp_path / f"worker{i}.log").read_text() for i in (1, 2))
    assert result.outcome == "resolved", (result.reason, logs_text)
    health = [e for e in audit if e.kind == "diagnostic" and e.message.startswith("health (http)")]
    assert len(health) == 1 and health[0].data["ok"] is True, health
    assert health[0].data["value"]["status"] == 500  # the answer the live worker got, before the restart
    assert len(slow_target.applied_to("/restart")) == 1
    history = await handle.fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert max(attempts) >= 2  # the killed worker's attempt was retried, not waited out

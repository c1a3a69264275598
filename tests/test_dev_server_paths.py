"""Paths that need the real dev server: the `temporal` CLI (what the UI uses), our CLI, crash-resume."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from remedium.models import AuditEntry, IncidentResult
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


@pytest.fixture
def target() -> Iterator[TargetService]:
    service = TargetService().start()
    yield service
    service.stop()


def _env(env: WorkflowEnvironment, settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "REMEDIUM_TEMPORAL_ADDRESS": dev_address(env),
        "REMEDIUM_TASK_QUEUE": settings.task_queue,
        "REMEDIUM_RUNBOOKS_DIR": str(settings.runbooks_dir),
        "REMEDIUM_POLICY_FILE": str(settings.policy_file),
    }


async def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, list(args), capture_output=True, text=True, env=env, timeout=60, check=False
    )


async def test_approve_with_temporal_cli_signal(
    dev_env: WorkflowEnvironment, tmp_path: Path, target: TargetService
) -> None:
    """`temporal workflow signal` sends json/plain exactly like the UI's "Send a Signal" form."""
    rb_dir, policy = write_config(tmp_path, [restart_runbook()], allow=[target.url])
    settings = settings_for(tmp_path, rb_dir, policy)
    async with worker_for(dev_env.client, settings):
        handle = await start(dev_env.client, settings, alert_for(target))
        await wait_for_stage(handle, "awaiting_approval")
        cli = await _run(
            str(BIN / "temporal"), "workflow", "signal", "--address", dev_address(dev_env),
            "--workflow-id", handle.id, "--name", "approve",
            "--input", json.dumps({"step": "restart-pool", "by": "bob", "reason": "looks right"}),
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        result = await asyncio.wait_for(handle.result(), 60)
        audit = await handle.query("audit", result_type=list[AuditEntry])
    assert result.outcome == "resolved"
    approved = [a for a in audit if a.kind == "approved"]
    assert [(a.actor, a.message) for a in approved] == [
        ("bob", "step restart-pool approved by bob via signal, self-declared: looks right")
    ]
    assert len(target.applied_to("/restart")) == 1


async def test_remedium_cli_approve_show_and_list(
    dev_env: WorkflowEnvironment, tmp_path: Path, target: TargetService
) -> None:
    rb_dir, policy = write_config(tmp_path, [restart_runbook()], approvers=["alice"], allow=[target.url])
    settings = settings_for(tmp_path, rb_dir, policy)
    env = _env(dev_env, settings)
    async with worker_for(dev_env.client, settings):
        handle = await start(dev_env.client, settings, alert_for(target))
        await wait_for_stage(handle, "awaiting_approval")
        shown = await _run(str(BIN / "remedium"), "incident", "show", handle.id, env=env)
        assert shown.returncode == 0, shown.stderr
        assert "PENDING APPROVAL: step restart-pool" in shown.stdout
        assert f"remedium approve {handle.id} --step restart-pool --as <you>" in shown.stdout

        refused = await _run(str(BIN / "remedium"), "approve", handle.id, "--as", "mallory", env=env)
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            "remedium: approve refused: 'mallory' may not approve: the policy allows alice"
        )
        ok = await _run(
            str(BIN / "remedium"), "approve", handle.id, "--step", "restart-pool", "--as", "alice",
            "--reason", "on call", env=env,
        )  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip() == "step restart-pool approved by alice"
        result = await asyncio.wait_for(handle.result(), 60)
        assert result.outcome == "resolved"

        listed = await _run(str(BIN / "remedium"), "incident", "list", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        rows = {r["workflow_id"]: r for r in json.loads(listed.stdout)}
        assert rows[handle.id]["status"] == "COMPLETED"
        assert rows[handle.id]["runbook"] == "web-restart"
        assert rows[handle.id]["service"] == "web-frontend"

        missing = await _run(
            str(BIN / "remedium"), "approve", "incident-manual-nope", "--as", "alice", env=env
        )
        assert missing.returncode == 1
        assert missing.stderr.startswith("remedium: ")


async def test_usage_error_exits_2() -> None:
    bad = await _run(str(BIN / "remedium"), "approve", "some-id")
    assert bad.returncode == 2
    assert "--as" in bad.stderr


async def test_worker_killed_mid_action_resumes_exactly_once(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    target = TargetService(hold_first_restart_s=30).start()
    rb_dir, policy = write_config(
        tmp_path, [restart_runbook(approval_required=False)], required_for=[], allow=[target.url]
    )
    settings = settings_for(tmp_path, rb_dir, policy)
    env = _env(dev_env, settings)
    log1 = open(tmp_path / "worker1.log", "w")
    first = subprocess.Popen([str(BIN / "remedium"), "worker"], env=env, stdout=log1, stderr=log1)
    second: subprocess.Popen[bytes] | None = None
    try:
        handle = await start(dev_env.client, settings, alert_for(target))
        deadline = time.monotonic() + 60
        while not target.deliveries and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert target.deliveries, (tmp_path / "worker1.log").read_text()
        first.send_signal(signal.SIGKILL)  # the restart request is in flight
        first.wait(10)
        second = subprocess.Popen(
            [str(BIN / "remedium"), "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        result: IncidentResult = await asyncio.wait_for(handle.result(), 120)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)
        log1.close()
        target.stop()
    assert result.outcome == "resolved", result.reason
    restarts = [d for d in target.deliveries if d.path.endswith("/restart")]
    assert len(restarts) == 2  # the retry after the crash was really sent...
    assert {d.key for d in restarts} == {f"{handle.id}/restart-pool"}  # ...with the same key
    assert len(target.applied_to("/restart")) == 1  # ...and the service restarted once
    assert second is not None and second.returncode == 0  # SIGTERM stops a worker cleanly

"""The worker refuses to start unsafely: bad runbooks, bad policy, unregistered search attributes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.conftest import _binary, dev_address
from tests.support import TargetService, restart_runbook, write_config

REMEDIUM = str(Path(sys.executable).with_name("remedium"))


def _run(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, env={**os.environ, **env}, timeout=60, check=False, cwd=cwd
    )


async def test_worker_refuses_bad_runbook_and_names_the_file(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    rb_dir, policy = write_config(tmp_path, [restart_runbook()])
    bad = rb_dir / "broken.yaml"
    bad.write_text(
        (rb_dir / "web-restart.yaml").read_text().replace("name: web-restart", "name: other\n  colour: red")
    )
    done = await asyncio.to_thread(
        _run,
        [REMEDIUM, "worker"],
        {
            "REMEDIUM_TEMPORAL_ADDRESS": dev_address(dev_env),
            "REMEDIUM_RUNBOOKS_DIR": str(rb_dir),
            "REMEDIUM_POLICY_FILE": str(policy),
        },
    )
    assert done.returncode == 1
    assert "refusing to start: invalid runbooks" in done.stderr
    assert f"{bad}:5:3: unknown key 'colour'" in done.stderr


async def test_up_refuses_bad_policy_before_starting_anything(tmp_path: Path) -> None:
    rb_dir, policy = write_config(tmp_path, [restart_runbook()])
    policy.write_text("approval:\n  aprovers: [alice]\n")
    done = await asyncio.to_thread(
        _run,
        [REMEDIUM, "up", "--state-dir", str(tmp_path / "state"), "--temporal-port", "1", "--ui-port", "2"],
        {"REMEDIUM_RUNBOOKS_DIR": str(rb_dir), "REMEDIUM_POLICY_FILE": str(policy)},
    )
    assert done.returncode == 1
    assert f"{policy}:2:3: unknown key 'aprovers'" in done.stderr
    assert not (tmp_path / "state" / "temporal.db").exists()


async def test_worker_refuses_namespace_without_search_attributes(tmp_path: Path) -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"), data_converter=pydantic_data_converter
    )
    try:
        rb_dir, policy = write_config(tmp_path, [restart_runbook()])
        done = await asyncio.to_thread(
            _run,
            [REMEDIUM, "worker"],
            {
                "REMEDIUM_TEMPORAL_ADDRESS": dev_address(env),
                "REMEDIUM_RUNBOOKS_DIR": str(rb_dir),
                "REMEDIUM_POLICY_FILE": str(policy),
            },
        )
    finally:
        await env.shutdown()
    assert done.returncode == 1
    assert "IncidentService, IncidentSeverity, IncidentStage, RunbookName are not registered" in done.stderr
    assert "temporal operator search-attribute create" in done.stderr


def test_worker_reports_unreachable_temporal(tmp_path: Path) -> None:
    rb_dir, policy = write_config(tmp_path, [restart_runbook()])
    done = _run(
        [REMEDIUM, "worker"],
        {
            "REMEDIUM_TEMPORAL_ADDRESS": "127.0.0.1:1",
            "REMEDIUM_RUNBOOKS_DIR": str(rb_dir),
            "REMEDIUM_POLICY_FILE": str(policy),
        },
    )
    assert done.returncode == 1
    assert done.stderr.startswith("remedium: cannot reach Temporal at 127.0.0.1:1: connection refused (")
    assert len(done.stderr.strip().splitlines()) == 1 and "tonic" not in done.stderr


def test_runbook_test_shows_match_plan_and_dry_run(tmp_path: Path) -> None:
    target = TargetService().start()
    try:
        rb_dir, policy = write_config(tmp_path, [restart_runbook()])
        alert = tmp_path / "alert.json"
        alert.write_text(
            '{"source": "manual", "id": "x1", "title": "web down", "service": "web-frontend",'
            f' "annotations": {{"base_url": "{target.url}"}}}}'
        )
        facts = tmp_path / "facts.json"
        facts.write_text('{"health": {"kind": "http", "ok": true, "value": {"status": 503}}}')
        done = _run(
            [
                REMEDIUM,
                "runbook",
                "test",
                str(rb_dir / "web-restart.yaml"),
                "--alert",
                str(alert),
                "--facts",
                str(facts),
            ],
            {"REMEDIUM_POLICY_FILE": str(policy)},
        )
        without_facts = _run(
            [REMEDIUM, "runbook", "test", str(rb_dir / "web-restart.yaml"), "--alert", str(alert)],
            {"REMEDIUM_POLICY_FILE": str(policy)},
        )
    finally:
        target.stop()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "match: yes — runbook web-restart matches manual alert 'web down'"
    assert "1. restart-pool: http.request, risk medium, approval required (timeout 1800s)" in done.stdout
    assert f"dry run on {target.url}/admin/restart: would send POST {target.url}/admin/restart" in done.stdout
    assert target.deliveries == []  # touching nothing
    assert without_facts.returncode == 1
    assert "diagnose health (http): not run" in without_facts.stdout
    assert "could not be evaluated" in without_facts.stdout

"""Guardrails the workflow enforces before acting: cross-incident rate limits, freeze, policy."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from remedium.guards import approval_forced, blast_radius_refusal, limiter_id, rate_limit_for
from remedium.models import Alert, DryRun, IncidentResult, Policy, RenderedStep, TargetScope
from remedium.selectors import selector_matches
from tests.conftest import dev_address
from tests.support import (
    TargetService,
    api_runbook,
    http_allow,
    settings_for,
    start,
    wait_for_stage,
    worker_for,
)
from workflows.limiter import TargetLimiterWorkflow

REMEDIUM = str(Path(sys.executable).with_name("remedium"))


def _config(tmp: Path, target: TargetService, policy: dict[str, Any]) -> tuple[Path, Path]:
    rb_dir = tmp / "runbooks"
    rb_dir.mkdir(exist_ok=True)
    (rb_dir / "api-bump.yaml").write_text(yaml.safe_dump(api_runbook(target)))
    path = tmp / "policy.yaml"
    path.write_text(
        yaml.safe_dump(
            {"approval": {"approvers": ["alice"], "required_for": []}, **http_allow(target.url), **policy}
        )
    )
    return rb_dir, path


def _alert(incident: str) -> Alert:
    return Alert(source="pagerduty", id=incident, title="API errors", service="API Service", severity="P1")


async def test_ten_concurrent_incidents_on_one_target_act_exactly_three_times(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    target = TargetService().start()
    rb_dir, policy = _config(
        tmp_path,
        target,
        {"rate_limits": [{"action": "http.request", "target": "*", "max": 3, "per": "30m"}]},
    )
    settings = settings_for(tmp_path, rb_dir, policy)
    prefix = uuid.uuid4().hex[:6]
    try:
        async with worker_for(dev_env.client, settings):
            handles = await asyncio.gather(
                *(start(dev_env.client, settings, _alert(f"{prefix}-{n}")) for n in range(10))
            )
            results: list[IncidentResult] = await asyncio.gather(
                *(asyncio.wait_for(h.result(), 90) for h in handles)
            )
            grants = await dev_env.client.get_workflow_handle_for(
                TargetLimiterWorkflow.run, limiter_id("http.request", f"{target.url}/admin/restart")
            ).query(TargetLimiterWorkflow.grants)
    finally:
        target.stop()
    assert len(target.applied) == 3, "the target was acted on exactly 3 times"
    outcomes = sorted(r.outcome for r in results)
    assert outcomes == ["escalated"] * 7 + ["resolved"] * 3
    refused = [r for r in results if r.outcome == "escalated"]
    for result in refused:
        assert "rate limit: http.request on" in result.reason
        assert "already ran 3 time(s) in the last 0:30:00 (policy allows 3)" in result.reason
        assert result.actions == []
    assert sorted(g.key for g in grants) == sorted(
        f"{h.id}/flush-cache" for h, r in zip(handles, results, strict=True) if r.outcome == "resolved"
    )


async def test_rate_limit_window_slides_in_durable_time(ts_env: WorkflowEnvironment, tmp_path: Path) -> None:
    target = TargetService().start()
    rb_dir, policy = _config(
        tmp_path,
        target,
        {"rate_limits": [{"action": "http.*", "target": "*/admin/restart", "max": 1, "per": "30m"}]},
    )
    settings = settings_for(tmp_path, rb_dir, policy)
    prefix = uuid.uuid4().hex[:6]
    try:
        async with worker_for(ts_env.client, settings):
            # In real time: while the second incident waits between tasks, the test server
            # would otherwise skip ahead to the limiter's 30-minute expiry timer and free the slot.
            with ts_env.auto_time_skipping_disabled():
                first = await (await start(ts_env.client, settings, _alert(f"{prefix}-a"))).result()
                second = await (await start(ts_env.client, settings, _alert(f"{prefix}-b"))).result()
            await ts_env.sleep(31 * 60)
            third = await (await start(ts_env.client, settings, _alert(f"{prefix}-c"))).result()
    finally:
        target.stop()
    assert (first.outcome, second.outcome, third.outcome) == ("resolved", "escalated", "resolved")
    assert re.search(r"next allowed at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", second.reason), second.reason
    assert len(target.applied) == 2


def _freeze_env(settings_queue: str, env: WorkflowEnvironment) -> dict[str, str]:
    return {
        **os.environ,
        "REMEDIUM_TEMPORAL_ADDRESS": dev_address(env),
        "REMEDIUM_TASK_QUEUE": settings_queue,
    }


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([REMEDIUM, *args], capture_output=True, text=True, env=env, timeout=60, check=False)


async def test_freeze_holds_actions_until_unfreeze(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    target = TargetService().start()
    rb_dir, policy = _config(
        tmp_path, target, {"freeze": {"on_frozen": "wait", "poll": "1s", "max_wait": "10m"}}
    )
    settings = settings_for(tmp_path, rb_dir, policy)
    env = _freeze_env(settings.task_queue, dev_env)
    try:
        async with worker_for(dev_env.client, settings):
            frozen = await asyncio.to_thread(
                _cli, "freeze", "--reason", "payments DB migration", "--as", "carol", env=env
            )
            assert frozen.returncode == 0, frozen.stderr
            handle = await start(dev_env.client, settings, _alert(uuid.uuid4().hex[:8]))
            status = await wait_for_stage(handle, "frozen", timeout=30)
            await asyncio.sleep(2)  # several freeze polls pass: still nothing done
            assert target.applied == []
            again = await asyncio.to_thread(_cli, "freeze", "--reason", "other", "--as", "dave", env=env)
            thawed = await asyncio.to_thread(_cli, "unfreeze", "--as", "carol", env=env)
            assert thawed.returncode == 0, thawed.stderr
            result = await asyncio.wait_for(handle.result(), 60)
            audit = await handle.query("audit")
            nothing = await asyncio.to_thread(_cli, "unfreeze", env=env)
    finally:
        target.stop()
    assert "frozen since" in frozen.stdout and "carol: payments DB migration" in frozen.stdout
    assert "already frozen" in again.stdout and "carol: payments DB migration" in again.stdout
    assert "unfrozen by carol" in thawed.stdout
    assert nothing.stdout.strip() == "not frozen; nothing to do"
    assert status.pending_approval is None
    assert result.outcome == "resolved" and len(target.applied) == 1
    kinds = [entry["kind"] for entry in audit]
    assert kinds.index("frozen") < kinds.index("unfrozen") < kinds.index("action_started")
    frozen_entry = next(e for e in audit if e["kind"] == "frozen")
    assert "global freeze by carol: payments DB migration" in frozen_entry["message"]


async def test_freeze_with_escalate_policy_escalates_without_acting(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    target = TargetService().start()
    rb_dir, policy = _config(tmp_path, target, {"freeze": {"on_frozen": "escalate"}})
    settings = settings_for(tmp_path, rb_dir, policy)
    env = _freeze_env(settings.task_queue, dev_env)
    try:
        async with worker_for(dev_env.client, settings):
            try:
                frozen = await asyncio.to_thread(_cli, "freeze", "--reason", "incident review", env=env)
                assert frozen.returncode == 0, frozen.stderr
                result = await asyncio.wait_for(
                    (await start(dev_env.client, settings, _alert(uuid.uuid4().hex[:8]))).result(), 60
                )
            finally:
                await asyncio.to_thread(_cli, "unfreeze", env=env)  # while the worker still runs
    finally:
        target.stop()
    assert result.outcome == "escalated"
    assert "step flush-cache not started: global freeze by" in result.reason
    assert "incident review" in result.reason
    assert target.applied == []


def _step(action: str = "kubernetes.scale") -> RenderedStep:
    return RenderedStep(id="scale-up", action=action, params={}, risk="low", state_changing=True)


def _dry(
    namespace: str, labels: dict[str, str], before: int | None = None, after: int | None = None
) -> DryRun:
    return DryRun(
        action="kubernetes.scale",
        step_id="scale-up",
        target=f"deployment {namespace}/api",
        summary="would scale",
        scope=TargetScope(
            kind="Deployment",
            namespace=namespace,
            name="api",
            labels=labels,
            replicas_before=before,
            replicas_after=after,
        ),
    )


def test_blast_radius_refusals_say_why() -> None:
    policy = Policy.model_validate(
        {
            "blast_radius": {
                "namespaces": ["payments", "etl-*"],
                "label_selector": "tier!=database,remedium.io/managed in (true)",
                "max_replicas_delta": 3,
                "always_approve": ["kubernetes.rollback", "jobs.*"],
            }
        }
    )
    ok = {"remedium.io/managed": "true", "app": "api"}
    assert blast_radius_refusal(policy, _step(), _dry("payments", ok, 2, 5)) is None
    assert blast_radius_refusal(policy, _step(), _dry("etl-nightly", ok)) is None
    assert "namespace 'kube-system', outside the policy's blast radius (allowed: payments, etl-*)" in str(
        blast_radius_refusal(policy, _step(), _dry("kube-system", ok))
    )
    assert "do not match the policy's selector" in str(
        blast_radius_refusal(policy, _step(), _dry("payments", {**ok, "tier": "database"}))
    )
    assert "from 2 to 6 replicas, more than the policy's max_replicas_delta of 3" in str(
        blast_radius_refusal(policy, _step(), _dry("payments", ok, 2, 6))
    )
    assert approval_forced(policy, _step("jobs.rerun")) == "policy always asks before jobs.rerun"
    assert approval_forced(policy, _step("kubernetes.scale")) is None
    everything = Policy.model_validate({"autonomy": "approve_all"})
    assert approval_forced(everything, _step()) == "policy autonomy is approve_all"


def test_rate_limit_lookup_takes_the_strictest_match_and_selectors_follow_kubernetes() -> None:
    policy = Policy.model_validate(
        {
            "rate_limits": [
                {"action": "kubernetes.*", "target": "*", "max": 10, "per": "1h"},
                {"action": "kubernetes.rollout_restart", "target": "payments/*", "max": 3, "per": "30m"},
            ]
        }
    )
    strict = rate_limit_for(policy, "kubernetes.rollout_restart", "payments/api")
    assert strict is not None and strict.max == 3
    loose = rate_limit_for(policy, "kubernetes.rollout_restart", "search/api")
    assert loose is not None and loose.max == 10
    assert rate_limit_for(policy, "http.request", "payments/api") is None
    assert selector_matches("app=api,env in (prod,stage),!legacy", {"app": "api", "env": "stage"})
    assert not selector_matches(
        "app=api,env in (prod,stage),!legacy", {"app": "api", "env": "stage", "legacy": ""}
    )
    assert not selector_matches("env notin (prod)", {"env": "prod"})
    assert selector_matches("env notin (prod)", {})
    with pytest.raises(ValueError, match="invalid label selector requirement '==x'"):
        Policy.model_validate({"blast_radius": {"label_selector": "a=b,==x"}})


async def test_limiter_is_idempotent_per_step_key(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    """A retried `guard.acquire_slot` (same incident and step) never takes a second slot."""
    from temporalio.testing import ActivityEnvironment

    from activities.guards import GuardActivities
    from remedium.models import SlotRequest

    client: Client = dev_env.client
    queue = f"tq-{uuid.uuid4().hex[:8]}"
    service = TargetService().start()
    rb_dir, policy = _config(tmp_path, service, {})
    service.stop()
    settings = settings_for(tmp_path, rb_dir, policy, task_queue=queue)
    guards = GuardActivities(client, queue)
    target = f"payments/api-{uuid.uuid4().hex[:6]}"
    request = SlotRequest(
        key="incident-x/restart", action="kubernetes.rollout_restart", target=target, max=1, per_s=1800
    )
    other = request.model_copy(update={"key": "incident-y/restart"})
    async with worker_for(client, settings):
        activity_env = ActivityEnvironment()
        first = await activity_env.run(guards.acquire_slot, request)
        retried = await activity_env.run(guards.acquire_slot, request)
        denied = await activity_env.run(guards.acquire_slot, other)
    assert first.granted and retried.granted and retried.used == 1
    assert not denied.granted and denied.retry_after is not None

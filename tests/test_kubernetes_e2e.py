"""Kubernetes end to end: the shipped crashloop-restart runbook on a real worker and the sandbox cluster.

Everything crosses real boundaries: Temporal (dev server), the worker with its kubernetes
client built from a kubeconfig, and the sandbox API server. Assertions read the cluster
through the real client and the requests the API server received.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from remedium.demo.sandbox.kubernetes import KubernetesSandbox
from remedium.demo.scenarios import ScenarioWorld
from remedium.demo.scenarios import crashloop_restart as crashloop
from remedium.models import Alert, AuditEntry, IncidentResult
from remedium.settings import Settings
from tests.support import start, wait_for_stage, worker_for
from tests.test_guardrails import _cli, _freeze_env

REPO = Path(__file__).resolve().parent.parent
DEPLOYMENT_PATH = "/apis/apps/v1/namespaces/payments/deployments/api$"


@pytest.fixture(autouse=True)
async def fresh_limiters(dev_env: WorkflowEnvironment) -> None:
    """Each test starts with no rate-limit history on payments/api (the dev server is per session)."""
    query = 'WorkflowType = "TargetLimiter" AND ExecutionStatus = "Running"'
    async for wf in dev_env.client.list_workflows(query):
        await dev_env.client.get_workflow_handle(wf.id, run_id=wf.run_id).terminate("test isolation")


def _runbook(**verify: Any) -> dict[str, Any]:
    runbook: dict[str, Any] = yaml.safe_load((REPO / "runbooks" / "crashloop-restart.yaml").read_text())
    runbook["verify"].update(verify)
    return runbook


def _setup(
    tmp: Path,
    kube: KubernetesSandbox,
    policy: dict[str, Any] | None = None,
    runbook: dict[str, Any] | None = None,
) -> Settings:
    rb_dir = tmp / "runbooks"
    rb_dir.mkdir(exist_ok=True)
    (rb_dir / "crashloop-restart.yaml").write_text(yaml.safe_dump(runbook or _runbook()))
    values: dict[str, Any] = {
        "apiVersion": "remedium/v1",
        "kind": "Policy",
        "approval": {"approvers": ["alice"], "required_for": ["high"], "timeout": "30m"},
        "blast_radius": {"namespaces": ["payments"], "max_replicas_delta": 3},
        "rate_limits": [
            {"action": "kubernetes.rollout_restart", "target": "payments/*", "max": 3, "per": "30m"}
        ],
    }
    values.update(policy or {})
    path = tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(values))
    return Settings(
        runbooks_dir=rb_dir,
        policy_file=path,
        task_queue=f"tq-{uuid.uuid4().hex[:8]}",
        kubeconfig=kube.write_kubeconfig(tmp / "kubeconfig"),
    )


def _seed(kube: KubernetesSandbox, variant: str = "recovering") -> None:
    crashloop.seed(
        ScenarioWorld(kube=kube, loki_url="http://127.0.0.1:9", set_metric=lambda *a: None), variant
    )


def _alert() -> Alert:
    return crashloop.alert(f"PK8S{uuid.uuid4().hex[:8].upper()}")


def restarts(kube: KubernetesSandbox) -> list[Any]:
    """The rollout restarts the API server applied: kubectl's strategic-merge patch, not dry runs."""
    return [
        r
        for r in kube.requests_to("PATCH", DEPLOYMENT_PATH)
        if "dryRun" not in r.query
        and "strategic-merge" in r.content_type
        and "kubectl.kubernetes.io/restartedAt" in json.dumps(r.body)
        and r.status < 300
    ]


def writes(kube: KubernetesSandbox) -> list[Any]:
    return [
        r
        for r in kube.requests
        if r.method in ("POST", "PUT", "PATCH", "DELETE") and "dryRun" not in r.query and r.status < 300
    ]


async def _run(
    env: WorkflowEnvironment, settings: Settings, alert: Alert
) -> tuple[IncidentResult, list[AuditEntry]]:
    async with worker_for(env.client, settings):
        handle = await start(env.client, settings, alert)
        result: IncidentResult = await asyncio.wait_for(handle.result(), 240)
        audit = await handle.query("audit", result_type=list[AuditEntry])
    return result, audit


# ------------------------------------------------------------------ the scenario


@pytest.mark.timeout(300)
async def test_crashloop_recovers_after_one_restart(
    dev_env: WorkflowEnvironment,
    tmp_path: Path,
    kube_sandbox: KubernetesSandbox,
    kube_apps: kubernetes.client.AppsV1Api,
) -> None:
    _seed(kube_sandbox, "recovering")
    settings = _setup(tmp_path, kube_sandbox)
    result, audit = await _run(dev_env, settings, _alert())

    assert result.outcome == "resolved", result.reason
    assert len(restarts(kube_sandbox)) == 1
    d = kube_apps.read_namespaced_deployment("api", "payments").to_dict()
    annotations = d["spec"]["template"]["metadata"]["annotations"] or {}
    assert "kubectl.kubernetes.io/restartedAt" in annotations  # exactly where kubectl puts it
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert d["status"]["ready_replicas"] == 2
    kinds = [e.kind for e in audit]
    assert kinds.index("dry_run") < kinds.index("action_started") < kinds.index("verify")
    assert not any(e.kind == "rollback_started" for e in audit)


@pytest.mark.timeout(300)
async def test_worse_revision_is_rolled_back_at_once_and_escalated(
    dev_env: WorkflowEnvironment,
    tmp_path: Path,
    kube_sandbox: KubernetesSandbox,
    kube_apps: kubernetes.client.AppsV1Api,
) -> None:
    _seed(kube_sandbox, "worsening")
    before = kube_apps.read_namespaced_deployment("api", "payments").spec.template.to_dict()
    settings = _setup(tmp_path, kube_sandbox)
    result, audit = await _run(dev_env, settings, _alert())

    assert result.outcome == "escalated"
    assert result.reason.startswith(
        "verification failed, the incident got worse: `facts.pods_after.ok and facts.pods_after.value."
    ), result.reason
    assert result.reason.endswith("all changes were rolled back")
    assert len(restarts(kube_sandbox)) == 1
    verify_rounds = [e for e in audit if e.kind == "verify"]
    assert verify_rounds[-1].data["state"] == "worse"
    assert len(verify_rounds) < 5, "worse_if acts at once, long before `within`"
    assert any(e.kind == "rolled_back" for e in audit)
    assert "  - rolled back: restart: rolled deployment payments/api back to revision 1" in (
        result.report.markdown
    )
    after = kube_apps.read_namespaced_deployment("api", "payments").to_dict()
    assert after["spec"]["template"] == before, "the pod template is the one before the restart"
    assert after["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"  # undo = new revision


# ---------------------------------------------------------------- guardrails


@pytest.mark.timeout(400)
async def test_ten_incidents_on_one_deployment_restart_it_exactly_three_times(
    dev_env: WorkflowEnvironment, tmp_path: Path, kube_sandbox: KubernetesSandbox
) -> None:
    kube_sandbox.set_pod_behaviour("payments", "api", "crashloop")  # every revision: restarts do not help
    kube_sandbox.apply(crashloop.deployment_manifest())
    kube_sandbox.wait_until(lambda: bool(kube_sandbox.list_objects("v1", "Pod", "payments")), timeout=30)
    settings = _setup(tmp_path, kube_sandbox, runbook=_runbook(every="1s", within="4s", initial_delay="0s"))
    async with worker_for(dev_env.client, settings):
        handles: list[WorkflowHandle[Any, IncidentResult]] = [
            await start(dev_env.client, settings, _alert()) for _ in range(10)
        ]
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 300)

    assert len(restarts(kube_sandbox)) == 3
    limited = [r for r in results if "rate limit" in r.reason]
    assert len(limited) == 7, [r.reason for r in results]
    assert all(r.outcome == "escalated" for r in results)
    assert all("kubernetes.rollout_restart" in r.reason and "payments/api" in r.reason for r in limited)


@pytest.mark.timeout(300)
async def test_outside_the_blast_radius_nothing_is_touched(
    dev_env: WorkflowEnvironment, tmp_path: Path, kube_sandbox: KubernetesSandbox
) -> None:
    _seed(kube_sandbox)
    settings = _setup(tmp_path, kube_sandbox, {"blast_radius": {"namespaces": ["web", "etl"]}})
    result, audit = await _run(dev_env, settings, _alert())

    assert result.outcome == "escalated"
    assert "payments" in result.reason and "blast radius" in result.reason
    refused = [e for e in audit if e.kind == "guard_refused"]
    assert refused and "namespace 'payments'" in refused[0].message
    assert not writes(kube_sandbox), "only dry runs reached the API server"
    assert kube_sandbox.requests_to("PATCH", DEPLOYMENT_PATH), "the dry run itself was asked of the server"


@pytest.mark.timeout(300)
async def test_frozen_with_escalate_policy_never_patches(
    dev_env: WorkflowEnvironment, tmp_path: Path, kube_sandbox: KubernetesSandbox
) -> None:
    _seed(kube_sandbox)
    settings = _setup(tmp_path, kube_sandbox, {"freeze": {"on_frozen": "escalate"}})
    env = _freeze_env(settings.task_queue, dev_env)
    async with worker_for(dev_env.client, settings):
        try:
            frozen = await asyncio.to_thread(_cli, "freeze", "--reason", "payments failover drill", env=env)
            assert frozen.returncode == 0, frozen.stderr
            handle = await start(dev_env.client, settings, _alert())
            result = await asyncio.wait_for(handle.result(), 120)
        finally:
            await asyncio.to_thread(_cli, "unfreeze", env=env)
    assert result.outcome == "escalated"
    assert "global freeze" in result.reason and "payments failover drill" in result.reason
    assert not writes(kube_sandbox)


# ----------------------------------------------------------------- API errors


@pytest.mark.timeout(300)
async def test_target_gone_escalates_with_the_api_message(
    dev_env: WorkflowEnvironment,
    tmp_path: Path,
    kube_sandbox: KubernetesSandbox,
    kube_apps: kubernetes.client.AppsV1Api,
) -> None:
    _seed(kube_sandbox)
    settings = _setup(
        tmp_path, kube_sandbox, {"approval": {"approvers": ["alice"], "required_for": ["medium"]}}
    )
    async with worker_for(dev_env.client, settings):
        handle = await start(dev_env.client, settings, _alert())
        await wait_for_stage(handle, "awaiting_approval", timeout=60)
        kube_apps.delete_namespaced_deployment("api", "payments")
        await handle.signal("approve", {"step": "restart", "by": "alice"})
        result = await asyncio.wait_for(handle.result(), 120)
    assert result.outcome == "escalated"
    assert 'deployments.apps "api" not found' in result.reason
    assert len(kube_sandbox.requests_to("GET", DEPLOYMENT_PATH)) < 20, "a 404 is not retried"


@pytest.mark.timeout(300)
async def test_forbidden_escalates_with_the_api_message(
    dev_env: WorkflowEnvironment, tmp_path: Path, kube_sandbox: KubernetesSandbox
) -> None:
    _seed(kube_sandbox)
    kube_sandbox.forbid("patch", "deployments", "payments")
    settings = _setup(tmp_path, kube_sandbox)
    result, _ = await _run(dev_env, settings, _alert())
    assert result.outcome == "escalated"
    assert "forbidden" in result.reason and 'cannot patch resource "deployments"' in result.reason
    assert len(kube_sandbox.requests_to("PATCH", DEPLOYMENT_PATH)) == 1, "a 403 is not retried"
    assert not writes(kube_sandbox)


@pytest.mark.timeout(300)
async def test_conflicts_and_server_errors_are_retried_then_succeed(
    dev_env: WorkflowEnvironment, tmp_path: Path, kube_sandbox: KubernetesSandbox
) -> None:
    _seed(kube_sandbox)
    kube_sandbox.fail_next("PATCH", DEPLOYMENT_PATH, 409, count=1, message="the object has been modified")
    kube_sandbox.fail_next("PATCH", DEPLOYMENT_PATH, 503, count=1)
    settings = _setup(tmp_path, kube_sandbox)
    result, _ = await _run(dev_env, settings, _alert())
    assert result.outcome == "resolved", result.reason
    assert len(restarts(kube_sandbox)) == 1
    failed = [r for r in kube_sandbox.requests_to("PATCH", DEPLOYMENT_PATH) if r.status >= 400]
    assert sorted(r.status for r in failed) == [409, 503]


@pytest.mark.timeout(400)
async def test_api_server_down_for_thirty_seconds_delays_but_loses_nothing(
    dev_env: WorkflowEnvironment, tmp_path: Path, kube_sandbox: KubernetesSandbox
) -> None:
    _seed(kube_sandbox)
    settings = _setup(
        tmp_path, kube_sandbox, {"approval": {"approvers": ["alice"], "required_for": ["medium"]}}
    )
    async with worker_for(dev_env.client, settings):
        handle = await start(dev_env.client, settings, _alert())
        await wait_for_stage(handle, "awaiting_approval", timeout=60)
        kube_sandbox.take_down()
        await handle.signal("approve", {"step": "restart", "by": "alice"})
        await asyncio.sleep(30)
        status = await handle.query("status")
        kube_sandbox.bring_up()
        result = await asyncio.wait_for(handle.result(), 240)
    assert status["stage"] == "acting", "still trying while the API server is away"
    assert result.outcome == "resolved", result.reason
    assert len(restarts(kube_sandbox)) == 1

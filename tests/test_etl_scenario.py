"""The seeds' ETL incident end to end: real Prometheus, the Loki and Kubernetes sandboxes, a real worker.

The shipped `etl-source-timeout` runbook must find the root cause (replica-2 timed out and
lags 2.3 h), check replica-1 before acting, switch the job's source, re-run it, verify it
completes, and leave a follow-up about replica-2.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import kubernetes.client
import pytest
from temporalio.testing import WorkflowEnvironment

from remedium.demo.sandbox.kubernetes import KubernetesSandbox
from remedium.demo.sandbox.loki import LokiSandbox
from remedium.demo.sandboxes import DEMO_POLICY
from remedium.demo.scenarios import ScenarioWorld
from remedium.demo.scenarios import etl_source_timeout as etl
from remedium.models import AuditEntry, IncidentResult
from remedium.settings import Settings
from tests.plugins.telemetry import RealPrometheus
from tests.support import start, worker_for

REPO = Path(__file__).resolve().parent.parent


def _seed(
    variant: str, kube: KubernetesSandbox, loki: LokiSandbox, prometheus: RealPrometheus, tmp: Path
) -> Settings:
    etl.seed(ScenarioWorld(kube=kube, loki_url=loki.url, set_metric=prometheus.exporter.set), variant)
    for name, labels, value in etl.metric_samples(variant):
        prometheus.set_and_wait(name, labels, value)
    policy = tmp / "policy.yaml"
    policy.write_text(DEMO_POLICY)
    return Settings(
        runbooks_dir=REPO / "runbooks",
        policy_file=policy,
        task_queue=f"tq-{uuid.uuid4().hex[:8]}",
        prometheus_url=prometheus.url,
        loki_url=loki.url,
        kubeconfig=kube.write_kubeconfig(tmp / "kubeconfig"),
    )


def _kinds(audit: list[AuditEntry]) -> list[str]:
    return [e.kind for e in audit]


@pytest.mark.timeout(180)
async def test_etl_incident_follows_the_seeds_timeline(
    ts_env: WorkflowEnvironment,
    tmp_path: Path,
    kube_sandbox: KubernetesSandbox,
    kube_core: kubernetes.client.CoreV1Api,
    kube_batch: kubernetes.client.BatchV1Api,
    loki: LokiSandbox,
    prometheus: RealPrometheus,
) -> None:
    settings = _seed("default", kube_sandbox, loki, prometheus, tmp_path)
    alert = etl.alert(f"PETL{uuid.uuid4().hex[:6].upper()}")
    async with worker_for(ts_env.client, settings):
        handle = await start(ts_env.client, settings, alert)
        result: IncidentResult = await handle.result()
        audit = await handle.query("audit", result_type=list[AuditEntry])

    assert result.outcome == "resolved", result.reason
    assert result.runbook == "etl-source-timeout"

    # Diagnose: the facts of the seeds, each with the query that produced it.
    diagnostics = {e.message.split(" ")[0]: e for e in audit if e.kind == "diagnostic"}
    logs = diagnostics["job_logs"]
    assert logs.data["ok"] and 'job="daily-revenue-aggregation"' in logs.data["query"]
    assert logs.data["value"]["extract"]["timeout"]["last"] == {"replica": "replica-2"}
    lag = diagnostics["replica_lag"].data
    assert lag["value"]["by"] == {"replica-1": 240.0, "replica-2": 2.3 * 3600}
    assert lag["query"] == "PromQL: pg_replication_lag_seconds"
    assert "by={replica-1: 240, replica-2: 8280}" in diagnostics["replica_lag"].message  # readable line
    fallback = diagnostics["fallback"].data
    assert fallback["ok"] and fallback["value"]["breached"] is False  # replica-1 healthy
    assert diagnostics["job"].data["value"]["state"] == "failed"

    # Decide, then act: replica-1 was checked (diagnose) before the first dry run and action.
    kinds = _kinds(audit)
    assert kinds.index("decision") < kinds.index("dry_run")
    assert max(
        i for i, e in enumerate(audit) if e.kind == "diagnostic" and "fallback" in e.message
    ) < kinds.index("dry_run")
    decision = next(e for e in audit if e.kind == "decision")
    assert "etl-source-timeout chosen" in decision.message
    dry = next(e for e in audit if e.kind == "dry_run")
    assert "replica-1" in dry.data["diff"] and "replica-2" in dry.data["diff"]

    # What really happened in the cluster.
    cm = kube_core.read_namespaced_config_map(etl.CONFIGMAP, etl.NAMESPACE).to_dict()
    assert cm["data"]["SOURCE_REPLICA"] == "replica-1"
    jobs = [j.to_dict() for j in kube_batch.list_namespaced_job(etl.NAMESPACE).items]
    reruns = [j for j in jobs if j["metadata"]["name"].startswith(f"{etl.JOB}-rerun-")]
    assert len(reruns) == 1
    assert reruns[0]["status"]["succeeded"] == 1

    # Verify saw the re-run succeed; the report has the follow-up about replica-2.
    assert any(e.kind == "verify" and e.data["state"] == "resolved" for e in audit)
    assert "source switched to replica-1" in result.report.summary
    assert any("replica-2 replication lag is 2.3 h" in f for f in result.report.follow_ups)


@pytest.mark.timeout(180)
async def test_no_healthy_replica_means_no_action_and_escalation(
    ts_env: WorkflowEnvironment,
    tmp_path: Path,
    kube_sandbox: KubernetesSandbox,
    kube_core: kubernetes.client.CoreV1Api,
    loki: LokiSandbox,
    prometheus: RealPrometheus,
) -> None:
    settings = _seed("both-lagging", kube_sandbox, loki, prometheus, tmp_path)
    alert = etl.alert(f"PETL{uuid.uuid4().hex[:6].upper()}")
    async with worker_for(ts_env.client, settings):
        handle = await start(ts_env.client, settings, alert)
        result: IncidentResult = await handle.result()

    assert result.outcome == "escalated"
    assert "facts.fallback" in result.reason, result.reason
    assert result.actions == []
    cm = kube_core.read_namespaced_config_map(etl.CONFIGMAP, etl.NAMESPACE).to_dict()
    assert cm["data"]["SOURCE_REPLICA"] == "replica-2"
    assert not kube_sandbox.requests_to("PATCH", "configmaps")

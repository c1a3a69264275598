"""The seeds' failed ETL job: source replica-2 lags 2.3 h and times out; replica-1 is healthy.

The world: in namespace `etl`, the Job `daily-revenue-aggregation` has failed, its
ConfigMap points at replica-2, Loki holds the job's logs with the connection timeout, and
Prometheus reports each replica's replication lag. The runbook switches the source to
replica-1, re-runs the job and verifies it completes; replica-2's lag is a follow-up.

Variants: `default` (as above: resolved), `both-lagging` (replica-1 lags too: no safe
source, so the runbook does not apply and the incident escalates without acting).
"""

from __future__ import annotations

import json
import time
import urllib.request

from remedium.demo.sandbox.kubernetes import configmap, job
from remedium.demo.scenarios import ScenarioWorld
from remedium.models import Alert

NAME = "etl-source-timeout"
RUNBOOK = "etl-source-timeout"
EXPECTED_OUTCOME = "resolved"
EXPECTED_OUTCOMES = {"default": "resolved", "both-lagging": "escalated"}

NAMESPACE = "etl"
JOB = "daily-revenue-aggregation"
CONFIGMAP = "daily-revenue-aggregation-config"
LAG_METRIC = "pg_replication_lag_seconds"
REPLICA_LAG_S = {"replica-1": 240.0, "replica-2": 2.3 * 3600}
SOURCE = {"SOURCE_REPLICA": "replica-2", "SOURCE_DB_HOST": "replica-2.db.etl.svc:5432"}

LOG_LINES = (
    "Starting daily_revenue_aggregation for 2026-11-22",
    "Connecting to source DB replica-2 (replica-2.db.etl.svc:5432)",
    "Error: connection timeout to source DB replica-2 after 30s",
    "Retrying connection to source DB replica-2 (attempt 2/2)",
    "Error: connection timeout to source DB replica-2 after 30s",
    "daily_revenue_aggregation failed (exit code 1)",
)


def alert(incident_id: str) -> Alert:
    """What the PagerDuty ingress makes of the seeds' page."""
    return Alert(
        source="pagerduty",
        id=incident_id,
        title="ETL job 'daily_revenue_aggregation' failed (exit code 1)",
        service="etl-pipeline",
        severity="P2",
        labels={"urgency": "high"},
    )


def metric_samples(variant: str = "default") -> list[tuple[str, dict[str, str], float]]:
    lags = dict(REPLICA_LAG_S)
    if variant == "both-lagging":
        lags["replica-1"] = 1.1 * 3600
    return [(LAG_METRIC, {"replica": replica, "cluster": "orders-db"}, lag) for replica, lag in lags.items()]


def push_logs(loki_url: str, lines: tuple[str, ...] = LOG_LINES) -> None:
    """Through Loki's push API, as Promtail's JSON client would, stamped over the last minutes."""
    now = time.time_ns()
    values = [[str(now - (len(lines) - i) * 20 * 10**9), line] for i, line in enumerate(lines)]
    body = json.dumps(
        {"streams": [{"stream": {"namespace": NAMESPACE, "job": JOB, "container": "etl"}, "values": values}]}
    ).encode()
    request = urllib.request.Request(
        f"{loki_url.rstrip('/')}/loki/api/v1/push",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 204:
            raise RuntimeError(f"Loki push answered {response.status}")


def seed(world: ScenarioWorld, variant: str = "default") -> None:
    if variant not in EXPECTED_OUTCOMES:
        raise ValueError(f"unknown variant {variant!r} of {NAME}; known: {', '.join(EXPECTED_OUTCOMES)}")
    kube = world.kube
    kube.set_job_outcome(NAMESPACE, JOB, "fail")
    kube.set_job_outcome(NAMESPACE, f"{JOB}-rerun", "succeed")
    kube.apply(configmap(NAMESPACE, CONFIGMAP, dict(SOURCE)))
    kube.apply(
        job(NAMESPACE, JOB, image="registry.local/etl/revenue:2.4", labels={"app": JOB}, backoff_limit=0)
    )
    for name, labels, value in metric_samples(variant):
        world.set_metric(name, labels, value)
    push_logs(world.loki_url)
    kube.wait_until(lambda: _job_state(world) == "failed", timeout=30)


def _job_state(world: ScenarioWorld) -> str:
    found = world.kube.get("batch/v1", "Job", NAMESPACE, JOB) or {}
    for condition in (found.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return "failed"
    return "running"

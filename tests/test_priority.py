"""A page never waits behind a storm (issue 12): urgent incidents have reserved worker capacity.

On a real dev server: a backlog of low incidents whose diagnostic blocks (a target that holds
every request) takes every activity slot of the normal worker, then an urgent one (P1) and, for
contrast, a low incident of the very same fast runbook arrive. The P1 reaches its diagnostic
while the backlog is still blocked and the low twin, sent before it, has not: an ordering
assertion (the blocked diagnostics cannot finish until the test releases them), not a timing one.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from remedium.incidents import incident_task_queue, start_incident
from remedium.models import Alert, AuditEntry
from remedium.models.policy import Policy, PriorityPolicy
from remedium.names import incident_workflow_id, urgent_task_queue
from remedium.settings import Settings
from remedium.worker import running_worker
from tests.conftest import terminate_open_workflows
from tests.support import write_config

NORMAL_SLOTS = 2
BACKLOG = 5


class HoldingTarget:
    """`GET /slow` holds until released (counting who waits); `GET /fast` answers at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.waiting = 0
        self._lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/slow"):
                    with target._lock:
                        target.waiting += 1
                    target.release.wait(120)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        host, port = self.server.server_address[:2]
        self.url = f"http://{host!s}:{port}"

    def __enter__(self) -> HoldingTarget:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target() -> Iterator[HoldingTarget]:
    with HoldingTarget() as held:
        yield held


def _runbook(name: str, service: str, url: str) -> dict[str, Any]:
    return {
        "apiVersion": "remedium/v1",
        "kind": "Runbook",
        "metadata": {"name": name},
        "match": {"service": [service]},
        "diagnose": [{"id": "probe", "kind": "http", "with": {"url": url}, "timeout": "2m"}],
        "decide": {"when": ["facts.probe.ok and facts.probe.value.status >= 500"]},
        "plan": [{"id": "poke", "action": "http.request", "risk": "low", "with": {"url": url}}],
        "verify": {"success": ["true"]},
    }


def _alert(service: str, severity: str) -> Alert:
    return Alert(
        source="pagerduty",
        id=f"Q{uuid.uuid4().hex[:10].upper()}",
        title=f"{service} is failing",
        service=service,
        severity=severity,
    )


async def _diagnosed(client: Client, alert: Alert) -> bool:
    handle = client.get_workflow_handle(incident_workflow_id(alert.source, alert.id))
    try:
        audit = await handle.query("audit", result_type=list[AuditEntry])
    except Exception:  # the first workflow task has not run yet: nothing to answer with
        return False
    return any(entry.kind == "diagnostic" for entry in audit)


async def _until(what: str, check: Any, timeout: float = 90.0) -> None:
    """Wait for a state (a hang guard, not a measurement)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"never reached: {what}"
        await asyncio.sleep(0.1)


async def test_a_p1_reaches_its_diagnostic_while_the_backlog_holds_every_normal_slot(
    dev_env: WorkflowEnvironment, tmp_path: Path, target: HoldingTarget
) -> None:
    client = dev_env.client
    rb_dir, policy = write_config(
        tmp_path,
        [
            _runbook("slow-batch", "batch", f"{target.url}/slow"),
            _runbook("fast-payments", "payments", f"{target.url}/fast"),
        ],
        required_for=[],
        allow=[target.url],
    )
    settings = Settings(runbooks_dir=rb_dir, policy_file=policy, task_queue=f"tq-{uuid.uuid4().hex[:8]}")
    backlog = [_alert("batch", "P3") for _ in range(BACKLOG)]
    low_twin = _alert("payments", "P3")  # the P1's runbook, ranked low: it must queue
    page = _alert("payments", "P1")
    try:
        async with running_worker(settings, client, max_concurrent_activities=NORMAL_SLOTS):
            for alert in backlog:
                assert await start_incident(client, settings.task_queue, alert)

            async def saturated() -> bool:
                return target.waiting >= NORMAL_SLOTS

            await _until("every normal activity slot held by a blocked diagnostic", saturated)
            assert await start_incident(client, settings.task_queue, low_twin)
            assert await start_incident(client, settings.task_queue, page)

            async def page_diagnosed() -> bool:
                return await _diagnosed(client, page)

            await _until("the P1's first diagnostic", page_diagnosed)

            assert not target.release.is_set() and target.waiting == NORMAL_SLOTS, (
                "the backlog was still blocked, and no more of it had started, when the P1 diagnosed"
            )
            assert not any([await _diagnosed(client, alert) for alert in backlog])
            assert not await _diagnosed(client, low_twin), "the low twin, sent first, still waits"

            target.release.set()  # the backlog and the twin drain on the normal queue

            async def twin_diagnosed() -> bool:
                return await _diagnosed(client, low_twin)

            await _until("the low twin's diagnostic once the backlog moved", twin_diagnosed)
    finally:
        target.release.set()
        await terminate_open_workflows(dev_env)


def test_the_policy_ranks_urgent_by_severity_or_service() -> None:
    default = Policy().priority
    assert default.is_urgent("P1", "") and default.is_urgent("CRITICAL", "x")
    assert not default.is_urgent("P2", "payments") and not default.is_urgent("", "")
    custom = PriorityPolicy.model_validate({"urgent": {"severity": ["sev1"], "service": ["pay*"]}})
    assert custom.is_urgent("SEV1", "") and custom.is_urgent("P4", "payments")
    assert not custom.is_urgent("P1", "batch")
    alert = _alert("payments", "P1")
    assert incident_task_queue("remedium", alert) == urgent_task_queue("remedium") == "remedium-urgent"
    assert incident_task_queue("remedium", _alert("batch", "P3")) == "remedium"
    with pytest.raises(ValueError, match="extra"):
        PriorityPolicy.model_validate({"urgent": {"severity": ["P1"], "colour": "red"}})

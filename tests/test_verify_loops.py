"""Monitor and evaluate on durable timers (time-skipping server): early, at the deadline, never, worse.

The service's health answers a scripted sequence, one status per check; the runbook checks
every 30 s within 2 min: rounds at 0, 30, 60 and 90 s; after the fourth the next would land
past the deadline (checks themselves take a little time), so the fourth is the last chance.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from remedium.models import Alert, AuditEntry, IncidentResult
from tests.support import restart_runbook, settings_for, start, worker_for, write_config


@dataclass
class ScriptedService:
    """GET /health answers the next status of `script` (the last repeats); POSTs are recorded."""

    script: list[int]
    posts: list[str] = field(default_factory=list)
    checks: int = 0
    server: ThreadingHTTPServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> ScriptedService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                with service.lock:
                    index = min(service.checks, len(service.script) - 1)
                    service.checks += 1
                    status = service.script[index]
                self._reply(status, {"status": "ok" if status == 200 else "failing"})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with service.lock:
                    service.posts.append(self.path)
                self._reply(200, {"done": True})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[list[ScriptedService]]:
    started: list[ScriptedService] = []
    yield started
    for service in started:
        service.stop()


async def _run(
    env: WorkflowEnvironment, tmp: Path, service: ScriptedService, worse_if: list[str] | None = None
) -> tuple[IncidentResult, list[AuditEntry]]:
    runbook = restart_runbook(approval_required=False, every="30s", within="2m", worse_if=worse_if)
    rb_dir, policy = write_config(tmp, [runbook], required_for=[], allow=[service.url])
    settings = settings_for(tmp, rb_dir, policy)
    alert = Alert(
        source="manual",
        id=f"verify-{uuid.uuid4().hex[:8]}",
        title="web health failing",
        service="web-frontend",
        annotations={"base_url": service.url},
    )
    async with worker_for(env.client, settings):
        handle = await start(env.client, settings, alert)
        result: IncidentResult = await handle.result()
        audit = await handle.query("audit", result_type=list[AuditEntry])
    return result, audit


def _rounds(audit: list[AuditEntry]) -> list[str]:
    return [str(e.data["state"]) for e in audit if e.kind == "verify"]


def _service(scripted: list[ScriptedService], script: list[int]) -> ScriptedService:
    service = ScriptedService(script).start()
    scripted.append(service)
    return service


async def test_resolved_at_the_first_check(
    ts_env: WorkflowEnvironment, tmp_path: Path, scripted: list[ScriptedService]
) -> None:
    service = _service(scripted, [500, 200])  # diagnose sees 500, the first verification 200
    result, audit = await _run(ts_env, tmp_path, service)
    assert result.outcome == "resolved"
    assert _rounds(audit) == ["resolved"]
    assert service.posts == ["/admin/restart"]


async def test_resolved_at_the_deadline(
    ts_env: WorkflowEnvironment, tmp_path: Path, scripted: list[ScriptedService]
) -> None:
    service = _service(scripted, [500, 500, 500, 500, 200])
    result, audit = await _run(ts_env, tmp_path, service)
    assert result.outcome == "resolved"
    assert _rounds(audit) == ["not_resolved"] * 3 + ["resolved"]
    verify_times = [e.at for e in audit if e.kind == "verify"]
    assert (verify_times[-1] - verify_times[0]).total_seconds() == pytest.approx(90, abs=2)
    assert service.posts == ["/admin/restart"], "nothing rolled back"


async def test_never_resolved_rolls_back_and_escalates(
    ts_env: WorkflowEnvironment, tmp_path: Path, scripted: list[ScriptedService]
) -> None:
    service = _service(scripted, [500])
    result, audit = await _run(ts_env, tmp_path, service)
    assert result.outcome == "escalated"
    assert _rounds(audit) == ["not_resolved"] * 4
    assert "not recovered within 0:02:00" in result.reason
    assert service.posts == ["/admin/restart", "/admin/restore"]


async def test_worse_rolls_back_without_waiting_for_the_deadline(
    ts_env: WorkflowEnvironment, tmp_path: Path, scripted: list[ScriptedService]
) -> None:
    service = _service(scripted, [500, 500, 503])
    result, audit = await _run(
        ts_env,
        tmp_path,
        service,
        worse_if=["facts.health_after.ok and facts.health_after.value.status == 503"],
    )
    assert result.outcome == "escalated"
    assert _rounds(audit) == ["not_resolved", "worse"]
    kinds = [e.kind for e in audit]
    assert kinds.index("rollback_started") == kinds.index("evaluation") + 1
    verify_times = [e.at for e in audit if e.kind == "verify"]
    assert (verify_times[-1] - verify_times[0]).total_seconds() == pytest.approx(30, abs=2)
    assert service.posts == ["/admin/restart", "/admin/restore"]

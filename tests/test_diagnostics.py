"""Diagnostics run in parallel, each bounded by its own timeout; a failed one is a fact, not a failure.

A probe endpoint that never answers in time is cut at its 2 s timeout while the others
complete (and were already in flight together with it); a LogQL syntax error is recorded
with Loki's message and the query; the runbook's conditions test both failures and the
incident goes on to remediate.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from remedium.demo.sandbox.loki import LokiSandbox
from remedium.models import Alert, AuditEntry, IncidentResult
from remedium.settings import Settings
from tests.support import start, worker_for, write_config


class Probes:
    """/slow holds its answer until released; /fast notes whether /slow was in flight when it came."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.slow_in_flight = 0
        self.fast_saw_slow = False
        self.restarts = 0
        self.lock = threading.Lock()
        probes = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/slow":
                    with probes.lock:
                        probes.slow_in_flight += 1
                    probes.release.wait(30)
                    with probes.lock:
                        probes.slow_in_flight -= 1
                    self._reply({"late": True})
                    return
                if self.path == "/fast":
                    deadline = time.monotonic() + 5  # give the slow probe a moment to be asked too
                    while time.monotonic() < deadline and not probes.slow_in_flight:
                        time.sleep(0.02)
                    with probes.lock:
                        probes.fast_saw_slow = probes.slow_in_flight > 0
                self._reply({"status": "ok"})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with probes.lock:
                    probes.restarts += 1
                self._reply({"restarted": True})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def probes() -> Iterator[Probes]:
    service = Probes()
    yield service
    service.stop()


def _runbook(probes: Probes) -> dict[str, Any]:
    return {
        "apiVersion": "remedium/v1",
        "kind": "Runbook",
        "metadata": {"name": "degraded-diagnostics"},
        "match": {"service": ["checkout"]},
        "diagnose": [
            {"id": "slow", "kind": "http", "with": {"url": f"{probes.url}/slow"}, "timeout": "2s"},
            {"id": "fast", "kind": "http", "with": {"url": f"{probes.url}/fast"}, "timeout": "20s"},
            {
                "id": "errors",
                "kind": "logs",
                "with": {"query": '{app="checkout"} |= "error"', "extract": {"code": r"code=(?P<code>\d+)"}},
            },
            {"id": "broken", "kind": "logs", "with": {"query": '{app="checkout" |= "error"'}},
        ],
        "decide": {
            "when": [
                "not facts.slow.ok",  # the slow dependency is what we remediate
                "facts.fast.ok and facts.errors.ok and facts.errors.value.extract.code.last.code == '504'",
                "not facts.broken.ok",
            ]
        },
        "plan": [
            {"id": "bounce", "action": "http.request", "risk": "low", "with": {"url": f"{probes.url}/bounce"}}
        ],
        "verify": {"checks": [], "success": ["true"], "every": "1s", "within": "10s"},
    }


@pytest.mark.timeout(120)
async def test_slow_and_broken_diagnostics_become_facts_and_the_incident_goes_on(
    dev_env: WorkflowEnvironment, tmp_path: Path, probes: Probes, loki: LokiSandbox
) -> None:
    now = time.time_ns()
    pushed = httpx.post(
        f"{loki.url}/loki/api/v1/push",
        json={
            "streams": [
                {
                    "stream": {"app": "checkout"},
                    "values": [
                        [str(now - 2 * 10**9), "error code=502"],
                        [str(now - 10**9), "error code=504"],
                    ],
                }
            ]
        },
    )
    assert pushed.status_code == 204
    rb_dir, policy = write_config(tmp_path, [_runbook(probes)], required_for=[], allow=[probes.url])
    settings = Settings(
        runbooks_dir=rb_dir, policy_file=policy, task_queue=f"tq-{uuid.uuid4().hex[:8]}", loki_url=loki.url
    )
    alert = Alert(
        source="manual", id=f"diag-{uuid.uuid4().hex[:8]}", title="checkout slow", service="checkout"
    )
    async with worker_for(dev_env.client, settings):
        handle = await start(dev_env.client, settings, alert)
        result: IncidentResult = await handle.result()
        audit = await handle.query("audit", result_type=list[AuditEntry])

    assert result.outcome == "resolved", result.reason
    assert probes.restarts == 1
    assert probes.fast_saw_slow, "the fast probe ran while the slow one was still waiting: in parallel"
    facts = {e.message.split(" ")[0]: e.data for e in audit if e.kind == "diagnostic"}
    assert facts["slow"]["ok"] is False and "timed out" in facts["slow"]["error"].lower()
    assert facts["fast"]["ok"] is True and facts["errors"]["ok"] is True
    assert facts["errors"]["value"]["extract"]["code"]["first"] == {"code": "502"}
    broken = facts["broken"]
    assert broken["ok"] is False
    assert "Loki refused" in broken["error"] and "syntax error" in broken["error"]
    assert '{app="checkout" |= "error"' in broken["error"], "the failing query is in the audit trail"
    assert "degraded-diagnostics chosen" in next(e.message for e in audit if e.kind == "decision")

"""What `scripts/record_histories.py` drives, shared with the tests: a real HTTP service to
remediate, runbook and policy files, a worker bound to a server, starting an incident and
waiting for a stage.

It lives here, beside the demo, so the recording script needs nothing from `tests/`;
`tests/support.py` re-exports it.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client, WorkflowHandle

from remedium.models import Alert, IncidentInput, IncidentResult, IncidentStatus
from remedium.settings import Settings
from remedium.worker import running_worker
from workflows.incident import IncidentWorkflow


@dataclass
class Delivery:
    method: str
    path: str
    key: str | None
    body: Any


@dataclass
class TargetService:
    """A service with an admin API that honours Idempotency-Key, and a health endpoint.

    `applied` holds each effect once per key (what really happened to the service);
    `deliveries` holds every request that arrived (what the engine sent).
    """

    health_status: int = 500
    health_after_restart: int = 200
    hold_first_restart_s: float = 0.0
    applied: list[Delivery] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    # The fault campaign (bench/faults.py): many incidents, each with its own service under
    # `<url>/<prefix>` (its own health), slow restarts and probes so a worker can die while
    # one is in flight, `on_request(kind, prefix, client address)` to pick that moment, and
    # `faults["<prefix> <kind>"]` (kind: health, restart, restore): what the next such requests
    # get instead of an answer ("500", "503", "429" with Retry-After, "timeout": no answer for
    # `fault_hold_s`). `port` fixed lets a stopped service start again where it was.
    per_prefix: bool = False
    restart_delay_s: tuple[float, float] = (0.0, 0.0)
    health_delay_s: tuple[float, float] = (0.0, 0.0)
    on_request: Callable[[str, str, tuple[str, int]], None] | None = None
    faults: dict[str, list[str]] = field(default_factory=dict)
    fault_hold_s: float = 10.0
    injected: list[tuple[str, str, str]] = field(default_factory=list)  # (prefix, kind, fault) served
    port: int = 0
    rng: random.Random = field(default_factory=random.Random)
    _health: dict[str, int] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _results: dict[str, bytes] = field(default_factory=dict)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> TargetService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _faulted(self, kind: str) -> bool:
                """Notify `on_request`, then answer with the prefix's next fault if it has one."""
                prefix = service.prefix_of(self.path)
                if service.on_request is not None:
                    service.on_request(kind, prefix, self.client_address[:2])
                with service._lock:
                    queue = service.faults.get(f"{prefix} {kind}")
                    fault = queue.pop(0) if queue else None
                    if fault is not None:
                        service.injected.append((prefix, kind, fault))
                if fault is None:
                    return False
                if fault == "timeout":
                    time.sleep(service.fault_hold_s)
                    self.close_connection = True
                    return True
                if fault == "429":
                    data = b'{"error": "slow down"}'
                    self.send_response(429)
                    self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return True
                self._reply(int(fault), {"error": "injected"})
                return True

            def do_GET(self) -> None:
                if self._faulted("health"):
                    return
                time.sleep(service.rng.uniform(*service.health_delay_s))
                status = service.status_of(service.prefix_of(self.path))
                self._reply(status, {"status": "up" if status == 200 else "down"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
                kind = "restart" if self.path.endswith("/restart") else "restore"
                if self._faulted(kind):
                    return
                delivery = Delivery("POST", self.path, self.headers.get("Idempotency-Key"), body)
                prefix = service.prefix_of(self.path)
                with service._lock:
                    service.deliveries.append(delivery)
                    first = delivery.key not in {d.key for d in service.applied}
                    if first:
                        service.applied.append(delivery)
                        if self.path.endswith("/restart"):
                            service.set_status(prefix, service.health_after_restart)
                        if self.path.endswith("/restore"):
                            service.set_status(prefix, 500)
                if first and self.path.endswith("/restart") and service.hold_first_restart_s:
                    time.sleep(service.hold_first_restart_s)
                if self.path.endswith("/restart"):  # a restart takes a while, replayed or not
                    time.sleep(service.rng.uniform(*service.restart_delay_s))
                self._reply(200, {"ok": True, "key": delivery.key, "replayed": not first})

        self._server = _QuietServer(("127.0.0.1", self.port), Handler)
        self.port = int(self._server.server_address[1])
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def applied_to(self, suffix: str) -> list[Delivery]:
        return [d for d in self.applied if d.path.endswith(suffix)]

    def prefix_of(self, path: str) -> str:
        """`/inc-7/admin/restart` -> `inc-7` with `per_prefix`; "" (one service) without."""
        if not self.per_prefix:
            return ""
        return path.strip("/").split("/", 1)[0]

    def status_of(self, prefix: str) -> int:
        if not self.per_prefix:
            return self.health_status
        with self._lock:
            return self._health.get(prefix, self.health_status)

    def set_status(self, prefix: str, status: int) -> None:
        if self.per_prefix:
            self._health[prefix] = status
        else:
            self.health_status = status


class _QuietServer(ThreadingHTTPServer):
    """A client that hung up (a killed worker, a timed-out request) is no error to print."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def restart_runbook(
    *,
    name: str = "web-restart",
    approval_required: bool = True,
    approval_timeout: str = "30m",
    within: str = "2m",
    every: str = "30s",
    worse_if: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "remedium/v1",
        "kind": "Runbook",
        "metadata": {"name": name, "description": "restart the web pool when health fails"},
        "match": {"source": ["pagerduty", "manual"], "service": ["web*"]},
        "diagnose": [
            {"id": "health", "kind": "http", "with": {"url": "{{ alert.annotations.base_url }}/health"}}
        ],
        "decide": {"when": ["facts.health.ok and facts.health.value.status != 200"]},
        "plan": [
            {
                "id": "restart-pool",
                "action": "http.request",
                "risk": "medium",
                "description": "restart the worker pool",
                "with": {
                    "url": "{{ alert.annotations.base_url }}/admin/restart",
                    "json": {"pool": "web"},
                    "undo": {
                        "url": "{{ alert.annotations.base_url }}/admin/restore",
                        "json": {"pool": "web"},
                    },
                },
                "approval": {"required": approval_required, "timeout": approval_timeout},
            }
        ],
        "verify": {
            "checks": [
                {
                    "id": "health_after",
                    "kind": "http",
                    "with": {"url": "{{ alert.annotations.base_url }}/health"},
                }
            ],
            "success": ["facts.health_after.ok and facts.health_after.value.status == 200"],
            "worse_if": worse_if or [],
            "every": every,
            "within": within,
        },
        "report": {
            "summary": "{{ alert.title }}: {{ outcome }}",
            "follow_ups": ["check why the {{ alert.service }} pool wedged"],
        },
        "limits": {"max_actions": 3, "max_duration": "2h"},
    }


def http_allow(*urls: str) -> dict[str, Any]:
    """The policy section letting outbound HTTP reach these URLs (and what lies below them).

    A policy without it refuses every `http` step, and loopback needs an entry naming it, so
    each test or recording names the services it really means to reach.
    """
    return {"http": {"allow": list(urls)}}


def write_config(
    tmp: Path,
    runbooks: list[dict[str, Any]],
    approvers: list[str] | None = None,
    required_for: list[str] | None = None,
    policy_extra: dict[str, Any] | None = None,
    allow: list[str] | None = None,
) -> tuple[Path, Path]:
    """Runbook files and a policy; `allow` are the URL prefixes outbound HTTP may reach."""
    rb_dir = tmp / "runbooks"
    rb_dir.mkdir(exist_ok=True)
    for rb in runbooks:
        (rb_dir / f"{rb['metadata']['name']}.yaml").write_text(yaml.safe_dump(rb, sort_keys=False))
    policy = tmp / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "remedium/v1",
                "kind": "Policy",
                "approval": {
                    "approvers": approvers or ["alice", "bob"],
                    "required_for": required_for if required_for is not None else ["medium", "high"],
                    "timeout": "30m",
                },
                **(http_allow(*allow) if allow else {}),
                **(policy_extra or {}),
            }
        )
    )
    return rb_dir, policy


def alert_for(
    service: TargetService, incident_id: str | None = None, title: str = "web health check failing"
) -> Alert:
    return Alert(
        source="manual",
        id=incident_id or f"test-{uuid.uuid4().hex[:10]}",
        title=title,
        service="web-frontend",
        severity="P2",
        annotations={"base_url": service.url},
    )


def settings_for(tmp: Path, rb_dir: Path, policy: Path, task_queue: str | None = None) -> Settings:
    return Settings(
        runbooks_dir=rb_dir,
        policy_file=policy,
        task_queue=task_queue or f"tq-{uuid.uuid4().hex[:8]}",
    )


@asynccontextmanager
async def worker_for(client: Client, settings: Settings) -> AsyncIterator[None]:
    async with running_worker(settings, client):
        yield


async def start(client: Client, settings: Settings, alert: Alert) -> WorkflowHandle[Any, IncidentResult]:
    return await client.start_workflow(
        IncidentWorkflow.run, IncidentInput(alert=alert), id=alert.workflow_id, task_queue=settings.task_queue
    )


async def wait_for_stage(
    handle: WorkflowHandle[Any, Any],
    stage: str,
    timeout: float = 20.0,  # noqa: ASYNC109 - a polling deadline; the error names the last status seen
) -> IncidentStatus:
    deadline = time.monotonic() + timeout
    last: IncidentStatus | None = None
    while time.monotonic() < deadline:
        try:
            last = await handle.query("status", result_type=IncidentStatus)
        except Exception:
            last = None
        if last is not None and last.stage == stage:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"stage {stage!r} not reached; last status: {last}")

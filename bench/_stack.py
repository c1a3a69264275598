"""The production-shaped stack every bench builds for itself: a Temporal dev server,
`remedium worker` and `remedium ingress`, each its own OS process, all on loopback.

Benches measure what an operator would run, so nothing shares a process or an event loop
with the load generator (which is the bench script itself). Every child gets
PR_SET_PDEATHSIG, so a bench that dies leaves nothing running; `Stack.__aexit__` stops them
all anyway.

API (for bench/loop.py, idle.py, replay.py, storm.py, faults.py):

    from _stack import Stack, Proc, free_port, rss_kb, write_result, BENCH_DIR

    async with Stack(workdir, runbooks_dir=rb_dir, policy_file=policy,
                     env={"REMEDIUM_...": "..."},       # extra env for worker AND ingress
                     worker=True, ingress=True) as stack:
        stack.client           # temporalio Client (pydantic data converter)
        stack.address          # "127.0.0.1:<port>" of the dev server
        stack.task_queue       # a fresh queue per stack
        stack.ingress_url      # "http://127.0.0.1:<port>"; tokens: AM_TOKEN, PD_SECRET, SLACK_SECRET
        stack.server / stack.worker / stack.ingress   # Proc (or None when not asked for)
        stack.worker.pid, stack.worker.rss_kb()       # VmRSS from /proc/<pid>/status
        stack.worker.kill()                           # SIGKILL, no grace (fault injection)
        await stack.restart_worker()                  # start again, wait until it polls
        await stack.kill_server(); await stack.restart_server()  # same port, same sqlite file
                                                      # (only with Stack(..., persist=True);
                                                      # the default keeps the server in memory)
        await stack.wait_worker_polling()             # a workflow poller on the task queue
        proc = stack.spawn("bare", [sys.executable, "x.py"], env={...})  # any extra child
        stack.child_env()                             # the env a remedium child gets

    write_result("loop", {...})  # bench/results/loop.json, with the host and the time

    with IncidentTarget(restart_delay_s=(0.5, 2.0)) as target:  # loopback service, a pool per incident
        target.pool_url("p1"); target.applied; target.first_action_at
    alertmanager_body(fingerprint, {"base_url": ...}); AM_HEADERS  # one firing alert, bearer auth

Children's output goes to `<workdir>/<name>.log` (read it when a child dies early).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from remedium.devserver import dev_server_command, port_open, stop_process
from remedium.names import DEFAULT_NAMESPACE

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
REMEDIUM = str(Path(sys.executable).with_name("remedium"))
AM_TOKEN = "bench-alertmanager-token"
PD_SECRET = "bench-pagerduty-secret"
SLACK_SECRET = "bench-slack-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kb(pid: int) -> int:
    """Resident set size of a process, from /proc (psutil is not a dependency)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def write_result(name: str, record: Mapping[str, Any]) -> Path:
    """bench/results/<name>.json: the figure plus where and when it was measured."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    full = {
        "bench": name,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
        **record,
    }
    path.write_text(json.dumps(full, indent=2) + "\n")
    return path


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Proc:
    """One child process that can be killed and started again with the same command."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, list(argv), dict(env), log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def check_alive(self) -> None:
        if not self.alive:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited: {tail}")

    def kill(self) -> None:
        """SIGKILL and reap: the crash a fault campaign injects."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    async def stop(self, grace: float = 10.0) -> None:
        await stop_process(self.process, grace)


async def _port_open(port: int) -> bool:
    return await port_open("127.0.0.1", port)


class Stack:
    """Dev server + `remedium worker` + `remedium ingress` as separate processes."""

    def __init__(
        self,
        workdir: Path,
        *,
        runbooks_dir: Path | None = None,
        policy_file: Path | None = None,
        env: Mapping[str, str] | None = None,
        worker: bool = True,
        ingress: bool = True,
        task_queue: str | None = None,
        persist: bool = False,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.runbooks_dir = runbooks_dir or workdir / "runbooks"
        self.runbooks_dir.mkdir(parents=True, exist_ok=True)
        self.policy_file = policy_file
        self.extra_env = dict(env or {})
        self.want_worker, self.want_ingress = worker, ingress
        self.persist = persist
        self.task_queue = task_queue or f"bench-{uuid.uuid4().hex[:8]}"
        self.port, self.ui_port, self.ingress_port = free_port(), free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.ingress_url = f"http://127.0.0.1:{self.ingress_port}"
        self.server: Proc | None = None
        self.worker: Proc | None = None
        self.ingress: Proc | None = None
        self.extra: list[Proc] = []
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        assert self._client is not None, "the stack is not started"
        return self._client

    def child_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            **os.environ,
            "REMEDIUM_TEMPORAL_ADDRESS": self.address,
            "REMEDIUM_NAMESPACE": DEFAULT_NAMESPACE,
            "REMEDIUM_TASK_QUEUE": self.task_queue,
            "REMEDIUM_RUNBOOKS_DIR": str(self.runbooks_dir),
            "REMEDIUM_INGRESS_ADDRESS": f"127.0.0.1:{self.ingress_port}",
            "REMEDIUM_ALERTMANAGER_TOKEN": AM_TOKEN,
            "REMEDIUM_PAGERDUTY_WEBHOOK_SECRET": PD_SECRET,
            "REMEDIUM_SLACK_SIGNING_SECRET": SLACK_SECRET,
            "REMEDIUM_TEMPORAL_UI_URL": f"http://127.0.0.1:{self.ui_port}",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("REMEDIUM_CONFIG", None)
        if self.policy_file is not None:
            env["REMEDIUM_POLICY_FILE"] = str(self.policy_file)
        env.update(self.extra_env)
        env.update(extra or {})
        return env

    def spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Proc:
        """Any extra child (a bare worker, a second ingress), stopped with the stack."""
        proc = Proc(name, argv, self.child_env(env), self.workdir / f"{name}.log").start()
        self.extra.append(proc)
        return proc

    async def start_server(self) -> None:
        argv = [*dev_server_command(self.workdir, self.port, self.ui_port), "--headless"]
        if not self.persist:  # in memory: figures measure us, not the disk's fsync
            at = argv.index("--db-filename")
            del argv[at : at + 2]
        self.server = Proc("temporal", argv, dict(os.environ), self.workdir / "temporal.log").start()
        deadline = time.monotonic() + 60
        while not await _port_open(self.port):
            self.server.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("dev server not listening after 60 s")
            await asyncio.sleep(0.1)

    async def kill_server(self) -> None:
        assert self.server is not None
        self.server.kill()

    async def restart_server(self) -> None:
        """Same port and sqlite file: workflows survive, clients reconnect by themselves."""
        assert self.server is not None
        assert self.persist, "Stack(persist=True) is needed for the state to survive a restart"
        self.server.start()
        while not await _port_open(self.port):
            self.server.check_alive()
            await asyncio.sleep(0.1)

    async def start_worker(self) -> Proc:
        self.worker = Proc(
            "worker", [REMEDIUM, "worker"], self.child_env(), self.workdir / "worker.log"
        ).start()
        await self.wait_worker_polling()
        return self.worker

    async def restart_worker(self) -> None:
        assert self.worker is not None
        self.worker.kill()
        self.worker.start()
        await self.wait_worker_polling(fresh_since=time.time())

    async def wait_worker_polling(self, timeout: float = 60.0, fresh_since: float = 0.0) -> None:  # noqa: ASYNC109
        """Until a workflow poller (polled after `fresh_since`) is on the task queue."""
        deadline = time.monotonic() + timeout
        request = DescribeTaskQueueRequest(
            namespace=DEFAULT_NAMESPACE,
            task_queue=TaskQueue(name=self.task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
        while time.monotonic() < deadline:
            if self.worker is not None:
                self.worker.check_alive()
            with contextlib.suppress(Exception):
                reply = await self.client.workflow_service.describe_task_queue(request)
                if any(p.last_access_time.seconds >= int(fresh_since) for p in reply.pollers):
                    return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"no worker polling {self.task_queue} after {timeout:.0f} s")

    async def start_ingress(self) -> Proc:
        import httpx

        self.ingress = Proc(
            "ingress", [REMEDIUM, "ingress"], self.child_env(), self.workdir / "ingress.log"
        ).start()
        async with httpx.AsyncClient(base_url=self.ingress_url) as http:
            for _ in range(600):
                self.ingress.check_alive()
                with contextlib.suppress(httpx.TransportError):
                    await http.get("/healthz")
                    return self.ingress
                await asyncio.sleep(0.1)
        raise RuntimeError("ingress not answering /healthz after 60 s")

    async def __aenter__(self) -> Stack:
        try:
            await self.start_server()
            for _ in range(100):
                try:
                    self._client = await Client.connect(
                        self.address, namespace=DEFAULT_NAMESPACE, data_converter=pydantic_data_converter
                    )
                    break
                except Exception:
                    await asyncio.sleep(0.2)
            else:
                raise RuntimeError(f"cannot connect to the dev server at {self.address}")
            if self.want_worker:
                await self.start_worker()
            if self.want_ingress:
                await self.start_ingress()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        for proc in [*self.extra, self.ingress, self.worker]:
            if proc is not None:
                await proc.stop()
        if self.server is not None:
            await self.server.stop()


class IncidentTarget:
    """A loopback service with one pool per incident, so many incidents can run at once.

    `GET <url>/p/<pool>/health` answers 500 until `POST <url>/p/<pool>/admin/restart`, then
    200; `.../admin/restore` breaks it again. Each effect is applied once per Idempotency-Key
    (a retried restart is answered, not redone); `applied[pool]` counts real restarts,
    `requests` counts every request, `first_action_at[pool]` is when its first POST arrived.
    `restart_delay_s=(lo, hi)` holds a first restart that long (a slow endpoint, for fault
    campaigns). Served from threads of the bench process.
    """

    def __init__(self, restart_delay_s: tuple[float, float] = (0.0, 0.0)) -> None:
        import random
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.healthy: set[str] = set()
        self.applied: dict[str, int] = {}
        self.keys: set[str] = set()
        self.requests = 0
        self.first_action_at: dict[str, float] = {}  # pool -> time.monotonic() of its first POST
        lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _pool(self) -> str:
                parts = self.path.split("/")
                return parts[2] if len(parts) > 2 and parts[1] == "p" else ""

            def do_GET(self) -> None:
                with lock:
                    target.requests += 1
                    up = self._pool() in target.healthy
                self._reply(200 if up else 500, {"status": "up" if up else "down"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                pool, key = self._pool(), self.headers.get("Idempotency-Key") or ""
                with lock:
                    target.requests += 1
                    target.first_action_at.setdefault(pool, time.monotonic())
                    first = not key or key not in target.keys
                    if first:
                        target.keys.add(key)
                        target.applied[pool] = target.applied.get(pool, 0) + 1
                        if self.path.endswith("/restart"):
                            target.healthy.add(pool)
                        elif self.path.endswith("/restore"):
                            target.healthy.discard(pool)
                if first and self.path.endswith("/restart") and restart_delay_s[1] > 0:
                    time.sleep(random.uniform(*restart_delay_s))
                self._reply(200, {"ok": True, "replayed": not first})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def pool_url(self, pool: str) -> str:
        return f"{self.url}/p/{pool}"

    def __enter__(self) -> IncidentTarget:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def alertmanager_body(
    fingerprint: str, annotations: Mapping[str, str], service: str = "web-frontend", severity: str = "P2"
) -> bytes:
    """One firing alert in an Alertmanager v4 webhook body (fingerprint: 16 hex digits)."""
    alert = {
        "status": "firing",
        "labels": {"alertname": "WebHealth", "service": service, "severity": severity},
        "annotations": {"summary": f"web health failing ({fingerprint})", **annotations},
        "startsAt": "2026-11-22T20:25:01.133607419Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.invalid/graph",
        "fingerprint": fingerprint,
    }
    return json.dumps(
        {
            "version": "4",
            "status": "firing",
            "receiver": "remedium",
            "alerts": [alert],
            "groupKey": f"{{}}:{{fp={fingerprint}}}",
            "groupLabels": {},
            "truncatedAlerts": 0,
        }
    ).encode()


AM_HEADERS = {"Authorization": f"Bearer {AM_TOKEN}", "Content-Type": "application/json"}

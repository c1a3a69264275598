"""Fixtures for the Alertmanager and Slack ingress tests: the ingress served for real, a recorder of
what reached it, and the Debian `prometheus-alertmanager` binary wired to it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from remedium.ingress.app import create_app
from remedium.settings import Settings
from tests.support import SESSION_STARTUPS

ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"
AM_TOKEN = "am-test-token-" + uuid.uuid4().hex


@dataclass(eq=False)
class Exchange:
    path: str
    status: int
    request: bytes
    response: bytes

    def request_json(self) -> Any:
        return json.loads(self.request)

    def response_json(self) -> Any:
        return json.loads(self.response) if self.response else None


@dataclass
class Recorder:
    """Wraps an ASGI app and keeps every request/response pair: what the sender saw, byte for byte."""

    app: Any
    exchanges: list[Exchange] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = bytearray()
        response = bytearray()
        status = 0

        async def recv() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                request.extend(message.get("body", b""))
            return message

        async def snd(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                response.extend(message.get("body", b""))
            await send(message)

        await self.app(scope, recv, snd)
        self.exchanges.append(Exchange(scope["path"], status, bytes(request), bytes(response)))

    async def wait_for(
        self, predicate: Callable[[Exchange], bool], what: str, timeout: float = 20.0, since: int = 0
    ) -> Exchange:
        """The first exchange (from index `since`) matching; waits while the sender is still sending."""
        deadline = time.monotonic() + timeout
        seen = since
        while time.monotonic() < deadline:
            for exchange in self.exchanges[seen:]:
                if predicate(exchange):
                    return exchange
            seen = len(self.exchanges)
            await asyncio.sleep(0.05)
        raise AssertionError(f"never received {what}; got {[(e.path, e.status) for e in self.exchanges]}")


def provider(env: WorkflowEnvironment) -> Callable[[], Awaitable[Client]]:
    async def get() -> Client:
        return env.client

    return get


def ingress_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "pagerduty_webhook_secret": SecretStr("pd-unused-" + uuid.uuid4().hex),
        "alertmanager_token": SecretStr(AM_TOKEN),
        "task_queue": f"am-{uuid.uuid4().hex[:8]}",
    }
    values.update(overrides)
    return Settings(**values)


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # pytest owns the signals
        yield


@contextlib.asynccontextmanager
async def serve_app(app: Any, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on loopback (an already bound socket or a free port)."""
    if sock is None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()[:2]
    server = _QuietServer(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before serving")
            await asyncio.sleep(0.02)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AlertmanagerStack:
    url: str
    ingress_url: str
    recorder: Recorder
    settings: Settings
    client: Client

    async def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
            response = await http.post("/api/v2/alerts", json=alerts)
            assert response.status_code == 200, response.text

    async def fingerprints(self, label: str, value: str) -> list[str]:
        """Fingerprints Alertmanager itself computed for the alerts with `label` = `value`."""
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
            response = await http.get("/api/v2/alerts", params={"filter": f'{label}="{value}"'})
            assert response.status_code == 200, response.text
            return [str(alert["fingerprint"]) for alert in response.json()]

    def deliveries(self, label: str, value: str) -> list[Exchange]:
        """Webhook deliveries of the group whose `label` is `value` (the tests group by test_id)."""
        found = []
        for exchange in self.recorder.exchanges:
            if exchange.path != "/webhooks/alertmanager":
                continue
            try:
                body = exchange.request_json()
            except ValueError:
                continue
            if isinstance(body, dict) and body.get("groupLabels", {}).get(label) == value:
                found.append(exchange)
        return found


def _am_config(ingress_url: str) -> dict[str, Any]:
    def receiver(name: str, token: str) -> dict[str, Any]:
        return {
            "name": name,
            "webhook_configs": [
                {
                    "url": f"{ingress_url}/webhooks/alertmanager",
                    "send_resolved": True,
                    "http_config": {"authorization": {"type": "Bearer", "credentials": token}},
                }
            ],
        }

    return {
        "route": {
            "receiver": "remedium",
            "group_by": ["test_id"],
            "group_wait": "1s",
            "group_interval": "2s",
            "repeat_interval": "5s",
            "routes": [{"receiver": "wrong-token", "matchers": ['token="wrong"']}],
        },
        "receivers": [receiver("remedium", AM_TOKEN), receiver("wrong-token", "not-" + AM_TOKEN)],
    }


@contextlib.contextmanager
def _alertmanager_process(config: dict[str, Any]) -> Iterator[str]:
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="remedium-am-") as tmp:
        config_path = Path(tmp) / "alertmanager.yml"
        config_path.write_text(yaml.safe_dump(config))
        url = f"http://127.0.0.1:{port}"
        log_path = Path(tmp) / "alertmanager.log"
        started = time.monotonic()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    ALERTMANAGER_BIN,
                    f"--config.file={config_path}",
                    f"--storage.path={tmp}/data",
                    f"--web.listen-address=127.0.0.1:{port}",
                    f"--web.external-url={url}",
                    "--cluster.listen-address=",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                deadline = time.monotonic() + 20
                while True:
                    if process.poll() is not None:
                        raise RuntimeError(f"alertmanager exited: {log_path.read_text()[-2000:]}")
                    try:
                        if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"alertmanager never ready: {log_path.read_text()[-2000:]}")
                    time.sleep(0.1)
                SESSION_STARTUPS["Alertmanager"] = time.monotonic() - started
                yield url
            finally:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture(scope="session")
async def alertmanager_stack(dev_env: WorkflowEnvironment) -> AsyncIterator[AlertmanagerStack]:
    """A real Alertmanager whose webhook receivers point at a real ingress (no worker behind it)."""
    if shutil.which(ALERTMANAGER_BIN) is None:
        from tests.conftest import require_real

        require_real(
            "alertmanager", f"{ALERTMANAGER_BIN} is not installed (apt install prometheus-alertmanager)"
        )
    settings = ingress_settings()
    recorder = Recorder(create_app(settings, provider(dev_env)))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    async with serve_app(recorder, sock) as ingress_url:
        with _alertmanager_process(_am_config(ingress_url)) as am_url:
            yield AlertmanagerStack(am_url, ingress_url, recorder, settings, dev_env.client)

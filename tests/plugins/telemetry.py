"""Telemetry fixtures: one real Prometheus per test session scraping an exporter the tests drive.

The Debian `prometheus` binary starts on loopback with a temporary data dir and scrapes a
small exporter (text exposition format) every second. Start-up is paid once per session;
tests set gauges on the exporter and wait until Prometheus has scraped them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from remedium.demo.sandbox.loki import LokiSandbox
from tests.support import SESSION_STARTUPS

PROMETHEUS_BIN = "/usr/bin/prometheus"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


@dataclass
class Exporter:
    """Gauges served in Prometheus's text format; `set` is what the tests and scenarios call."""

    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def set(self, name: str, labels: dict[str, str], value: float) -> None:
        with self.lock:
            self.values[(name, tuple(sorted(labels.items())))] = value

    def clear(self) -> None:
        with self.lock:
            self.values.clear()

    def text(self) -> str:
        with self.lock:
            items = sorted(self.values.items())
        lines: list[str] = []
        seen: set[str] = set()
        for (name, labels), value in items:
            if name not in seen:
                lines.append(f"# TYPE {name} gauge")
                seen.add(name)
            lines.append(f"{name}{_labels(dict(labels))} {value!r}")
        return "\n".join(lines) + "\n"

    @property
    def address(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> Exporter:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = exporter.text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class RealPrometheus:
    url: str
    exporter: Exporter
    process: subprocess.Popen[bytes]
    startup_s: float

    def wait_for(self, query: str, predicate: Any = bool, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll an instant query until `predicate(result)` holds (i.e. a scrape has landed)."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            response = httpx.get(f"{self.url}/api/v1/query", params={"query": query}, timeout=5)
            if response.status_code == 200:
                result = response.json()["data"]["result"]
                if predicate(result):
                    return result
            time.sleep(0.2)
        raise AssertionError(f"Prometheus never answered {query!r} as expected; last result {result}")

    def set_and_wait(self, name: str, labels: dict[str, str], value: float) -> None:
        self.exporter.set(name, labels, value)
        selector = name + _labels(labels)
        self.wait_for(selector, lambda r: bool(r) and float(r[0]["value"][1]) == value)


def spawn_prometheus(
    targets: list[str], workdir: Path, job: str = "remedium"
) -> tuple[subprocess.Popen[bytes], str]:
    """The Debian binary scraping `targets` every second; skipped with a reason when missing."""
    from tests.conftest import require_real

    binary = PROMETHEUS_BIN if os.path.exists(PROMETHEUS_BIN) else shutil.which("prometheus")
    if binary is None:
        require_real("prometheus", f"{PROMETHEUS_BIN} is not installed (apt-get install prometheus)")
        raise AssertionError("unreachable")
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
            }
        )
    )
    port = _free_port()
    log = open(workdir / "prometheus.log", "wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()  # the child has its own descriptor
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def prometheus() -> Iterator[RealPrometheus]:
    """The real Prometheus (Debian package), once per session; skipped with a reason if absent."""

    exporter = Exporter().start()
    workdir = Path(tempfile.mkdtemp(prefix="remedium-prometheus-"))
    started = time.monotonic()
    process, url = spawn_prometheus([exporter.address], workdir, job="remedium-tests")
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(workdir / 'prometheus.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("prometheus not ready after 60 s")
            time.sleep(0.1)
        real = RealPrometheus(url, exporter, process, time.monotonic() - started)
        real.wait_for('up{job="remedium-tests"}', lambda r: bool(r) and r[0]["value"][1] == "1")
        real.startup_s = time.monotonic() - started
        SESSION_STARTUPS["Prometheus, to its first scrape of the test exporter"] = real.startup_s
        yield real
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        exporter.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def loki() -> Iterator[LokiSandbox]:
    sandbox = LokiSandbox().start()
    try:
        yield sandbox
    finally:
        sandbox.stop()

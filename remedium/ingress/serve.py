"""Running the ingress under uvicorn inside our own event loop, stopped by our own signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import uvicorn
from temporalio.client import Client

from remedium.codec import data_converter
from remedium.connection import connect
from remedium.ingress.app import ClientProvider, create_app
from remedium.settings import Settings


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The caller owns SIGINT/SIGTERM (it also stops the worker and the dev server).
        yield


def connect_client(settings: Settings) -> ClientProvider:
    """A provider that connects on first use and keeps the client, so the ingress starts without Temporal."""
    lock = asyncio.Lock()
    cached: list[Client] = []

    async def provide() -> Client:
        async with lock:
            if not cached:
                cached.append(await connect(settings))
            return cached[0]

    return provide


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"ingress address must be HOST:PORT, got {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def bind_ingress(settings: Settings) -> socket.socket:
    """Hold the ingress port, or say why it cannot be had.

    `remedium up` calls this (and `require_webhook_auth`) before starting anything else, so a
    port in use or a missing secret stops it at once, not after the dev server and worker are up.
    """
    host, port = split_address(settings.ingress_address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listening from here on: a webhook sent as soon as `remedium up` says it is ready waits
        # in the backlog until the server accepts it, instead of being refused.
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or str(exc)).lower()
        raise ValueError(f"the ingress cannot listen on {settings.ingress_address}: {reason}") from None
    return sock


async def serve_ingress(
    settings: Settings, client: ClientProvider, stop: asyncio.Event, sock: socket.socket | None = None
) -> None:
    """Serve until `stop` is set; raises ValueError on bad configuration or a port in use."""
    data_converter(settings)  # bad REMEDIUM_CODEC_KEYS refuse the start, not every webhook after it
    app = create_app(settings, client)
    sock = sock or bind_ingress(settings)
    server = _Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    try:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving
        stopping.cancel()
        await app.state.slack_interactions.drain()  # a click in flight is applied and answered
    finally:
        sock.close()
    if not server.started:
        raise ValueError(f"ingress could not serve on {settings.ingress_address}")

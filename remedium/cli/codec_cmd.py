"""`remedium codec-server`: the Temporal UI's codec endpoint, so operators read encrypted incidents.

It needs the same REMEDIUM_CODEC_KEYS as the worker, and a token (REMEDIUM_CODEC_SERVER_TOKEN)
unless REMEDIUM_INSECURE_CODEC_SERVER=1 says, loudly, that anyone who can reach it may decode.
It refuses to start on either missing, on a bad key, or on an address it cannot listen on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Generator

import uvicorn

from remedium.cli.common import CommandError

INSECURE_WARNING = (
    "!!! INSECURE: the codec server decodes for anyone who can reach it "
    "(REMEDIUM_INSECURE_CODEC_SERVER=1): every alert, log and fact in the history. "
    "Never run this in production. !!!"
)


def _bind(address: str) -> socket.socket:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise CommandError(f"--address must be HOST:PORT, got {address!r}", 2)
    host = host.strip("[]") or "127.0.0.1"
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise CommandError(
            f"the codec server cannot listen on {address}: {(exc.strerror or str(exc)).lower()}"
        ) from None
    return sock


async def codec_server_command(address: str | None) -> int:
    """Serve /encode and /decode until SIGINT or SIGTERM."""
    from remedium.codec import codec_for
    from remedium.codec_server import allowed_origins, create_codec_app
    from remedium.errors import CodecConfigError
    from remedium.settings import Settings

    settings = Settings.load()
    try:
        codec = codec_for(settings)
    except CodecConfigError as exc:
        raise CommandError(str(exc)) from None
    if codec is None:
        raise CommandError(
            "REMEDIUM_CODEC_KEYS is not set: the codec server needs the keys the worker encrypts with"
        )
    token = settings.codec_server_token.get_secret_value() if settings.codec_server_token else ""
    if not token and not settings.insecure_codec_server:
        raise CommandError(
            "REMEDIUM_CODEC_SERVER_TOKEN is not set; set it, or set REMEDIUM_INSECURE_CODEC_SERVER=1 "
            "to let anyone who can reach the server decode (never in production)"
        )
    sock = _bind(address or settings.codec_server_address)
    app = create_codec_app(settings, codec, token or None)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    ids = codec.keyring.ids
    print(f"codec server listening on http://{shown_host}:{port}", flush=True)
    origins = ", ".join(sorted(allowed_origins(settings))) or "none"
    keys = ", ".join([f"{ids[0]} (encrypts)", *ids[1:]])
    print(f"namespace {settings.namespace}; UI origins: {origins}; key ids: {keys}", flush=True)
    if not token:
        logging.getLogger("remedium.codec_server").warning(INSECURE_WARNING)
    server = _Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving
        stopping.cancel()
    finally:
        sock.close()
    return 0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # ours: SIGTERM ends the command with exit 0, not with uvicorn's re-raised signal

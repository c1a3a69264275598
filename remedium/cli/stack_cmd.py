"""`remedium up`, `demo`, `worker`, `ingress`: the commands that run components.

Each imports what it runs inside the function, so `remedium ingress` never loads the
worker's activities and only `demo` / `up --demo` load the demo package and its sandboxes.
SIGINT and SIGTERM end a running command cleanly: everything it started is stopped.
"""

from __future__ import annotations

import asyncio
import importlib.util
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from remedium.cli.common import CommandError
from remedium.errors import DemoError, DevServerError, StartupError, TemporalUnreachable
from remedium.settings import Settings

if TYPE_CHECKING:
    import socket

    from remedium.devserver import DevServer


class Sandboxes(Protocol):
    """What `up` uses of remedium.demo's sandboxes, typed without importing the demo."""

    def stop(self) -> None: ...

    def describe(self) -> list[tuple[str, str]]: ...


def _stop_on_signals() -> asyncio.Event:
    """An event set by Ctrl-C or SIGTERM, instead of KeyboardInterrupt mid-shutdown."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def worker_command() -> int:
    """Run the worker against REMEDIUM_TEMPORAL_ADDRESS until stopped."""
    from remedium.worker import run_worker

    settings = Settings.load()
    stop = _stop_on_signals()
    try:
        await run_worker(settings, stop)
    except StartupError as exc:
        raise CommandError(str(exc)) from None
    return 0


async def ingress_command() -> int:
    """Serve the webhook ingress against REMEDIUM_TEMPORAL_ADDRESS until stopped."""
    from remedium.ingress.serve import connect_client, serve_ingress

    settings = Settings.load()
    stop = _stop_on_signals()
    try:
        await serve_ingress(settings, connect_client(settings), stop)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return 0


def _demo_installed() -> None:
    """Production images leave the demo out (see .dockerignore): say so instead of a traceback."""
    if importlib.util.find_spec("remedium.demo") is None:
        raise CommandError(
            "the demo is not installed here (production images leave out remedium/demo); "
            "run it from a source checkout"
        )


async def demo_command(scenario: str, variant: str | None, keep_running: bool) -> int:
    """One scenario end to end; exit 0 when the incident ended as the scenario expects."""
    _demo_installed()
    from remedium.demo.run import run_demo

    try:
        return await run_demo(scenario, keep_running, variant)
    except (DemoError, ValueError) as exc:
        raise CommandError(str(exc)) from None


def _abandon(sandboxes: Sandboxes | None, sock: socket.socket | None) -> None:
    """Undo what `up` had started before it failed to start the rest."""
    if sandboxes is not None:
        sandboxes.stop()
    if sock is not None:
        sock.close()


# The ingress's own credentials: a user who set one (to sign test webhooks with it, or because
# their sender already uses it) keeps it under `up --demo`, as their policy file is kept.
WEBHOOK_CREDENTIALS = ("pagerduty_webhook_secret", "slack_signing_secret", "alertmanager_token")


def _keep_user_credentials(settings: Settings, update: dict[str, Any]) -> list[str]:
    """Drop from the sandbox's settings each webhook credential the user set; return which."""
    kept = [key for key in WEBHOOK_CREDENTIALS if getattr(settings, key) is not None]
    for key in kept:
        update.pop(key, None)
    return kept


def _start_sandboxes(
    settings: Settings, state_dir: Path, ui_port: int
) -> tuple[Settings, Sandboxes, list[str]]:
    """`up --demo`: start and seed the sandboxes, write their env file, point settings at them.

    Also returns the webhook credentials kept from the user's environment: those are not
    written to sandbox.env (it says so instead), so no secret of theirs lands in a file.
    """
    _demo_installed()
    from remedium.demo.sandboxes import DemoSandboxes

    sandboxes = DemoSandboxes.start()
    update = sandboxes.settings_update(state_dir, settings.policy_file)
    kept = _keep_user_credentials(settings, update)
    env_file = sandboxes.write_env(state_dir / "sandbox.env", update)
    if kept:
        with env_file.open("a") as out:
            for key in kept:
                out.write(f"# REMEDIUM_{key.upper()}: yours, from the environment of `remedium up`\n")
    settings = settings.model_copy(update={**update, "temporal_ui_url": f"http://127.0.0.1:{ui_port}"})
    sandboxes.seed_all()
    return settings, sandboxes, kept


def _print_endpoints(
    server: DevServer,
    settings: Settings,
    sandboxes: Sandboxes | None,
    state_dir: Path,
    kept: list[str] | None = None,
) -> None:
    print(f"Temporal UI:      {server.ui_url}/namespaces/{settings.namespace}/workflows", flush=True)
    print(f"Temporal gRPC:    {server.address}", flush=True)
    print(f"PagerDuty hook:   http://{settings.ingress_address}/webhooks/pagerduty", flush=True)
    print(f"State:            {server.state_dir / 'temporal.db'}", flush=True)
    if sandboxes is not None:
        for name, url in sandboxes.describe():
            print(f"{name + ':':<18}{url}", flush=True)
        print(f"Sandbox settings: {state_dir / 'sandbox.env'}", flush=True)
        print(f"Kubeconfig:       {state_dir / 'kubeconfig'}", flush=True)
        for key in WEBHOOK_CREDENTIALS:  # which secret signs what, never the secret itself
            whose = "yours (from your environment)" if key in (kept or []) else "the sandbox's (sandbox.env)"
            print(f"{'Webhook secret:':<18}REMEDIUM_{key.upper()}: {whose}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)


async def up_command(
    temporal_port: int, ui_port: int, ingress_address: str | None, state_dir: str, demo: bool
) -> int:
    """Dev server, worker and ingress (and with `demo` the sandboxes) until Ctrl-C."""
    from remedium.connection import embedded
    from remedium.devserver import DevServer
    from remedium.ingress.app import require_webhook_auth
    from remedium.ingress.serve import bind_ingress, connect_client, serve_ingress
    from remedium.worker import load_configuration, running_worker

    overrides: dict[str, Any] = {}
    if ingress_address:
        overrides["ingress_address"] = ingress_address
    settings = Settings.load(**overrides)
    state = Path(state_dir)
    sandboxes: Sandboxes | None = None
    kept: list[str] = []
    if demo:
        settings, sandboxes, kept = _start_sandboxes(settings, state, ui_port)
    server = DevServer(state, temporal_port, ui_port)
    sock = None
    try:
        # Validate configuration before starting anything, so a bad runbook leaves nothing behind.
        load_configuration(settings)
        require_webhook_auth(settings)
        sock = bind_ingress(settings)
        stop = _stop_on_signals()
        try:
            await server.start()
        except DevServerError as exc:
            raise CommandError(str(exc)) from None
    except (StartupError, ValueError) as exc:
        _abandon(sandboxes, sock)
        raise CommandError(str(exc)) from None
    except BaseException:
        _abandon(sandboxes, sock)
        raise
    try:
        settings = embedded(settings, server.address)  # plain gRPC: TEMPORAL_* is for real clusters
        async with running_worker(settings):
            provider = connect_client(settings)
            await provider()  # connected before the endpoints are printed: printed means ready
            ingress_task = asyncio.create_task(serve_ingress(settings, provider, stop, sock))
            _print_endpoints(server, settings, sandboxes, state, kept)
            stop_task = asyncio.create_task(stop.wait())
            await asyncio.wait({ingress_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            stop.set()
            await ingress_task
            stop_task.cancel()
    except (StartupError, TemporalUnreachable, ValueError) as exc:
        raise CommandError(str(exc)) from None
    finally:
        await server.stop()
        _abandon(sandboxes, sock)
        print("remedium stopped.", flush=True)
    return 0

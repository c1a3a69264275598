"""Build the worker's live clients from settings, once, and close them on shutdown.

Each external system's module owns its client factory (`activities/<system>.py`); this is
the one place that calls them, so activities receive clients and never read globals.
A system whose settings are absent gets None and its actions fail with a clear message.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx

from activities.registry import Clients
from remedium.settings import Settings

log = logging.getLogger("remedium.worker")

# (Clients field, module, factory) — a module not present yet simply leaves its field None.
FACTORIES = (
    ("prometheus", "activities.prometheus", "prometheus_http_client"),
    ("loki", "activities.loki", "loki_http_client"),
    ("kubernetes", "activities.kubernetes", "kubernetes_api_client"),
    ("slack", "activities.slack", "slack_web_client"),
    ("jira", "activities.jira", "jira_connector"),
    ("pagerduty", "activities.pagerduty", "pagerduty_http_client"),
)


def _factory(module: str, name: str) -> Callable[[Settings], Any] | None:
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise
    factory = getattr(loaded, name, None)
    return factory if callable(factory) else None


async def _close(value: Any) -> None:
    for method in ("aclose", "close"):
        closer = getattr(value, method, None)
        if callable(closer):
            result = closer()
            if inspect.isawaitable(result):
                await result
            return


@asynccontextmanager
async def open_clients(settings: Settings) -> AsyncIterator[Clients]:
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0)))
        built: dict[str, Any] = {}
        for field, module, name in FACTORIES:
            factory = _factory(module, name)
            value = factory(settings) if factory is not None else None
            if value is not None:
                built[field] = value
                if field != "jira":  # a lazy connector, nothing to close
                    stack.push_async_callback(_close, value)
        log.info("integrations configured: %s", ", ".join(sorted(built)) or "none")
        yield Clients(
            http=http,
            slack_channel=settings.slack_channel,
            jira_project=settings.jira_project,
            pagerduty_from=settings.pagerduty_from,
            temporal_ui_url=settings.temporal_ui_url,
            **built,
        )


def configured_channels(clients: Clients, available: list[str]) -> list[str]:
    """Report channels that have both a registered reporter and the settings to use it."""
    ready = {
        "slack": clients.slack is not None and bool(clients.slack_channel),
        "jira": clients.jira is not None and bool(clients.jira_project),
        "pagerduty": clients.pagerduty is not None,
    }
    return [channel for channel in available if ready.get(channel, False)]

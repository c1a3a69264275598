"""What the three webhook routers share: the body limit, the metrics and the one way to refuse.

Every refusal goes through `refuse`, so a 4xx is always counted, logged and answered with the
same `{"error": ...}` body whichever source sent it; `unavailable` is the same for a 503.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, generate_latest
from pydantic import SecretStr
from temporalio.client import Client

from remedium.errors import BodyTooLarge, MalformedInput
from remedium.models.limits import MAX_JSON_DEPTH, depth_problem

log = logging.getLogger("remedium.ingress")

ClientProvider = Callable[[], Awaitable[Client]]
"""Connects to Temporal on first use, so the ingress can start (and refuse) without it."""


class IngressMetrics:
    """The ingress's own registry: one per app, so several apps in one process never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._webhooks = Counter(
            "remedium_webhooks",
            "Webhook deliveries by source and outcome",
            ["source", "outcome"],
            registry=self.registry,
        )
        self._started = Counter(
            "remedium_incidents_started", "Incident workflows started", ["source"], registry=self.registry
        )

    def delivered(self, source: str, outcome: str) -> None:
        self._webhooks.labels(source, outcome).inc()

    def started(self, source: str) -> None:
        self._started.labels(source).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def secret_value(secret: SecretStr | None) -> str:
    """The secret's text, or "" when unset: the routers only ask whether one is configured."""
    return secret.get_secret_value() if secret else ""


async def read_bounded(request: Request, limit: int) -> bytes:
    """The raw body, refusing early on a declared or streamed size over the limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def load_json(body: bytes, malformed: type[MalformedInput]) -> Any:
    """The body as JSON, or `malformed` saying why not: too deep, not UTF-8, not JSON.

    Depth is checked first, on the raw bytes: Python's parser recurses once per level and a
    body nested a thousand deep would otherwise end in a RecursionError (a 500).
    """
    problem = depth_problem(body)
    if problem is not None:
        raise malformed(problem)
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise malformed("body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise malformed(f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # cannot happen below MAX_JSON_DEPTH; never a 500 if it does
        raise malformed(f"JSON nested deeper than {MAX_JSON_DEPTH}") from None


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def refuse(
    metrics: IngressMetrics,
    source: str,
    status: int,
    outcome: str,
    message: str,
    *,
    what: str = "webhook",
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """Count, log and answer a refused request; `what` names it in the log ("webhook", "interaction")."""
    metrics.delivered(source, outcome)
    log.info("%s %s refused (%d): %s", source, what, status, message)
    response = error(status, message)
    response.headers.update(headers or {})
    return response


def unavailable(metrics: IngressMetrics, source: str, subject: str, exc: Exception) -> JSONResponse:
    """A 503 for Temporal being unreachable or refusing: the one answer the senders retry."""
    log.error("cannot hand %s to Temporal: %s", subject, exc)
    metrics.delivered(source, "unavailable")
    return error(503, f"Temporal unavailable: {exc}")

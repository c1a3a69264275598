"""The ingress ASGI app: authenticate, bound, parse, then start or signal an incident.

Checks run cheapest-first and nothing reaches Temporal until all pass, so a rejected request
starts nothing. Temporal being down is a 503, which PagerDuty retries; our 4xx it does not.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

from remedium.incidents import signal_external_update, start_incident
from remedium.ingress.pagerduty import MalformedEvent, parse_event, verify_signature
from remedium.settings import Settings

log = logging.getLogger("remedium.ingress")

ClientProvider = Callable[[], Awaitable[Client]]


class BodyTooLarge(Exception):
    pass


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


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(settings: Settings, client: ClientProvider) -> FastAPI:
    """Build the app; refuses to build without webhook secrets unless insecure mode is explicit."""
    secrets = settings.pagerduty_secrets()
    if not secrets and not settings.insecure_webhooks:
        raise ValueError(
            "REMEDIUM_PAGERDUTY_WEBHOOK_SECRET is not set; set it, or set REMEDIUM_INSECURE_WEBHOOKS=1 "
            "to accept unsigned webhooks (never in production)"
        )
    if settings.insecure_webhooks:
        log.warning(
            "!!! INSECURE: webhook signatures are NOT checked (REMEDIUM_INSECURE_WEBHOOKS=1). "
            "Anyone who can reach %s can start incidents. Never run this in production. !!!",
            settings.ingress_address,
        )
    registry = CollectorRegistry()
    webhooks = Counter(
        "remedium_webhooks",
        "Webhook deliveries by source and outcome",
        ["source", "outcome"],
        registry=registry,
    )
    started = Counter(
        "remedium_incidents_started", "Incident workflows started", ["source"], registry=registry
    )
    limit = settings.max_webhook_bytes
    app = FastAPI(title="Remedium ingress", docs_url=None, redoc_url=None, openapi_url=None)

    def reject(status: int, outcome: str, message: str) -> JSONResponse:
        webhooks.labels("pagerduty", outcome).inc()
        log.info("pagerduty webhook refused (%d): %s", status, message)
        return _error(status, message)

    @app.post("/webhooks/pagerduty")
    async def pagerduty(request: Request) -> Response:
        try:
            body = await read_bounded(request, limit)
        except BodyTooLarge:
            return reject(413, "too_large", f"body over {limit} bytes")
        if secrets and not verify_signature(body, request.headers.get("x-pagerduty-signature"), secrets):
            missing = "x-pagerduty-signature" not in request.headers
            return reject(401, "unauthorized", "missing signature" if missing else "signature does not match")
        try:
            event = parse_event(body)
        except MalformedEvent as exc:
            return reject(400, "malformed", str(exc))
        reply: dict[str, Any] = {}  # the contract's exact shape for incident.triggered
        try:
            if event.alert is not None:
                was_started = await start_incident(await client(), settings.task_queue, event.alert)
                reply.update(workflow_id=event.alert.workflow_id, started=was_started)
                if was_started:
                    started.labels("pagerduty").inc()
                outcome = "started" if was_started else "duplicate"
            elif event.update is not None and event.workflow_id is not None:
                signaled = await signal_external_update(await client(), event.workflow_id, event.update)
                reply.update(workflow_id=event.workflow_id, event_type=event.event_type, signaled=signaled)
                outcome = "signaled" if signaled else "no_incident"
            else:
                reply.update(event_type=event.event_type, ignored=f"{event.event_type} needs no action")
                outcome = "ignored"
        except Exception as exc:  # Temporal unreachable or refusing: let PagerDuty retry
            log.error("cannot hand %s %s to Temporal: %s", event.event_type, event.event_id, exc)
            webhooks.labels("pagerduty", "unavailable").inc()
            return _error(503, f"Temporal unavailable: {exc}")
        webhooks.labels("pagerduty", outcome).inc()
        return JSONResponse(reply, status_code=202)

    @app.get("/healthz")
    async def healthz() -> Response:
        try:
            temporal = await client()
            await temporal.workflow_service.get_system_info(
                GetSystemInfoRequest(), timeout=timedelta(seconds=3)
            )
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "temporal": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "temporal": settings.temporal_address})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app

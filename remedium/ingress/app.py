"""The ingress ASGI app: authenticate, bound, parse, then start or signal an incident.

Checks run cheapest-first and nothing reaches Temporal until all pass, so a rejected request
starts nothing. Temporal being down is a 503, which PagerDuty and Alertmanager retry; our 4xx
they do not. Slack clicks are the exception: acknowledged at once, applied in the background.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from slack_sdk.signature import Clock
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

from remedium.incidents import signal_external_update, start_incident
from remedium.ingress import alertmanager, slack
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


def require_webhook_auth(settings: Settings) -> list[bytes]:
    """The PagerDuty secrets; without any, insecure mode must be explicit."""
    secrets = settings.pagerduty_secrets()
    if not secrets and not settings.insecure_webhooks:
        raise ValueError(
            "REMEDIUM_PAGERDUTY_WEBHOOK_SECRET is not set; set it, or set REMEDIUM_INSECURE_WEBHOOKS=1 "
            "to accept unsigned webhooks (never in production)"
        )
    return secrets


def create_app(settings: Settings, client: ClientProvider, *, slack_clock: Clock | None = None) -> FastAPI:
    """Build the app; refuses to build without webhook secrets unless insecure mode is explicit.

    Only the PagerDuty secret is required to start: the Alertmanager and Slack routes answer 401
    saying what is not configured. `slack_clock` replaces real time for the Slack replay window.
    """
    secrets = require_webhook_auth(settings)
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

    am_token = settings.alertmanager_token.get_secret_value() if settings.alertmanager_token else ""

    def am_reject(status: int, outcome: str, message: str) -> JSONResponse:
        webhooks.labels("alertmanager", outcome).inc()
        log.info("alertmanager webhook refused (%d): %s", status, message)
        response = _error(status, message)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="remedium"'
        return response

    @app.post("/webhooks/alertmanager")
    async def alertmanager_webhook(request: Request) -> Response:
        if not am_token and not settings.insecure_webhooks:
            return am_reject(
                401,
                "not_configured",
                "REMEDIUM_ALERTMANAGER_TOKEN is not configured on this ingress; set it and send it "
                "from the receiver's http_config.authorization as a Bearer token",
            )
        if am_token:
            header = request.headers.get("authorization")
            if not alertmanager.bearer_matches(header, am_token):
                why = "bearer token does not match" if header else "missing bearer token"
                return am_reject(401, "unauthorized", why)
        try:
            body = await read_bounded(request, limit)
        except BodyTooLarge:
            return am_reject(413, "too_large", f"body over {limit} bytes")
        try:
            message = alertmanager.parse_message(body)
        except alertmanager.MalformedMessage as exc:
            return am_reject(400, "malformed", str(exc))
        if message.truncated_alerts:
            log.warning(
                "alertmanager group %s dropped %d alert(s) (receiver max_alerts): they open no incident",
                message.group_key,
                message.truncated_alerts,
            )
        try:
            outcomes = await alertmanager.deliver(await client(), settings.task_queue, message)
        except Exception as exc:  # Temporal unreachable or refusing: let Alertmanager retry
            log.error("cannot hand alertmanager group %s to Temporal: %s", message.group_key, exc)
            webhooks.labels("alertmanager", "unavailable").inc()
            return _error(503, f"Temporal unavailable: {exc}")
        for outcome in outcomes:
            if outcome.get("started"):
                started.labels("alertmanager").inc()
                webhooks.labels("alertmanager", "started").inc()
            elif "started" in outcome:
                webhooks.labels("alertmanager", "duplicate").inc()
            else:
                webhooks.labels("alertmanager", "signaled" if outcome["signaled"] else "no_incident").inc()
        reply = {"group_key": message.group_key, "status": message.status, "alerts": outcomes}
        return JSONResponse(reply, status_code=202)

    slack_secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    interactions = slack.SlackInteractions(slack_secret, client, clock=slack_clock)
    app.state.slack_interactions = interactions

    def slack_reject(status: int, outcome: str, message: str) -> JSONResponse:
        webhooks.labels("slack", outcome).inc()
        log.info("slack interaction refused (%d): %s", status, message)
        return _error(status, message)

    @app.post("/webhooks/slack/interactions")
    async def slack_interactions(request: Request) -> Response:
        if not slack_secret and not settings.insecure_webhooks:
            return slack_reject(
                401,
                "not_configured",
                "REMEDIUM_SLACK_SIGNING_SECRET is not configured on this ingress; set it to the Slack "
                "app's signing secret to accept button clicks",
            )
        try:
            body = await read_bounded(request, limit)
        except BodyTooLarge:
            return slack_reject(413, "too_large", f"body over {limit} bytes")
        try:
            interactions.authenticate(body, request.headers)
        except slack.Unauthorized as exc:
            return slack_reject(401, "unauthorized", str(exc))
        try:
            click = slack.parse_click(body)
        except slack.MalformedInteraction as exc:
            return slack_reject(400, "malformed", str(exc))
        if click is None:
            webhooks.labels("slack", "ignored").inc()
        elif interactions.accept(click):
            webhooks.labels("slack", "accepted").inc()
        else:
            webhooks.labels("slack", "duplicate").inc()
        return Response(status_code=200)  # Slack's acknowledgement: an empty 200, at once

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

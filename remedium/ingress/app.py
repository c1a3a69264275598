"""The ingress ASGI app: one router per source, plus /healthz and /metrics.

Each router checks cheapest-first and nothing reaches Temporal until all checks pass, so a
rejected request starts nothing. Temporal being down is a 503, which PagerDuty and Alertmanager
retry; our 4xx they do not. Slack clicks are the exception: acknowledged at once, applied in
the background.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from slack_sdk.signature import Clock
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from remedium.ingress import alertmanager, pagerduty, slack
from remedium.ingress.common import ClientProvider as ClientProvider  # re-exported for serve.py
from remedium.ingress.common import IngressMetrics, log, secret_value
from remedium.settings import Settings


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
    metrics = IngressMetrics()
    app = FastAPI(title="Remedium ingress", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(pagerduty.router(settings, client, metrics, secrets))
    app.include_router(alertmanager.router(settings, client, metrics))
    interactions = slack.SlackInteractions(
        secret_value(settings.slack_signing_secret) or None, client, clock=slack_clock
    )
    app.state.slack_interactions = interactions  # serve_ingress drains clicks in flight on shutdown
    app.include_router(slack.router(settings, interactions, metrics))

    @app.get("/healthz")
    async def healthz() -> Response:
        try:
            temporal = await client()
            await temporal.workflow_service.get_system_info(
                GetSystemInfoRequest(), timeout=timedelta(seconds=3)
            )
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "temporal": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "temporal": temporal.service_client.config.target_host})

    @app.get("/metrics")
    async def metrics_text() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app

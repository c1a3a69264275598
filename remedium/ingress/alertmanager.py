"""Alertmanager webhooks (payload version 4): bearer-token check, alert normalisation, the route.

Alertmanager signs nothing; the receiver's `http_config.authorization` sends a bearer token,
compared here in constant time. One incident per alert fingerprint (a hash of the labels),
opened while it fires; a `resolved` notification reaches the running incident as a signal.
Repeats are normal (every `repeat_interval`, and on every change in the group), so each alert
is keyed by fingerprint plus `startsAt`: the same firing episode never starts twice.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from temporalio.client import Client

from remedium.errors import BodyTooLarge, MalformedInput
from remedium.incidents import signal_external_update, start_alert_episode
from remedium.ingress.common import (
    ClientProvider,
    IngressMetrics,
    log,
    read_bounded,
    refuse,
    secret_value,
    unavailable,
)
from remedium.models import Alert, ExternalUpdate
from remedium.names import incident_workflow_id
from remedium.settings import Settings

SOURCE = "alertmanager"

# Label names tried in order for the alert's service: an explicit `service` label first, then
# the usual Kubernetes `app`, then Prometheus' scrape `job`, then the namespace as a last resort.
SERVICE_LABELS = ("service", "app", "job", "namespace")


class MalformedMessage(MalformedInput):
    """The body is not an Alertmanager v4 webhook; the message says what is wrong."""


class _Lenient(BaseModel):
    # Alertmanager adds fields over time; unknown ones are ignored, known ones are checked.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class AlertmanagerAlert(_Lenient):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = Field(pattern=r"^[0-9a-fA-F]{1,64}$")

    @property
    def workflow_id(self) -> str:
        return incident_workflow_id(SOURCE, self.fingerprint)

    @property
    def episode(self) -> str:
        """What makes two deliveries the same firing: the fingerprint and when it started."""
        return f"{self.fingerprint}@{self.starts_at.isoformat()}"


class AlertmanagerMessage(_Lenient):
    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str = ""
    alerts: list[AlertmanagerAlert]
    group_key: str = Field(default="", alias="groupKey")
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    external_url: str = Field(default="", alias="externalURL")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts")


def bearer_matches(header: str | None, token: str) -> bool:
    """True when `Authorization: Bearer <token>` carries exactly the token (constant time)."""
    if not header:
        return False
    scheme, _, offered = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(offered.strip().encode(), token.encode())


def _location(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path.lstrip(".") or "body"


def parse_message(body: bytes) -> AlertmanagerMessage:
    try:
        document: Any = json.loads(body)
    except UnicodeDecodeError:
        raise MalformedMessage("body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise MalformedMessage(f"body is not JSON: {exc.msg} at {where}") from None
    if not isinstance(document, dict):
        raise MalformedMessage("body must be a JSON object (Alertmanager webhook version 4)")
    try:
        return AlertmanagerMessage.model_validate(document)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise MalformedMessage(f"{_location(first['loc'])}: {first['msg']}{more}") from None


def to_alert(alert: AlertmanagerAlert) -> Alert:
    """The normalised alert: title from the summary annotation, else the alert name."""
    labels, annotations = alert.labels, alert.annotations
    service = next((labels[name] for name in SERVICE_LABELS if labels.get(name)), "")
    title = annotations.get("summary") or labels.get("alertname") or f"alert {alert.fingerprint}"
    return Alert(
        source=SOURCE,
        id=alert.fingerprint,
        title=title,
        service=service,
        severity=labels.get("severity", ""),
        labels=dict(labels),
        annotations=dict(annotations),
        url=alert.generator_url or None,
        started_at=alert.starts_at,
    )


def resolved_update(alert: AlertmanagerAlert) -> ExternalUpdate:
    ended = f" at {alert.ends_at.isoformat()}" if alert.ends_at and alert.ends_at.year > 1 else ""
    return ExternalUpdate(
        event="resolved",
        source=SOURCE,
        note=f"alert {alert.labels.get('alertname', alert.fingerprint)} resolved{ended}",
    )


async def deliver(client: Client, task_queue: str, message: AlertmanagerMessage) -> list[dict[str, Any]]:
    """Start or signal one incident per alert, in the delivery's order.

    Any Temporal error propagates, so the whole delivery is answered 5xx and Alertmanager
    retries it; alerts already handled are repeats by then and start nothing.
    """

    async def one(alert: AlertmanagerAlert) -> dict[str, Any]:
        outcome: dict[str, Any] = {
            "fingerprint": alert.fingerprint,
            "workflow_id": alert.workflow_id,
            "status": alert.status,
        }
        if alert.status == "firing":
            outcome["started"] = await start_alert_episode(client, task_queue, to_alert(alert), alert.episode)
        else:
            outcome["signaled"] = await signal_external_update(
                client, alert.workflow_id, resolved_update(alert)
            )
        return outcome

    results = await asyncio.gather(*(one(alert) for alert in message.alerts), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [result for result in results if not isinstance(result, BaseException)]


NOT_CONFIGURED = (
    "REMEDIUM_ALERTMANAGER_TOKEN is not configured on this ingress; set it and send it "
    "from the receiver's http_config.authorization as a Bearer token"
)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="remedium"'}


def count_outcomes(metrics: IngressMetrics, outcomes: list[dict[str, Any]]) -> None:
    """One webhook outcome per alert of the delivery, and a start for each new incident."""
    for outcome in outcomes:
        if outcome.get("started"):
            metrics.started(SOURCE)
            metrics.delivered(SOURCE, "started")
        elif "started" in outcome:
            metrics.delivered(SOURCE, "duplicate")
        else:
            metrics.delivered(SOURCE, "signaled" if outcome["signaled"] else "no_incident")


def router(settings: Settings, client: ClientProvider, metrics: IngressMetrics) -> APIRouter:
    """`POST /webhooks/alertmanager`: the token before the body is read, then size, then parsing."""
    routes = APIRouter()
    token = secret_value(settings.alertmanager_token)
    limit = settings.max_webhook_bytes

    def reject(status: int, outcome: str, message: str) -> JSONResponse:
        headers = _CHALLENGE if status == 401 else None
        return refuse(metrics, SOURCE, status, outcome, message, headers=headers)

    @routes.post("/webhooks/alertmanager")
    async def alertmanager_webhook(request: Request) -> Response:
        if not token and not settings.insecure_webhooks:
            return reject(401, "not_configured", NOT_CONFIGURED)
        if token:
            header = request.headers.get("authorization")
            if not bearer_matches(header, token):
                why = "bearer token does not match" if header else "missing bearer token"
                return reject(401, "unauthorized", why)
        try:
            body = await read_bounded(request, limit)
        except BodyTooLarge:
            return reject(413, "too_large", f"body over {limit} bytes")
        try:
            message = parse_message(body)
        except MalformedMessage as exc:
            return reject(400, "malformed", str(exc))
        if message.truncated_alerts:
            log.warning(
                "alertmanager group %s dropped %d alert(s) (receiver max_alerts): they open no incident",
                message.group_key,
                message.truncated_alerts,
            )
        try:
            outcomes = await deliver(await client(), settings.task_queue, message)
        except Exception as exc:  # Temporal unreachable or refusing: let Alertmanager retry
            return unavailable(metrics, SOURCE, f"alertmanager group {message.group_key}", exc)
        count_outcomes(metrics, outcomes)
        reply = {"group_key": message.group_key, "status": message.status, "alerts": outcomes}
        return JSONResponse(reply, status_code=202)

    return routes

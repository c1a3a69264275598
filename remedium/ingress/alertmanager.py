"""Alertmanager webhooks (payload version 4): bearer-token check, alert normalisation, the route.

Alertmanager signs nothing; the receiver's `http_config.authorization` sends a bearer token,
compared here in constant time. One incident per alert fingerprint (a hash of the labels),
opened while it fires; a `resolved` notification reaches the running incident as a signal.
Repeats are normal (every `repeat_interval`, and on every change in the group), so each alert
is keyed by fingerprint plus `startsAt`: the same firing episode never starts twice.

Each alert of a group is checked on its own (fingerprint, schema, the service and severity
that become search attributes): the good ones are handled, the others are named in a 400.
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails
from temporalio.client import Client

from remedium.errors import BodyTooLarge, MalformedInput
from remedium.incidents import load_priority, signal_external_update, start_alert_episode
from remedium.ingress.common import (
    ClientProvider,
    IngressMetrics,
    load_json,
    log,
    read_bounded,
    refuse,
    secret_value,
    unavailable,
)
from remedium.models import Alert, ExternalUpdate
from remedium.models.limits import (
    FINGERPRINT,
    FINGERPRINT_RULE,
    SERVICE_MAX_CHARS,
    SEVERITY_MAX_CHARS,
    bound_alert,
    bound_update,
    id_problem,
    keyword_problem,
)
from remedium.models.policy import PriorityPolicy
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
    fingerprint: str

    @field_validator("fingerprint")
    @classmethod
    def _an_id(cls, value: str) -> str:
        """It becomes the workflow id: hex digits only, so no path, query or control character."""
        if id_problem(value, FINGERPRINT, FINGERPRINT_RULE) is not None:
            raise ValueError(FINGERPRINT_RULE)
        return value

    @property
    def workflow_id(self) -> str:
        return incident_workflow_id(SOURCE, self.fingerprint)

    @property
    def episode(self) -> str:
        """What makes two deliveries the same firing: the fingerprint and when it started."""
        return f"{self.fingerprint}@{self.starts_at.isoformat()}"


class _Envelope(_Lenient):
    """The notification without its alerts, which are checked one by one."""

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str = ""
    alerts: list[Any]
    group_key: str = Field(default="", alias="groupKey")
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    external_url: str = Field(default="", alias="externalURL")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts")


@dataclass(frozen=True)
class RejectedAlert:
    """One alert of a delivery that can never be handled: where it is and what is wrong with it."""

    index: int
    fingerprint: str | None  # None when the fingerprint itself is what is wrong
    error: str  # `alerts[3].labels.service: ...`

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "fingerprint": self.fingerprint, "error": self.error}


@dataclass(frozen=True)
class AlertmanagerMessage:
    """A delivery: the alerts that can be handled, in delivery order, and those refused."""

    status: str
    group_key: str
    truncated_alerts: int
    alerts: list[AlertmanagerAlert]
    rejected: list[RejectedAlert]


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


def _problem(error: ErrorDetails, within: str = "") -> str:
    """`where: what`, with our own validators' sentences as written (no "Value error, ")."""
    cause = (error.get("ctx") or {}).get("error")
    what = str(cause) if error["type"] == "value_error" and cause is not None else error["msg"]
    where = _location(error["loc"]) if error["loc"] or not within else ""
    return f"{'.'.join(part for part in (within, where) if part)}: {what}"


def service_label(labels: dict[str, str]) -> tuple[str, str]:
    """The label the service is read from, and its value; ("", "") when there is none."""
    return next(((name, labels[name]) for name in SERVICE_LABELS if labels.get(name)), ("", ""))


def _keyword_problem(alert: AlertmanagerAlert) -> str | None:
    """A firing alert's service or severity that cannot be a search attribute: where and why."""
    name, service = service_label(alert.labels)
    if (problem := keyword_problem(service, SERVICE_MAX_CHARS, "IncidentService")) is not None:
        return f"labels.{name}: {problem}"
    severity = alert.labels.get("severity", "")
    if (problem := keyword_problem(severity, SEVERITY_MAX_CHARS, "IncidentSeverity")) is not None:
        return f"labels.severity: {problem}"
    return None


def _check_alert(index: int, raw: Any) -> AlertmanagerAlert | RejectedAlert:
    where = f"alerts[{index}]"
    fingerprint = raw.get("fingerprint") if isinstance(raw, dict) else None
    shown = fingerprint if isinstance(fingerprint, str) and FINGERPRINT.fullmatch(fingerprint) else None
    try:
        alert = AlertmanagerAlert.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        return RejectedAlert(index, shown, _problem(errors[0], within=where) + more)
    if alert.status == "firing" and (problem := _keyword_problem(alert)) is not None:
        return RejectedAlert(index, shown, f"{where}.{problem}")
    return alert


def parse_message(body: bytes) -> AlertmanagerMessage:
    """The delivery with each alert checked on its own, so one bad alert never holds up the others.

    Raises MalformedMessage when the envelope itself is wrong (not JSON, too deep, version).
    """
    document: Any = load_json(body, MalformedMessage)
    if not isinstance(document, dict):
        raise MalformedMessage("body must be a JSON object (Alertmanager webhook version 4)")
    try:
        envelope = _Envelope.model_validate(document)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise MalformedMessage(f"{_problem(first)}{more}") from None
    accepted: list[AlertmanagerAlert] = []
    rejected: list[RejectedAlert] = []
    for index, raw in enumerate(envelope.alerts):
        checked = _check_alert(index, raw)
        if isinstance(checked, RejectedAlert):
            rejected.append(checked)
        else:
            accepted.append(checked)
    return AlertmanagerMessage(
        status=envelope.status,
        group_key=envelope.group_key,
        truncated_alerts=envelope.truncated_alerts,
        alerts=accepted,
        rejected=rejected,
    )


def to_alert(alert: AlertmanagerAlert) -> Alert:
    """The normalised alert within the input limits: title from the summary, else the alert name."""
    labels, annotations = alert.labels, alert.annotations
    service = service_label(labels)[1]
    title = annotations.get("summary") or labels.get("alertname") or f"alert {alert.fingerprint}"
    return bound_alert(
        Alert(
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
    )


def resolved_update(alert: AlertmanagerAlert) -> ExternalUpdate:
    ended = f" at {alert.ends_at.isoformat()}" if alert.ends_at and alert.ends_at.year > 1 else ""
    return bound_update(
        ExternalUpdate(
            event="resolved",
            source=SOURCE,
            note=f"alert {alert.labels.get('alertname', alert.fingerprint)} resolved{ended}",
        )
    )


async def deliver(
    client: Client,
    task_queue: str,
    message: AlertmanagerMessage,
    priority: PriorityPolicy | None = None,
) -> list[dict[str, Any]]:
    """Start or signal one incident per accepted alert, in the delivery's order.

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
            outcome["started"] = await start_alert_episode(
                client, task_queue, to_alert(alert), alert.episode, priority
            )
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


def refuse_alerts(
    metrics: IngressMetrics, message: AlertmanagerMessage, outcomes: list[dict[str, Any]]
) -> JSONResponse:
    """400 for a delivery with alerts that can never be handled, after the others were.

    Why 400 even when most alerts started: Alertmanager retries only 5xx, and a retry cannot
    fix these alerts, so the answer must be 4xx. A 2xx would end the matter silently on the
    sender's side; a 4xx puts this body in Alertmanager's log ("unexpected status code 400:
    ...") and in `alertmanager_notifications_failed_total`, where the people who own the
    alert rule look. The next notification of the group (group_interval) sends the alerts
    again; those handled are repeats then and start nothing.
    """
    rejected = message.rejected
    for refused in rejected:
        metrics.delivered(SOURCE, "malformed")
        log.info("alertmanager alert refused (400): %s", refused.error)
    total = len(rejected) + len(message.alerts)
    if message.alerts:
        summary = (
            f"{rejected[0].error} ({len(rejected)} of {total} alert(s) refused; "
            f'the other {len(message.alerts)} were handled, see "alerts")'
        )
    else:
        summary = rejected[0].error + (
            f" (and {len(rejected) - 1} more alert(s) refused)" if len(rejected) > 1 else ""
        )
    reply = {
        "error": summary,
        "group_key": message.group_key,
        "status": message.status,
        "alerts": outcomes,
        "rejected": [refused.as_json() for refused in rejected],
    }
    return JSONResponse(reply, status_code=400)


def router(settings: Settings, client: ClientProvider, metrics: IngressMetrics) -> APIRouter:
    """`POST /webhooks/alertmanager`: the token before the body is read, then size, then parsing."""
    routes = APIRouter()
    token = secret_value(settings.alertmanager_token)
    limit = settings.max_webhook_bytes
    priority = load_priority(settings.policy_file)  # urgent incidents start on the reserved queue

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
        if message.rejected and not message.alerts:  # nothing to hand to Temporal
            return refuse_alerts(metrics, message, [])
        try:
            outcomes = await deliver(await client(), settings.task_queue, message, priority)
        except Exception as exc:  # Temporal unreachable or refusing: let Alertmanager retry
            return unavailable(metrics, SOURCE, f"alertmanager group {message.group_key}", exc)
        count_outcomes(metrics, outcomes)
        if message.rejected:
            return refuse_alerts(metrics, message, outcomes)
        reply = {"group_key": message.group_key, "status": message.status, "alerts": outcomes}
        return JSONResponse(reply, status_code=202)

    return routes

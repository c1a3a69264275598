"""PagerDuty Webhooks V3: signature check over the raw body, event parsing, and the route.

Signature: `X-PagerDuty-Signature: v1=<hex>[,v1=<hex>...]`, HMAC-SHA256 of the raw body with
the subscription secret; during a rotation there is one entry per secret and any match is
enough. Nothing is timestamped, so duplicates are handled by workflow id, not by a window.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from remedium.errors import BodyTooLarge, MalformedInput
from remedium.incidents import load_priority, signal_external_update, start_incident
from remedium.ingress.common import (
    ClientProvider,
    IngressMetrics,
    load_json,
    read_bounded,
    refuse,
    unavailable,
)
from remedium.models import Alert, ExternalUpdate
from remedium.models.limits import (
    PAGERDUTY_ID,
    PAGERDUTY_ID_RULE,
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

SOURCE = "pagerduty"

LIFECYCLE = {
    "incident.resolved": "resolved",
    "incident.acknowledged": "acknowledged",
    "incident.annotated": "annotated",
    "incident.reopened": "reopened",
}


class MalformedEvent(MalformedInput):
    """The body is not a PagerDuty V3 event we can act on; the message says what is wrong."""


@dataclass(frozen=True)
class PagerDutyEvent:
    event_id: str
    event_type: str
    incident_id: str | None
    alert: Alert | None = None  # set for incident.triggered
    update: ExternalUpdate | None = None  # set for lifecycle events

    @property
    def workflow_id(self) -> str | None:
        return incident_workflow_id(SOURCE, self.incident_id) if self.incident_id else None


def sign(body: bytes, secret: bytes) -> str:
    return "v1=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secrets: list[bytes]) -> bool:
    """True when any `v1=` entry of the header is the HMAC of the body under any secret."""
    if not header or not secrets:
        return False
    offered = [part.strip()[3:] for part in header.split(",") if part.strip().startswith("v1=")]
    expected = [hmac.new(secret, body, hashlib.sha256).hexdigest() for secret in secrets]
    matched = False
    for candidate in offered:
        for digest in expected:
            # Compare every pair so timing says nothing about which entry matched.
            matched |= hmac.compare_digest(candidate.lower().encode(), digest.encode())
    return matched


def _field(obj: Any, path: str, kind: type, required: bool = True) -> Any:
    value: Any = obj
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value or value[key] is None:
            if required:
                raise MalformedEvent(f"missing field event.{path}")
            return None
        value = value[key]
    if not isinstance(value, kind):
        raise MalformedEvent(f"event.{path} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _summary(data: dict[str, Any], key: str) -> str:
    ref = data.get(key)
    if isinstance(ref, dict) and isinstance(ref.get("summary"), str):
        return str(ref["summary"])
    return ""


def _keyword(value: str, where: str, max_chars: int, attribute: str) -> str:
    """A value that becomes a search attribute: refused (400 naming it) when it cannot be one."""
    problem = keyword_problem(value, max_chars, attribute)
    if problem is not None:
        raise MalformedEvent(f"event.{where}: {problem}")
    return value


def _severity(data: dict[str, Any]) -> str:
    if priority := _summary(data, "priority"):
        return _keyword(priority, "data.priority.summary", SEVERITY_MAX_CHARS, "IncidentSeverity")
    return _keyword(str(data.get("urgency") or ""), "data.urgency", SEVERITY_MAX_CHARS, "IncidentSeverity")


def _alert(data: dict[str, Any], incident_id: str) -> Alert:
    """The incident as an Alert within the input limits: long text cut with a marker, never refused."""
    labels = {"urgency": str(data.get("urgency") or "")}
    for key in ("incident_key", "status"):
        if isinstance(data.get(key), str):
            labels[key] = data[key]
    if isinstance(data.get("number"), int):
        labels["number"] = str(data["number"])
    service_ref = data.get("service")
    if isinstance(service_ref, dict) and isinstance(service_ref.get("id"), str):
        labels["service_id"] = service_ref["id"]
    started_at = None
    if isinstance(data.get("created_at"), str):
        try:
            started_at = datetime.fromisoformat(data["created_at"].replace("Z", "+00:00"))
        except ValueError:
            raise MalformedEvent("event.data.created_at is not an ISO 8601 time") from None
    service = _keyword(
        _summary(data, "service"), "data.service.summary", SERVICE_MAX_CHARS, "IncidentService"
    )
    severity = _severity(data)
    try:
        alert = Alert(
            source=SOURCE,
            id=incident_id,
            title=str(data.get("title") or ""),
            service=service,
            severity=severity,
            labels={k: v for k, v in labels.items() if v},
            url=data.get("html_url") if isinstance(data.get("html_url"), str) else None,
            started_at=started_at,
        )
    except ValidationError as exc:
        raise MalformedEvent(f"incident is not usable: {exc.errors(include_url=False)[0]['msg']}") from None
    return bound_alert(alert)


def _incident_id(event: dict[str, Any], path: str) -> str:
    """The incident id, refused unless it is one: it becomes a workflow id and a REST API path."""
    incident_id = str(_field(event, path, str))
    if id_problem(incident_id, PAGERDUTY_ID, PAGERDUTY_ID_RULE) is not None:
        raise MalformedEvent(f"event.{path}: {PAGERDUTY_ID_RULE}")
    return incident_id


def parse_event(body: bytes) -> PagerDutyEvent:
    """Parse one V3 envelope; unknown event types parse fine and carry neither alert nor update."""
    document = load_json(body, MalformedEvent)
    if not isinstance(document, dict) or not isinstance(document.get("event"), dict):
        raise MalformedEvent('body must be a JSON object with an "event" object')
    event = document["event"]
    event_id = _field(event, "id", str)
    event_type = _field(event, "event_type", str)
    if not event_type.startswith("incident."):
        return PagerDutyEvent(event_id, event_type, None)
    data = _field(event, "data", dict)
    if data.get("type") == "incident_note":  # annotated: the incident is a reference inside the note
        incident_id = _incident_id(event, "data.incident.id")
    else:
        incident_id = _incident_id(event, "data.id")
    if event_type == "incident.triggered":
        return PagerDutyEvent(event_id, event_type, incident_id, alert=_alert(data, incident_id))
    lifecycle = LIFECYCLE.get(event_type)
    if lifecycle is None:
        return PagerDutyEvent(event_id, event_type, incident_id)
    agent = event.get("agent")
    by = str(agent.get("summary") or "") if isinstance(agent, dict) else ""
    note = ""
    if lifecycle == "annotated":
        note = str(data.get("content") or "")
    elif lifecycle == "resolved" and isinstance(data.get("resolve_reason"), str):
        note = data["resolve_reason"]
    update = bound_update(ExternalUpdate(event=lifecycle, by=by, note=note, source=SOURCE))
    return PagerDutyEvent(event_id, event_type, incident_id, update=update)


async def deliver(
    client: ClientProvider, task_queue: str, event: PagerDutyEvent, priority: PriorityPolicy | None = None
) -> tuple[dict[str, Any], str]:
    """Start or signal the incident: the 202 reply and the outcome label; Temporal errors propagate.

    The client is only asked for when the event needs Temporal, so an ignored event is
    answered even while Temporal is down.
    """
    if event.alert is not None:
        started = await start_incident(await client(), task_queue, event.alert, priority)
        reply = {"workflow_id": event.alert.workflow_id, "started": started}  # the contract's exact shape
        return reply, "started" if started else "duplicate"
    if event.update is not None and event.workflow_id is not None:
        signaled = await signal_external_update(await client(), event.workflow_id, event.update)
        reply = {"workflow_id": event.workflow_id, "event_type": event.event_type, "signaled": signaled}
        return reply, "signaled" if signaled else "no_incident"
    return {"event_type": event.event_type, "ignored": f"{event.event_type} needs no action"}, "ignored"


def router(
    settings: Settings, client: ClientProvider, metrics: IngressMetrics, secrets: list[bytes]
) -> APIRouter:
    """`POST /webhooks/pagerduty`: size, then signature, then parsing, before anything reaches Temporal.

    With no `secrets` (insecure mode, checked by the app) signatures are not checked.
    """
    routes = APIRouter()
    limit = settings.max_webhook_bytes
    priority = load_priority(settings.policy_file)  # urgent incidents start on the reserved queue

    @routes.post("/webhooks/pagerduty")
    async def pagerduty(request: Request) -> Response:
        try:
            body = await read_bounded(request, limit)
        except BodyTooLarge:
            return refuse(metrics, SOURCE, 413, "too_large", f"body over {limit} bytes")
        if secrets and not verify_signature(body, request.headers.get("x-pagerduty-signature"), secrets):
            missing = "x-pagerduty-signature" not in request.headers
            why = "missing signature" if missing else "signature does not match"
            return refuse(metrics, SOURCE, 401, "unauthorized", why)
        try:
            event = parse_event(body)
        except MalformedEvent as exc:
            return refuse(metrics, SOURCE, 400, "malformed", str(exc))
        try:
            reply, outcome = await deliver(client, settings.task_queue, event, priority)
        except Exception as exc:  # Temporal unreachable or refusing: let PagerDuty retry
            return unavailable(metrics, SOURCE, f"{event.event_type} {event.event_id}", exc)
        if outcome == "started":
            metrics.started(SOURCE)
        metrics.delivered(SOURCE, outcome)
        return JSONResponse(reply, status_code=202)

    return routes

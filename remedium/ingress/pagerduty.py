"""PagerDuty Webhooks V3: signature check over the raw body and event parsing.

Signature: `X-PagerDuty-Signature: v1=<hex>[,v1=<hex>...]`, HMAC-SHA256 of the raw body with
the subscription secret; during a rotation there is one entry per secret and any match is
enough. Nothing is timestamped, so duplicates are handled by workflow id, not by a window.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from remedium.models import Alert, ExternalUpdate

LIFECYCLE = {
    "incident.resolved": "resolved",
    "incident.acknowledged": "acknowledged",
    "incident.annotated": "annotated",
    "incident.reopened": "reopened",
}


class MalformedEvent(ValueError):
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
        return f"incident-pagerduty-{self.incident_id}" if self.incident_id else None


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


def _alert(data: dict[str, Any], incident_id: str) -> Alert:
    labels = {"urgency": str(data.get("urgency") or "")}
    for key in ("incident_key", "status"):
        if isinstance(data.get(key), str):
            labels[key] = data[key]
    if isinstance(data.get("number"), int):
        labels["number"] = str(data["number"])
    service = data.get("service")
    if isinstance(service, dict) and isinstance(service.get("id"), str):
        labels["service_id"] = service["id"]
    started_at = None
    if isinstance(data.get("created_at"), str):
        try:
            started_at = datetime.fromisoformat(data["created_at"].replace("Z", "+00:00"))
        except ValueError:
            raise MalformedEvent("event.data.created_at is not an ISO 8601 time") from None
    try:
        return Alert(
            source="pagerduty",
            id=incident_id,
            title=str(data.get("title") or ""),
            service=_summary(data, "service"),
            severity=_summary(data, "priority") or str(data.get("urgency") or ""),
            labels={k: v for k, v in labels.items() if v},
            url=data.get("html_url") if isinstance(data.get("html_url"), str) else None,
            started_at=started_at,
        )
    except ValidationError as exc:
        raise MalformedEvent(f"incident is not usable: {exc.errors(include_url=False)[0]['msg']}") from None


def parse_event(body: bytes) -> PagerDutyEvent:
    """Parse one V3 envelope; unknown event types parse fine and carry neither alert nor update."""
    try:
        document = json.loads(body)
    except UnicodeDecodeError:
        raise MalformedEvent("body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise MalformedEvent(f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(document, dict) or not isinstance(document.get("event"), dict):
        raise MalformedEvent('body must be a JSON object with an "event" object')
    event = document["event"]
    event_id = _field(event, "id", str)
    event_type = _field(event, "event_type", str)
    if not event_type.startswith("incident."):
        return PagerDutyEvent(event_id, event_type, None)
    data = _field(event, "data", dict)
    if data.get("type") == "incident_note":  # annotated: the incident is a reference inside the note
        incident_id = _field(event, "data.incident.id", str)
    else:
        incident_id = _field(event, "data.id", str)
    if not incident_id:
        raise MalformedEvent("event.data.id is empty")
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
    update = ExternalUpdate(event=lifecycle, by=by, note=note[:2000], source="pagerduty")
    return PagerDutyEvent(event_id, event_type, incident_id, update=update)

"""A signed PagerDuty V3 `incident.triggered` delivery, as PagerDuty would send it for the demo."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from remedium.errors import DemoError
from remedium.ingress.pagerduty import sign
from remedium.models import Alert


def triggered_delivery(alert: Alert, secret: str, html_url: str) -> tuple[bytes, dict[str, str]]:
    """Body and headers of the webhook for `alert` (its id is the PagerDuty incident id)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    data: dict[str, Any] = {
        "id": alert.id,
        "type": "incident",
        "self": f"https://api.pagerduty.com/incidents/{alert.id}",
        "html_url": html_url,
        "number": 1,
        "status": "triggered",
        "incident_key": f"demo-{alert.id}",
        "created_at": now,
        "title": alert.title,
        "service": {"id": "PDEMO01", "type": "service_reference", "summary": alert.service},
        "priority": {"id": "PPRIO01", "type": "priority_reference", "summary": alert.severity or "P2"},
        "urgency": "high",
    }
    event = {
        "event": {
            "id": str(uuid.uuid4()),
            "event_type": "incident.triggered",
            "resource_type": "incident",
            "occurred_at": now,
            "agent": None,
            "client": None,
            "data": data,
        }
    }
    body = json.dumps(event).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "PagerDuty-Webhook/V3.0",
        "X-Webhook-Id": str(uuid.uuid4()),
        "X-PagerDuty-Signature": sign(body, secret.encode()),
    }
    return body, headers


async def post_delivery(ingress: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """POST it to the ingress at `ingress` (host:port), waiting while the ingress binds its port."""
    async with httpx.AsyncClient(timeout=30.0) as http:
        for _ in range(100):
            try:
                return await http.post(f"http://{ingress}/webhooks/pagerduty", content=body, headers=headers)
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise DemoError(f"the ingress at {ingress} never answered")

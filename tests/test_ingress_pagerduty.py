"""The PagerDuty webhook through the real ingress (uvicorn) into a real Temporal dev server."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from remedium.errors import TemporalUnreachable
from remedium.ingress.app import create_app
from remedium.ingress.pagerduty import parse_event, sign, verify_signature
from remedium.ingress.serve import serve_ingress
from remedium.models import IncidentResult
from remedium.names import SA_SERVICE, SA_SEVERITY, SA_STAGE
from remedium.settings import Settings
from tests.support import TargetService, api_runbook, http_allow, settings_for, worker_for

VECTOR = json.loads(
    (
        Path(__file__).resolve().parents[2]
        / "shared"
        / "vectors"
        / "pagerduty_webhook_incident_triggered.json"
    ).read_text()
)
NEW, OLD = VECTOR["secrets"]["current"], VECTOR["secrets"]["previous_during_rotation"]
PD_HEADERS = {k: v for k, v in VECTOR["http"]["headers"].items() if k != "X-PagerDuty-Signature"}


def _free_address() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def event_body(incident_id: str, event_type: str = "incident.triggered", **data: Any) -> bytes:
    """The vector's event with another incident id / type; compact JSON like PagerDuty sends."""
    event = json.loads(VECTOR["raw_body"])["event"]
    event["id"] = str(uuid.uuid4())
    event["event_type"] = event_type
    event["data"].update(id=incident_id, **data)
    return json.dumps({"event": event}, separators=(",", ":")).encode()


def signed(body: bytes, *secrets: str) -> dict[str, str]:
    return {**PD_HEADERS, "X-PagerDuty-Signature": ",".join(sign(body, s.encode()) for s in secrets)}


@asynccontextmanager
async def ingress(
    client: Callable[[], Awaitable[Client]], secret: str | None = NEW, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        ingress_address=_free_address(),
        pagerduty_webhook_secret=SecretStr(secret) if secret else None,
        **overrides,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve_ingress(settings, client, stop))
    async with httpx.AsyncClient(base_url=f"http://{settings.ingress_address}", timeout=30) as http:
        for _ in range(100):
            try:
                await http.get("/metrics")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
        try:
            yield http
        finally:
            stop.set()
            await task


def provider(env: WorkflowEnvironment) -> Callable[[], Awaitable[Client]]:
    async def get() -> Client:
        return env.client

    return get


async def _exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        assert exc.status == RPCStatusCode.NOT_FOUND
        return False
    return True


def _uid(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8].upper()}"


def test_vector_signature_verifies_with_both_rotation_secrets_and_not_a_wrong_one() -> None:
    body = VECTOR["raw_body"].encode()
    header = VECTOR["http"]["headers"]["X-PagerDuty-Signature"]
    assert verify_signature(body, header, [NEW.encode()])
    assert verify_signature(body, header, [OLD.encode()])
    assert not verify_signature(body, header, [b"wrong-secret"])
    assert not verify_signature(body + b" ", header, [NEW.encode()])  # the raw body, byte for byte
    assert not verify_signature(body, None, [NEW.encode()])
    assert not verify_signature(body, "v0=" + sign(body, NEW.encode())[3:], [NEW.encode()])


def test_vector_parses_into_the_alert_the_runbooks_match() -> None:
    event = parse_event(VECTOR["raw_body"].encode())
    assert event.alert is not None
    assert event.alert.workflow_id == "incident-pagerduty-PGR0VU2"
    assert (event.alert.service, event.alert.severity, event.alert.title) == (
        "API Service",
        "P1",
        "A little bump in the road",
    )
    assert event.alert.labels["urgency"] == "high"
    assert event.alert.url == "https://acme.pagerduty.com/incidents/PGR0VU2"


async def test_signed_trigger_starts_once_with_search_attributes_then_duplicates_start_nothing(
    dev_env: WorkflowEnvironment,
) -> None:
    body = VECTOR["raw_body"].encode()
    headers = VECTOR["http"]["headers"]
    async with ingress(provider(dev_env), secret=NEW) as http:
        first = await http.post("/webhooks/pagerduty", content=body, headers=headers)
        again = await http.post("/webhooks/pagerduty", content=body, headers=headers)
    # after the rotation finished on our side, PagerDuty still signing with both: still accepted
    async with ingress(provider(dev_env), secret=f"{OLD}, {NEW}") as http:
        third = await http.post("/webhooks/pagerduty", content=body, headers=headers)
    assert first.status_code == 202 and first.json() == {
        "workflow_id": "incident-pagerduty-PGR0VU2",
        "started": True,
    }
    assert again.status_code == 202 and again.json()["started"] is False
    assert third.status_code == 202 and third.json()["started"] is False
    desc = await dev_env.client.get_workflow_handle("incident-pagerduty-PGR0VU2").describe()
    assert desc.workflow_type == "IncidentWorkflow"
    assert desc.typed_search_attributes.get(SA_SERVICE) == "API Service"
    assert desc.typed_search_attributes.get(SA_SEVERITY) == "P1"
    assert desc.typed_search_attributes.get(SA_STAGE) == "triggered"
    assert await desc.static_summary() == "A little bump in the road (API Service)"
    details = await desc.static_details() or ""
    assert details.startswith(
        "**PagerDuty incident** [PGR0VU2](https://acme.pagerduty.com/incidents/PGR0VU2)  \n"
        "**Service:** API Service  \n**Severity:** P1  \n**Started:** "
    ), details
    assert "`urgency=high`" in details
    history = await dev_env.client.get_workflow_handle("incident-pagerduty-PGR0VU2").fetch_history()
    starts = [e for e in history.events if e.HasField("workflow_execution_started_event_attributes")]
    assert len(starts) == 1
    await dev_env.client.get_workflow_handle("incident-pagerduty-PGR0VU2").terminate("test over")


async def test_rejected_requests_get_precise_4xx_and_start_nothing(dev_env: WorkflowEnvironment) -> None:
    cases: list[tuple[str, int, str]] = []
    async with ingress(provider(dev_env), secret=NEW) as http:

        async def post(name: str, content: Any, headers: dict[str, str], status: int, says: str) -> None:
            response = await http.post("/webhooks/pagerduty", content=content, headers=headers)
            assert response.status_code == status, (name, response.text)
            assert says in response.json()["error"], (name, response.text)
            cases.append((name, status, says))

        forged_id = _uid("FORGED")
        body = event_body(forged_id)
        await post("forged", body, signed(body, "attacker-secret"), 401, "signature does not match")
        await post("missing signature", body, PD_HEADERS, 401, "missing signature")
        tampered = body.replace(b"A little bump", b"A large crater")
        await post("tampered body", tampered, signed(body, NEW), 401, "signature does not match")
        stale_id = _uid("STALE")
        stale = event_body(stale_id)
        await post("stale secret after rotation", stale, signed(stale, OLD), 401, "signature does not match")

        bad_json = b'{"event": {"id": "x", '
        await post("malformed JSON", bad_json, signed(bad_json, NEW), 400, "body is not JSON")
        no_id = json.loads(event_body("X"))
        del no_id["event"]["data"]["id"]
        no_id_body = json.dumps(no_id).encode()
        await post("missing incident id", no_id_body, signed(no_id_body, NEW), 400, "event.data.id")
        not_event = b'{"messages": []}'
        await post("not a V3 envelope", not_event, signed(not_event, NEW), 400, '"event" object')

        big_id = _uid("BIG")
        big = event_body(big_id, title="x" * (1024 * 1024))
        await post("oversize", big, signed(big, NEW), 413, "over 1048576 bytes")

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(40):
                yield b" " * 32768  # no Content-Length: streamed, counted as it arrives

        await post("oversize chunked", chunks(), signed(b"", NEW), 413, "over 1048576 bytes")
        metrics = (await http.get("/metrics")).text
    assert len(cases) == 9
    for incident in (forged_id, stale_id, big_id):
        assert not await _exists(dev_env.client, f"incident-pagerduty-{incident}")
    assert 'remedium_webhooks_total{outcome="unauthorized",source="pagerduty"} 4.0' in metrics
    assert 'remedium_webhooks_total{outcome="malformed",source="pagerduty"} 3.0' in metrics
    assert 'remedium_webhooks_total{outcome="too_large",source="pagerduty"} 2.0' in metrics


async def test_fifty_concurrent_deliveries_of_ten_incidents_start_exactly_ten(
    dev_env: WorkflowEnvironment,
) -> None:
    prefix = _uid("BURST")
    ids = [f"{prefix}N{n}" for n in range(10)]  # PagerDuty ids are letters and digits only
    bodies = [event_body(i) for i in ids for _ in range(5)]
    malformed = [b'{"event": ' for _ in range(3)]
    async with ingress(provider(dev_env), secret=NEW) as http:
        responses = await asyncio.gather(
            *(
                http.post("/webhooks/pagerduty", content=b, headers=signed(b, OLD, NEW))
                for b in bodies + malformed
            )
        )
    good, bad = responses[: len(bodies)], responses[len(bodies) :]
    assert [r.status_code for r in good] == [202] * 50
    assert sum(r.json()["started"] for r in good) == 10
    started_ids = sorted(r.json()["workflow_id"] for r in good if r.json()["started"])
    assert started_ids == sorted(f"incident-pagerduty-{i}" for i in ids)
    assert [r.status_code for r in bad] == [400] * 3
    found: list[str] = []
    for _ in range(50):  # visibility is eventually consistent
        found = [w.id async for w in dev_env.client.list_workflows('WorkflowType = "IncidentWorkflow"')]
        found = [w for w in found if w.startswith(f"incident-pagerduty-{prefix}")]
        if len(found) >= 10:
            break
        await asyncio.sleep(0.1)
    assert sorted(found) == started_ids
    for workflow_id in started_ids:
        await dev_env.client.get_workflow_handle(workflow_id).terminate("test over")


async def test_resolved_upstream_reaches_the_running_incident_which_stops_acting(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    target = TargetService().start()
    rb_dir = tmp_path / "runbooks"
    rb_dir.mkdir()
    runbook = api_runbook(target)
    (rb_dir / "api-flush.yaml").write_text(yaml.safe_dump(runbook))
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {"approval": {"approvers": ["alice"], "required_for": ["high"]}, **http_allow(target.url)}
        )
    )
    settings = settings_for(tmp_path, rb_dir, policy)
    incident = _uid("LIFE")
    workflow_id = f"incident-pagerduty-{incident}"
    try:
        async with (
            worker_for(dev_env.client, settings),
            ingress(provider(dev_env), secret=NEW, task_queue=settings.task_queue) as http,
        ):
            trigger = event_body(incident)
            assert (
                await http.post("/webhooks/pagerduty", content=trigger, headers=signed(trigger, NEW))
            ).json()["started"]
            handle = dev_env.client.get_workflow_handle(workflow_id, result_type=IncidentResult)
            for _ in range(100):
                status = await handle.query("status")
                if status["stage"] == "awaiting_approval":
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"never awaited approval: {status}")
            ack = event_body(incident, "incident.acknowledged", status="acknowledged")
            ack_reply = await http.post("/webhooks/pagerduty", content=ack, headers=signed(ack, NEW))
            result = await asyncio.wait_for(handle.result(), 30)
            ping = json.dumps({"event": {"id": "p1", "event_type": "pagey.ping", "data": {}}}).encode()
            ping_reply = await http.post("/webhooks/pagerduty", content=ping, headers=signed(ping, NEW))
            late = event_body(incident, "incident.resolved", status="resolved")
            late_reply = await http.post("/webhooks/pagerduty", content=late, headers=signed(late, NEW))
    finally:
        target.stop()
    assert ack_reply.status_code == 202
    assert ack_reply.json() == {
        "workflow_id": workflow_id,
        "event_type": "incident.acknowledged",
        "signaled": True,
    }
    assert result.outcome == "closed_upstream"
    assert result.reason == "incident acknowledged upstream by Tenex Engineer"
    assert target.applied == [], "no action after the incident was taken over upstream"
    assert ping_reply.status_code == 202 and ping_reply.json()["ignored"] == "pagey.ping needs no action"
    # closed: a late lifecycle event is accepted (so PagerDuty does not retry) but signals nothing
    assert late_reply.status_code == 202 and late_reply.json()["signaled"] is False
    desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.COMPLETED


async def test_temporal_down_is_503_so_pagerduty_retries_and_healthz_says_why(
    dev_env: WorkflowEnvironment,
) -> None:
    async def unreachable() -> Client:
        raise TemporalUnreachable("cannot reach Temporal at 127.0.0.1:1: connection refused")

    body = event_body(_uid("DOWN"))
    async with ingress(unreachable, secret=NEW) as http:
        response = await http.post("/webhooks/pagerduty", content=body, headers=signed(body, NEW))
        health = await http.get("/healthz")
    assert response.status_code == 503
    assert "cannot reach Temporal at 127.0.0.1:1" in response.json()["error"]
    assert health.status_code == 503 and "cannot reach Temporal" in health.json()["temporal"]
    async with ingress(provider(dev_env), secret=NEW) as http:
        healthy = await http.get("/healthz")
    assert healthy.status_code == 200 and healthy.json()["status"] == "ok"


async def test_no_secret_refuses_to_start_unless_insecure_is_explicit_and_loud(
    dev_env: WorkflowEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ValueError, match="REMEDIUM_PAGERDUTY_WEBHOOK_SECRET is not set"):
        create_app(Settings(pagerduty_webhook_secret=None, insecure_webhooks=False), provider(dev_env))
    incident = _uid("INSECURE")
    body = event_body(incident)
    with caplog.at_level(logging.WARNING, logger="remedium.ingress"):
        async with ingress(provider(dev_env), secret=None, insecure_webhooks=True) as http:
            response = await http.post("/webhooks/pagerduty", content=body, headers=PD_HEADERS)
    assert "INSECURE: webhook signatures are NOT checked" in caplog.text
    assert response.status_code == 202 and response.json()["started"] is True
    await dev_env.client.get_workflow_handle(f"incident-pagerduty-{incident}").terminate("test over")

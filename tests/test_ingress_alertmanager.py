"""Alertmanager webhooks: the real Debian binary notifying the real ingress, plus the captured vectors."""

from __future__ import annotations

import copy
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from remedium.errors import TemporalUnreachable
from remedium.ingress.alertmanager import bearer_matches, parse_message, to_alert
from remedium.ingress.app import create_app
from remedium.names import SA_SERVICE, SA_SEVERITY
from tests.plugins.alertmanager import AM_TOKEN, AlertmanagerStack, ingress_settings, provider, serve_app

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"


def _vector(name: str) -> dict[str, Any]:
    return dict(json.loads((VECTORS / f"alertmanager_webhook_{name}.json").read_text())["body"])


FIRING, RESOLVED, FROM_PROMETHEUS = _vector("firing"), _vector("resolved"), _vector("from_prometheus")
AUTH = {"Authorization": f"Bearer {AM_TOKEN}", "Content-Type": "application/json"}


def _fingerprint() -> str:
    return secrets.token_hex(8)


def _with_alerts(template: dict[str, Any], *alerts: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(template)
    body["alerts"] = [copy.deepcopy(a) for a in alerts]
    body["status"] = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return body


def _refingerprint(alert: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    return {**copy.deepcopy(alert), "fingerprint": fingerprint}


async def _exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        assert exc.status == RPCStatusCode.NOT_FOUND
        return False
    return True


async def _signals(client: Client, workflow_id: str) -> list[tuple[str, Any]]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    found = []
    for event in history.events:
        if event.HasField("workflow_execution_signaled_event_attributes"):
            attrs = event.workflow_execution_signaled_event_attributes
            found.append((attrs.signal_name, json.loads(attrs.input.payloads[0].data)))
    return found


async def _started_alert(client: Client, workflow_id: str) -> dict[str, Any]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    starts = [e for e in history.events if e.HasField("workflow_execution_started_event_attributes")]
    assert len(starts) == 1
    payload = starts[0].workflow_execution_started_event_attributes.input.payloads[0].data
    return dict(json.loads(payload)["alert"])


async def _terminate(client: Client, *workflow_ids: str) -> None:
    for workflow_id in workflow_ids:
        try:
            await client.get_workflow_handle(workflow_id).terminate("test over")
        except RPCError:
            pass


def test_vectors_become_the_alerts_runbooks_match() -> None:
    firing = parse_message(json.dumps(FIRING).encode())
    alert = to_alert(firing.alerts[0])
    assert alert.workflow_id == "incident-alertmanager-be0b3a6d0e07ce1d"
    assert (alert.title, alert.service, alert.severity) == (
        "Pod payments/api-7d9f8b6c5-x2x4q is crash looping",
        "payments",  # no service/app/job label: the namespace
        "critical",
    )
    assert alert.labels["pod"] == "api-7d9f8b6c5-x2x4q"
    assert alert.annotations["runbook_url"] == "https://runbooks.example/KubePodCrashLooping"
    assert alert.url == "http://127.0.0.1:19090/graph?g0.expr=up"
    assert alert.started_at == datetime(2026, 11, 22, 20, 25, 1, 133607, tzinfo=UTC)
    resolved = parse_message(json.dumps(RESOLVED).encode()).alerts[0]
    assert resolved.status == "resolved" and resolved.episode == firing.alerts[0].episode
    unnamed = copy.deepcopy(FIRING["alerts"][0])
    unnamed["annotations"] = {}
    unnamed["labels"]["service"] = "checkout"
    alert = to_alert(parse_message(json.dumps(_with_alerts(FIRING, unnamed)).encode()).alerts[0])
    assert (alert.title, alert.service) == ("KubePodCrashLooping", "checkout")
    assert bearer_matches(f"Bearer {AM_TOKEN}", AM_TOKEN) and bearer_matches(f"bearer {AM_TOKEN}", AM_TOKEN)
    assert not bearer_matches(f"Bearer {AM_TOKEN}x", AM_TOKEN)
    assert not bearer_matches(f"Basic {AM_TOKEN}", AM_TOKEN)
    assert not bearer_matches(None, AM_TOKEN)


async def test_real_alertmanager_opens_one_incident_per_fingerprint_and_signals_resolution(
    alertmanager_stack: AlertmanagerStack,
) -> None:
    stack = alertmanager_stack
    test_id = uuid.uuid4().hex[:12]
    starts_at = datetime.now(UTC).isoformat()

    def am_alert(instance: str, **extra: Any) -> dict[str, Any]:
        return {
            "labels": {
                "alertname": "CheckoutErrors",
                "test_id": test_id,
                "instance": instance,
                "service": "checkout",
                "severity": "warning",
            },
            "annotations": {"summary": f"checkout errors on {instance}"},
            "startsAt": starts_at,
            "generatorURL": "http://prometheus.example/graph?g0.expr=errors",
            **extra,
        }

    await stack.post_alerts([am_alert("a"), am_alert("b")])
    await stack.post_alerts([am_alert("a")])  # Alertmanager itself dedups by fingerprint

    def outcomes() -> dict[str, list[dict[str, Any]]]:
        per_alert: dict[str, list[dict[str, Any]]] = {}
        for exchange in stack.deliveries("test_id", test_id):
            assert exchange.status == 202, exchange.response
            for outcome in exchange.response_json()["alerts"]:
                per_alert.setdefault(outcome["fingerprint"], []).append(outcome)
        return per_alert

    # the first notification, then a repeat (repeat_interval) of the same firing alerts
    await stack.recorder.wait_for(
        lambda _: sum(len(v) for v in outcomes().values()) >= 4, "a repeated notification"
    )
    firing = outcomes()
    assert len(firing) == 2, firing
    for fingerprint, seen in firing.items():
        assert [o["started"] for o in seen] == [True] + [False] * (len(seen) - 1), seen
        assert {o["workflow_id"] for o in seen} == {f"incident-alertmanager-{fingerprint}"}
    by_instance = {}
    for fingerprint in firing:
        started = await _started_alert(stack.client, f"incident-alertmanager-{fingerprint}")
        assert started["source"] == "alertmanager" and started["title"].startswith("checkout errors on")
        assert (started["service"], started["severity"]) == ("checkout", "warning")
        by_instance[started["labels"]["instance"]] = fingerprint
    assert sorted(by_instance) == ["a", "b"]
    desc = await stack.client.get_workflow_handle(f"incident-alertmanager-{by_instance['a']}").describe()
    assert desc.typed_search_attributes.get(SA_SERVICE) == "checkout"
    assert desc.typed_search_attributes.get(SA_SEVERITY) == "warning"

    await stack.post_alerts([am_alert("a", endsAt=datetime.now(UTC).isoformat())])
    await stack.recorder.wait_for(
        lambda _: any(o["status"] == "resolved" for o in outcomes().get(by_instance["a"], [])),
        "the resolved notification",
    )
    resolved = [o for o in outcomes()[by_instance["a"]] if o["status"] == "resolved"]
    assert resolved[0] == {
        "fingerprint": by_instance["a"],
        "workflow_id": f"incident-alertmanager-{by_instance['a']}",
        "status": "resolved",
        "signaled": True,
    }
    signals_a = await _signals(stack.client, f"incident-alertmanager-{by_instance['a']}")
    assert signals_a[0][0] == "external_update"
    assert signals_a[0][1]["event"] == "resolved" and signals_a[0][1]["source"] == "alertmanager"
    assert await _signals(stack.client, f"incident-alertmanager-{by_instance['b']}") == []
    # still one run per fingerprint: the repeats started nothing (_started_alert asserts one start)
    for fingerprint in firing:
        await _started_alert(stack.client, f"incident-alertmanager-{fingerprint}")
    await _terminate(stack.client, *(f"incident-alertmanager-{f}" for f in firing))


async def test_receiver_with_a_wrong_token_is_refused_and_starts_nothing(
    alertmanager_stack: AlertmanagerStack,
) -> None:
    stack = alertmanager_stack
    test_id = uuid.uuid4().hex[:12]
    before = len(stack.recorder.exchanges)
    await stack.post_alerts(
        [{"labels": {"alertname": "Intruder", "test_id": test_id, "token": "wrong"}, "annotations": {}}]
    )
    # the ingress refuses before reading the body; only this test routes to the wrong-token receiver
    refused = await stack.recorder.wait_for(
        lambda e: e.status == 401, "the wrong-token notification", since=before
    )
    assert refused.response_json() == {"error": "bearer token does not match"}
    fingerprints = await stack.fingerprints("test_id", test_id)
    assert len(fingerprints) == 1
    assert not await _exists(stack.client, f"incident-alertmanager-{fingerprints[0]}")


async def test_grouped_vector_delivery_starts_each_firing_alert_and_signals_the_resolved_one(
    alertmanager_stack: AlertmanagerStack,
) -> None:
    stack = alertmanager_stack
    crashloop, other_pod, always = _fingerprint(), _fingerprint(), _fingerprint()
    first = json.dumps(_with_alerts(FIRING, _refingerprint(FIRING["alerts"][0], crashloop))).encode()
    second_pod = _refingerprint(FIRING["alerts"][0], other_pod)
    second_pod["labels"]["pod"] = "api-7d9f8b6c5-zzzzz"
    grouped = _with_alerts(
        FIRING,
        _refingerprint(FROM_PROMETHEUS["alerts"][0], always),
        second_pod,
        _refingerprint(RESOLVED["alerts"][0], crashloop),
    )
    unknown = _with_alerts(RESOLVED, _refingerprint(RESOLVED["alerts"][0], _fingerprint()))
    async with httpx.AsyncClient(base_url=stack.ingress_url, timeout=30) as http:
        opened = await http.post("/webhooks/alertmanager", content=first, headers=AUTH)
        repeat = await http.post("/webhooks/alertmanager", content=first, headers=AUTH)  # byte-identical
        group = await http.post("/webhooks/alertmanager", json=grouped, headers=AUTH)
        late = await http.post("/webhooks/alertmanager", json=unknown, headers=AUTH)
        metrics = (await http.get("/metrics")).text
    assert opened.status_code == 202 and opened.json()["alerts"][0]["started"] is True
    assert repeat.status_code == 202 and repeat.json()["alerts"][0]["started"] is False
    assert group.status_code == 202, group.text
    assert group.json() == {
        "group_key": FIRING["groupKey"],
        "status": "firing",
        "alerts": [
            {
                "fingerprint": always,
                "workflow_id": f"incident-alertmanager-{always}",
                "status": "firing",
                "started": True,
            },
            {
                "fingerprint": other_pod,
                "workflow_id": f"incident-alertmanager-{other_pod}",
                "status": "firing",
                "started": True,
            },
            {
                "fingerprint": crashloop,
                "workflow_id": f"incident-alertmanager-{crashloop}",
                "status": "resolved",
                "signaled": True,
            },
        ],
    }
    # resolved for an incident we never opened: accepted (no retry storm), nothing signalled
    assert late.status_code == 202 and late.json()["alerts"][0]["signaled"] is False
    signals = await _signals(stack.client, f"incident-alertmanager-{crashloop}")
    assert [(name, body["event"], body["source"]) for name, body in signals] == [
        ("external_update", "resolved", "alertmanager")
    ]
    assert (await _started_alert(stack.client, f"incident-alertmanager-{always}"))["service"] == "demo"
    assert 'remedium_incidents_started_total{source="alertmanager"}' in metrics
    await _terminate(stack.client, *(f"incident-alertmanager-{f}" for f in (crashloop, other_pod, always)))


async def test_a_closed_incident_is_not_reopened_by_repeats_but_a_new_firing_opens_a_new_run(
    alertmanager_stack: AlertmanagerStack,
) -> None:
    stack = alertmanager_stack
    fingerprint = _fingerprint()
    workflow_id = f"incident-alertmanager-{fingerprint}"
    alert = _refingerprint(FIRING["alerts"][0], fingerprint)
    again_later = {**alert, "startsAt": "2026-11-29T08:00:00Z"}
    async with httpx.AsyncClient(base_url=stack.ingress_url, timeout=30) as http:

        async def deliver(body: dict[str, Any]) -> bool:
            response = await http.post(
                "/webhooks/alertmanager", json=_with_alerts(FIRING, body), headers=AUTH
            )
            assert response.status_code == 202, response.text
            return bool(response.json()["alerts"][0]["started"])

        assert await deliver(alert) is True
        first_run = (await stack.client.get_workflow_handle(workflow_id).describe()).run_id
        await stack.client.get_workflow_handle(workflow_id).terminate("closed by the test")
        repeat_after_close = await deliver(alert)
        new_episode = await deliver(again_later)
        repeat_of_new = await deliver(again_later)
    assert repeat_after_close is False, "the same firing must not reopen a closed incident"
    assert new_episode is True, "the alert firing again later is a new incident"
    assert repeat_of_new is False
    latest = await stack.client.get_workflow_handle(workflow_id).describe()
    assert latest.run_id != first_run
    assert (await _started_alert(stack.client, workflow_id))["started_at"].startswith("2026-11-29T08:00:00")
    await _terminate(stack.client, workflow_id)


async def test_rejected_requests_get_precise_4xx_and_start_nothing(dev_env: WorkflowEnvironment) -> None:
    fingerprint = _fingerprint()
    good = json.dumps(_with_alerts(FIRING, _refingerprint(FIRING["alerts"][0], fingerprint))).encode()
    no_fingerprint = _with_alerts(FIRING, FIRING["alerts"][0])
    del no_fingerprint["alerts"][0]["fingerprint"]
    cases: list[tuple[str, int, str]] = []
    async with (
        serve_app(create_app(ingress_settings(), provider(dev_env))) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):

        async def post(name: str, content: bytes, headers: dict[str, str], status: int, says: str) -> None:
            response = await http.post("/webhooks/alertmanager", content=content, headers=headers)
            assert response.status_code == status, (name, response.text)
            assert says in response.json()["error"], (name, response.text)
            cases.append((name, status, says))

        await post("no token", good, {}, 401, "missing bearer token")
        await post("wrong token", good, {"Authorization": "Bearer nope"}, 401, "bearer token does not match")
        await post("basic auth", good, {"Authorization": f"Basic {AM_TOKEN}"}, 401, "does not match")
        await post("not JSON", b'{"alerts": [', AUTH, 400, "body is not JSON")
        await post("version 3", good.replace(b'"version": "4"', b'"version": "3"'), AUTH, 400, "version")
        await post(
            "no fingerprint",
            json.dumps(no_fingerprint).encode(),
            AUTH,
            400,
            "alerts[0].fingerprint: Field required",
        )
        hostile = good.replace(fingerprint.encode(), b"../../etc")
        await post("fingerprint not hex", hostile, AUTH, 400, "alerts[0].fingerprint")
        await post("oversize", b" " * (1024 * 1024 + 1), AUTH, 413, "over 1048576 bytes")
        metrics = (await http.get("/metrics")).text
    assert len(cases) == 8
    assert not await _exists(dev_env.client, f"incident-alertmanager-{fingerprint}")
    assert 'remedium_webhooks_total{outcome="unauthorized",source="alertmanager"} 3.0' in metrics
    assert 'remedium_webhooks_total{outcome="malformed",source="alertmanager"} 4.0' in metrics

    # no token configured: the app still starts (PagerDuty may be the only source) and says why
    async with (
        serve_app(create_app(ingress_settings(alertmanager_token=None), provider(dev_env))) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        unconfigured = await http.post("/webhooks/alertmanager", content=good, headers=AUTH)
    assert unconfigured.status_code == 401
    assert "REMEDIUM_ALERTMANAGER_TOKEN is not configured" in unconfigured.json()["error"]
    assert not await _exists(dev_env.client, f"incident-alertmanager-{fingerprint}")

    # explicit insecure mode: no token needed
    insecure = ingress_settings(
        alertmanager_token=None, pagerduty_webhook_secret=None, insecure_webhooks=True
    )
    async with (
        serve_app(create_app(insecure, provider(dev_env))) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        accepted = await http.post("/webhooks/alertmanager", content=good)
    assert accepted.status_code == 202 and accepted.json()["alerts"][0]["started"] is True
    await _terminate(dev_env.client, f"incident-alertmanager-{fingerprint}")


async def test_temporal_down_is_503_so_alertmanager_retries() -> None:
    async def unreachable() -> Client:
        raise TemporalUnreachable("cannot reach Temporal at 127.0.0.1:1: connection refused")

    get: Callable[[], Awaitable[Client]] = unreachable
    async with (
        serve_app(create_app(ingress_settings(alertmanager_token=SecretStr(AM_TOKEN)), get)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        response = await http.post("/webhooks/alertmanager", json=FIRING, headers=AUTH)
    assert response.status_code == 503
    assert "cannot reach Temporal at 127.0.0.1:1" in response.json()["error"]

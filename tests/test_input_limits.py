"""Input limits (CONTRACT "Input limits") through the real ingress on the real Temporal dev server.

Each test sends what was observed to lose an alert or to be answered wrongly on a running
stack: a 500 kB PagerDuty title and a 30,000-label Alertmanager alert (accepted, then lost to
Temporal's payload limits), ids and service names that can never start an incident (answered
503, so retried forever), ids with path and control characters, JSON nested thousands deep
(a 500), and a signed Slack body that is not UTF-8 (called a forgery).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml
from pydantic import SecretStr
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from activities.pagerduty import PagerDutyReporter, PagerDutySettings, pagerduty_http_client
from remedium.demo.sandbox.pagerduty import PagerDutySandbox
from remedium.errors import TemporalUnreachable
from remedium.ingress.app import create_app
from remedium.models import Alert, IncidentResult, ReportEvent
from remedium.models.limits import MAX_JSON_DEPTH, TITLE_MAX_BYTES
from tests.plugins.alertmanager import AM_TOKEN, ingress_settings, serve_app
from tests.support import settings_for, worker_for
from tests.test_ingress_pagerduty import NEW, event_body, signed

AUTH = {"Authorization": f"Bearer {AM_TOKEN}", "Content-Type": "application/json"}
SLACK_SECRET = "slack-limits-" + uuid.uuid4().hex
PD_ID_RULE = "not a PagerDuty incident id (letters and digits, at most 64)"
FINGERPRINT_RULE = "not an Alertmanager fingerprint (hex digits, at most 64)"

# Matches the test alerts (service limits-*); its condition reads the alert the workflow stored,
# which never has 1000 labels, so the incident escalates after deciding and writes its report.
LIMITS_RUNBOOK: dict[str, Any] = {
    "apiVersion": "remedium/v1",
    "kind": "Runbook",
    "metadata": {"name": "input-limits"},
    "match": {"source": ["pagerduty", "alertmanager"], "service": ["limits-*"]},
    "vars": {"headline": "{{ alert.title[:40] }}"},
    "decide": {"when": ["alert.labels | length > 1000"]},
    "plan": [
        {
            "id": "call",
            "action": "http.request",
            "risk": "high",
            "with": {"url": "http://127.0.0.1:9/never", "method": "POST"},
        }
    ],
    "verify": {"checks": [], "success": ["true"], "every": "1s", "within": "5s"},
    "report": {"summary": "{{ vars.headline }}: {{ outcome }}"},
}


class CountingProvider:
    """The ingress's Temporal client, counting how often the ingress asked for it."""

    def __init__(self, env: WorkflowEnvironment | None) -> None:
        self.env = env
        self.calls = 0

    async def __call__(self) -> Client:
        self.calls += 1
        if self.env is None:
            raise TemporalUnreachable("cannot reach Temporal at 127.0.0.1:1: connection refused")
        return self.env.client


def _settings(**overrides: Any) -> Any:
    return ingress_settings(
        pagerduty_webhook_secret=SecretStr(NEW), slack_signing_secret=SecretStr(SLACK_SECRET), **overrides
    )


def _pd_id() -> str:
    return f"PLIM{uuid.uuid4().hex[:10].upper()}"


def _am_alert(fingerprint: str, **labels: str) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": "LimitsTest", "service": "limits-am", "severity": "warning", **labels},
        "annotations": {"summary": f"limits test {fingerprint}"},
        "startsAt": "2026-11-22T20:25:01.133607Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example/graph?g0.expr=up",
        "fingerprint": fingerprint,
    }


def _am_body(*alerts: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "version": "4",
            "groupKey": '{}:{alertname="LimitsTest"}',
            "status": "firing",
            "receiver": "remedium",
            "groupLabels": {"alertname": "LimitsTest"},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager.example",
            "truncatedAlerts": 0,
            "alerts": list(alerts),
        }
    ).encode()


async def _absent(client: Client, workflow_id: str) -> bool:
    """No such workflow: not found, or an id the server would not even take."""
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        return exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT)
    return False


async def _started_input_bytes(handle: WorkflowHandle[Any, Any]) -> int:
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    return sum(len(p.data) for p in started.input.payloads)


def _audit_kinds(audit: list[dict[str, Any]]) -> list[str]:
    return [entry["kind"] for entry in audit]


def _slack_headers(body: bytes, secret: str = SLACK_SECRET) -> dict[str, str]:
    timestamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": f"v0={digest}",
    }


DEEP = "__nested_here__"


def _deepen(body: bytes, depth: int) -> bytes:
    """The body with its DEEP string replaced by arrays nested `depth` deep (json.dumps would recurse)."""
    nested = b"[" * depth + b'"bottom"' + b"]" * depth
    assert body.count(f'"{DEEP}"'.encode()) == 1
    return body.replace(f'"{DEEP}"'.encode(), nested)


# ------------------------------------------------------------------ finding 1: bounded alerts


async def test_a_500_kB_pagerduty_title_is_stored_cut_with_a_marker_and_the_incident_reaches_a_report(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    rb_dir = tmp_path / "runbooks"
    rb_dir.mkdir()
    (rb_dir / "input-limits.yaml").write_text(yaml.safe_dump(LIMITS_RUNBOOK))
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"approval": {"approvers": ["alice"]}}))
    settings = settings_for(tmp_path, rb_dir, policy)
    incident = _pd_id()
    body = event_body(incident, title="x" * 500_000, service={"id": "PLIMSVC", "summary": "limits-pd"})
    assert 500_000 < len(body) < 1024 * 1024
    async with (
        worker_for(dev_env.client, settings),
        serve_app(create_app(_settings(task_queue=settings.task_queue), CountingProvider(dev_env))) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        response = await http.post("/webhooks/pagerduty", content=body, headers=signed(body, NEW))
        assert response.status_code == 202, response.text
        assert response.json() == {"workflow_id": f"incident-pagerduty-{incident}", "started": True}
        handle = dev_env.client.get_workflow_handle(
            response.json()["workflow_id"], result_type=IncidentResult
        )
        result = await asyncio.wait_for(handle.result(), 60)
        audit = await handle.query("audit")
        status = await handle.query("status")
    assert result.outcome == "escalated" and result.report is not None
    assert status["stage"] == "escalated"
    stored = status["alert"]["title"]
    assert stored == "x" * 996 + "…[truncated 499,004 bytes]"
    assert result.report.summary == f"{stored}: escalated"  # the report names the stored alert
    assert len(stored.encode()) == TITLE_MAX_BYTES
    assert status["alert"]["truncated"] == ["title: 499,004 bytes cut (at most 1,024)"]
    kinds = _audit_kinds(audit)
    assert kinds[:2] == ["triggered", "alert_truncated"]
    assert audit[1]["message"] == (
        "the alert was cut to fit the input limits: title: 499,004 bytes cut (at most 1,024)"
    )
    assert "escalated" in kinds and kinds[-1] == "report"
    assert await _started_input_bytes(handle) < 8_000  # what Temporal keeps of the alert, not 500 kB


async def test_an_alertmanager_alert_with_30000_labels_is_stored_cut_and_reaches_a_report(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    rb_dir = tmp_path / "runbooks"
    rb_dir.mkdir()
    (rb_dir / "input-limits.yaml").write_text(yaml.safe_dump(LIMITS_RUNBOOK))
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"approval": {"approvers": ["alice"]}}))
    settings = settings_for(tmp_path, rb_dir, policy)
    fingerprint = secrets.token_hex(8)
    many = {f"l{i:05d}": "v" for i in range(30_000 - 3)}
    body = _am_body(_am_alert(fingerprint, **many))
    assert len(body) < 1024 * 1024
    async with (
        worker_for(dev_env.client, settings),
        serve_app(create_app(_settings(task_queue=settings.task_queue), CountingProvider(dev_env))) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        response = await http.post("/webhooks/alertmanager", content=body, headers=AUTH)
        assert response.status_code == 202, response.text
        assert response.json()["alerts"][0]["started"] is True
        handle = dev_env.client.get_workflow_handle(
            f"incident-alertmanager-{fingerprint}", result_type=IncidentResult
        )
        result = await asyncio.wait_for(handle.result(), 60)
        audit = await handle.query("audit")
        status = await handle.query("status")
    assert result.outcome == "escalated" and result.report is not None
    assert status["stage"] == "escalated"
    labels = status["alert"]["labels"]
    assert len(labels) == 64
    assert {"alertname", "service", "severity"} <= set(labels)  # the names the engine reads stay
    assert status["alert"]["truncated"] == ["labels: 29,936 of 30,000 dropped (at most 64 kept)"]
    truncation = next(entry for entry in audit if entry["kind"] == "alert_truncated")
    assert truncation["message"] == (
        "the alert was cut to fit the input limits: labels: 29,936 of 30,000 dropped (at most 64 kept)"
    )
    assert truncation["data"] == {"truncated": ["labels: 29,936 of 30,000 dropped (at most 64 kept)"]}
    assert _audit_kinds(audit)[-1] == "report"
    assert await _started_input_bytes(handle) < 8_000


# ------------------------------------------------- finding 2: permanent errors are 4xx, not 503


async def test_ids_and_search_attribute_values_that_can_never_start_are_400_naming_the_field(
    dev_env: WorkflowEnvironment,
) -> None:
    temporal = CountingProvider(dev_env)
    long_id = "P" + "A" * 989
    big_service = _pd_id()
    big_priority = _pd_id()
    fingerprint, severe = secrets.token_hex(8), secrets.token_hex(8)
    cases: list[tuple[str, bytes, str]] = [
        (long_id, event_body(long_id), f"event.data.id: {PD_ID_RULE}"),
        (
            big_service,
            event_body(big_service, service={"id": "PSVC", "summary": "s" * 3000}),
            "event.data.service.summary: longer than 255 characters (3,000); "
            "it becomes the IncidentService search attribute",
        ),
        (
            big_priority,
            event_body(big_priority, priority={"id": "PPRI", "summary": "p" * 3000}),
            "event.data.priority.summary: longer than 64 characters (3,000); "
            "it becomes the IncidentSeverity search attribute",
        ),
    ]
    async with (
        serve_app(create_app(_settings(), temporal)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        for incident, body, says in cases:
            response = await http.post("/webhooks/pagerduty", content=body, headers=signed(body, NEW))
            assert (response.status_code, response.json()) == (400, {"error": says}), incident[:20]
            assert await _absent(dev_env.client, f"incident-pagerduty-{incident}")
        service = await http.post(
            "/webhooks/alertmanager",
            content=_am_body(_am_alert(fingerprint, service="s" * 3000)),
            headers=AUTH,
        )
        severity = await http.post(
            "/webhooks/alertmanager", content=_am_body(_am_alert(severe, severity="c" * 3000)), headers=AUTH
        )
        metrics = (await http.get("/metrics")).text
    assert service.status_code == 400
    assert service.json()["error"] == (
        "alerts[0].labels.service: longer than 255 characters (3,000); "
        "it becomes the IncidentService search attribute"
    )
    assert service.json()["rejected"] == [
        {"index": 0, "fingerprint": fingerprint, "error": service.json()["error"]}
    ]
    assert service.json()["alerts"] == []
    assert severity.status_code == 400
    assert severity.json()["error"].startswith("alerts[0].labels.severity: longer than 64 characters")
    assert await _absent(dev_env.client, f"incident-alertmanager-{fingerprint}")
    assert await _absent(dev_env.client, f"incident-alertmanager-{severe}")
    assert temporal.calls == 0, "refused before anything reached Temporal"
    assert 'remedium_webhooks_total{outcome="malformed",source="pagerduty"} 3.0' in metrics
    assert 'remedium_webhooks_total{outcome="malformed",source="alertmanager"} 2.0' in metrics


async def test_one_poisoned_alert_in_a_group_of_200_starts_the_other_199_and_names_the_bad_one(
    dev_env: WorkflowEnvironment,
) -> None:
    fingerprints = [secrets.token_hex(8) for _ in range(200)]
    alerts = [_am_alert(f, instance=f"i{n}") for n, f in enumerate(fingerprints)]
    alerts[117]["labels"]["service"] = "s" * 3000
    async with (
        serve_app(create_app(_settings(), CountingProvider(dev_env))) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as http,
    ):
        response = await http.post("/webhooks/alertmanager", content=_am_body(*alerts), headers=AUTH)
        again = await http.post("/webhooks/alertmanager", content=_am_body(*alerts), headers=AUTH)
    good = [f for n, f in enumerate(fingerprints) if n != 117]
    try:
        assert response.status_code == 400, response.text
        reply = response.json()
        bad = (
            "alerts[117].labels.service: longer than 255 characters (3,000); "
            "it becomes the IncidentService search attribute"
        )
        assert (
            reply["error"] == f'{bad} (1 of 200 alert(s) refused; the other 199 were handled, see "alerts")'
        )
        assert reply["rejected"] == [{"index": 117, "fingerprint": fingerprints[117], "error": bad}]
        assert [o["fingerprint"] for o in reply["alerts"]] == good
        assert all(o["started"] is True for o in reply["alerts"])
        # the next notification of the group: the 199 are repeats, the bad one is named again
        assert again.status_code == 400 and again.json()["rejected"] == reply["rejected"]
        assert not any(o["started"] for o in again.json()["alerts"])
        for fingerprint in good:
            await dev_env.client.get_workflow_handle(f"incident-alertmanager-{fingerprint}").describe()
        assert await _absent(dev_env.client, f"incident-alertmanager-{fingerprints[117]}")
    finally:
        for fingerprint in good:
            try:
                await dev_env.client.get_workflow_handle(f"incident-alertmanager-{fingerprint}").terminate(
                    "test over"
                )
            except RPCError:
                pass


async def test_bad_input_is_400_even_while_temporal_is_unreachable_and_only_good_input_is_503() -> None:
    temporal = CountingProvider(None)
    bad_id = event_body("P" + "A" * 989)
    good = event_body(_pd_id())
    async with (
        serve_app(create_app(_settings(), temporal)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        refused = await http.post("/webhooks/pagerduty", content=bad_id, headers=signed(bad_id, NEW))
        bad_am = _am_body(_am_alert("../../etc"))
        refused_am = await http.post("/webhooks/alertmanager", content=bad_am, headers=AUTH)
        assert temporal.calls == 0
        unavailable = await http.post("/webhooks/pagerduty", content=good, headers=signed(good, NEW))
    assert (refused.status_code, refused.json()) == (400, {"error": f"event.data.id: {PD_ID_RULE}"})
    assert refused_am.status_code == 400
    assert refused_am.json()["error"] == f"alerts[0].fingerprint: {FINGERPRINT_RULE}"
    assert unavailable.status_code == 503 and "cannot reach Temporal" in unavailable.json()["error"]


# --------------------------------------------------------- finding 3: path characters in ids

HOSTILE_IDS = ["../../etc/passwd", "a/b?x=1#f", "PABC\nDEF", "PABC\x00DEF", "PABC\u202eFDP", "PABC DEF", ""]


async def test_ids_with_path_or_control_characters_are_refused_and_start_nothing(
    dev_env: WorkflowEnvironment,
) -> None:
    temporal = CountingProvider(dev_env)
    async with (
        serve_app(create_app(_settings(), temporal)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        for hostile in HOSTILE_IDS:
            for kind in ("incident.triggered", "incident.resolved", "incident.acknowledged"):
                body = event_body(hostile, kind)
                response = await http.post("/webhooks/pagerduty", content=body, headers=signed(body, NEW))
                assert response.status_code == 400, (hostile, kind, response.text)
                assert response.json() == {"error": f"event.data.id: {PD_ID_RULE}"}, (hostile, kind)
            note = json.loads(event_body("X", "incident.annotated"))
            note["event"]["data"] = {"type": "incident_note", "content": "hi", "incident": {"id": hostile}}
            body = json.dumps(note).encode()
            response = await http.post("/webhooks/pagerduty", content=body, headers=signed(body, NEW))
            assert response.json() == {"error": f"event.data.incident.id: {PD_ID_RULE}"}, hostile
            am = await http.post("/webhooks/alertmanager", content=_am_body(_am_alert(hostile)), headers=AUTH)
            assert am.status_code == 400, (hostile, am.text)
            assert am.json()["error"] == f"alerts[0].fingerprint: {FINGERPRINT_RULE}"
            assert am.json()["rejected"] == [
                {"index": 0, "fingerprint": None, "error": f"alerts[0].fingerprint: {FINGERPRINT_RULE}"}
            ]
            resolved = _am_alert(hostile)
            resolved["status"] = "resolved"
            am = await http.post("/webhooks/alertmanager", content=_am_body(resolved), headers=AUTH)
            assert am.status_code == 400 and "alerts[0].fingerprint" in am.json()["error"], hostile
    assert temporal.calls == 0
    for hostile in HOSTILE_IDS:
        assert await _absent(dev_env.client, f"incident-pagerduty-{hostile}")
        assert await _absent(dev_env.client, f"incident-alertmanager-{hostile}")


async def test_the_pagerduty_reporter_quotes_the_incident_id_in_every_path(
    pagerduty_sandbox: PagerDutySandbox,
) -> None:
    """Defence in depth: an id the ingress would refuse still never walks the REST API."""
    client = pagerduty_http_client(
        PagerDutySettings(
            token=SecretStr(pagerduty_sandbox.token),
            api_url=pagerduty_sandbox.url,
            from_="remedium@example.com",
        )
    )
    assert client is not None
    seen: dict[str, list[tuple[str, str, dict[str, str]]]] = {}
    async with client:
        reporter = PagerDutyReporter(client, "remedium@example.com", "http://temporal.example:8233")
        for hostile in ("../../etc/passwd", "a/b?x=1#f", ".."):
            before = len(pagerduty_sandbox.received)
            alert = Alert(source="pagerduty", id=hostile, title="hostile id")
            event = ReportEvent(
                workflow_id=alert.workflow_id,
                event_id="009-outcome",
                kind="outcome",
                stage="resolved",
                alert=alert.brief(),
                title="Resolved",
                outcome="resolved",
            )
            with pytest.raises(ApplicationError, match="HTTP 404"):
                await reporter.post(event)
            seen[hostile] = [(r.method, r.path, r.query) for r in pagerduty_sandbox.received[before:]]
    assert seen == {
        "../../etc/passwd": [("GET", "/incidents/..%2F..%2Fetc%2Fpasswd/notes", {})],
        "a/b?x=1#f": [("GET", "/incidents/a%2Fb%3Fx%3D1%23f/notes", {})],
        "..": [("GET", "/incidents/%2E%2E/notes", {})],
    }


# ------------------------------------------------------------ finding 4: deeply nested JSON


async def test_json_nested_thousands_deep_is_400_on_every_webhook_and_the_limit_is_above_real_senders(
    dev_env: WorkflowEnvironment,
) -> None:
    too_deep = f"JSON nested deeper than {MAX_JSON_DEPTH}"
    pd_deep = _deepen(event_body(_pd_id(), custom=DEEP), 5000)
    am_alert = _am_alert(secrets.token_hex(8))
    am_alert["annotations"] = DEEP
    am_body = _deepen(_am_body(am_alert), 5000)
    slack_payload = {"type": "block_actions", "user": {"id": "U1"}, "actions": [], "deep": DEEP}
    slack_json = _deepen(json.dumps(slack_payload).encode(), 5000).decode()
    slack_body = ("payload=" + quote(slack_json, safe="")).encode()
    at_limit = _pd_id()  # the envelope's own 3 levels plus data's nesting: exactly the limit
    pd_at_limit = _deepen(event_body(at_limit, custom=DEEP), MAX_JSON_DEPTH - 3)
    async with (
        serve_app(create_app(_settings(), CountingProvider(dev_env))) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        pd = await http.post("/webhooks/pagerduty", content=pd_deep, headers=signed(pd_deep, NEW))
        am = await http.post("/webhooks/alertmanager", content=am_body, headers=AUTH)
        slack = await http.post(
            "/webhooks/slack/interactions", content=slack_body, headers=_slack_headers(slack_body)
        )
        accepted = await http.post(
            "/webhooks/pagerduty", content=pd_at_limit, headers=signed(pd_at_limit, NEW)
        )
    assert (pd.status_code, pd.json()) == (400, {"error": too_deep})
    assert (am.status_code, am.json()) == (400, {"error": too_deep})
    assert (slack.status_code, slack.json()) == (400, {"error": f"payload: {too_deep}"})
    assert accepted.status_code == 202 and accepted.json()["started"] is True
    await dev_env.client.get_workflow_handle(f"incident-pagerduty-{at_limit}").terminate("test over")


# ------------------------------------------------------ finding 5: Slack body that is not UTF-8


async def test_a_signed_slack_body_that_is_not_utf8_is_400_and_an_unsigned_one_401() -> None:
    body = b"payload=%7B%22type%22%3A%22block_actions%22%7D&note=caf\xe9"  # Latin-1, not UTF-8
    forged = _slack_headers(body, secret="not-the-secret")
    async with (
        serve_app(create_app(_settings(), CountingProvider(None))) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        signed_reply = await http.post(
            "/webhooks/slack/interactions", content=body, headers=_slack_headers(body)
        )
        forged_reply = await http.post("/webhooks/slack/interactions", content=body, headers=forged)
        tampered = await http.post(
            "/webhooks/slack/interactions", content=body + b"\xff", headers=_slack_headers(body)
        )
    assert (signed_reply.status_code, signed_reply.json()) == (400, {"error": "body is not UTF-8"})
    assert (forged_reply.status_code, forged_reply.json()) == (401, {"error": "signature does not match"})
    assert (tampered.status_code, tampered.json()) == (401, {"error": "signature does not match"})


def test_the_alert_models_stay_compatible_with_histories_from_before_the_limits() -> None:
    """An Alert without `truncated` still decodes, and a report event from an older worker too."""
    old = {"source": "pagerduty", "id": "PGR0VU2", "title": "t", "labels": {"a": "b"}, "annotations": {}}
    assert Alert.model_validate(old).truncated == []
    event = {
        "workflow_id": "incident-pagerduty-PGR0VU2",
        "event_id": "001-opened",
        "kind": "opened",
        "stage": "triggered",
        "alert": copy.deepcopy(old),  # the whole alert, as events carried it before
        "title": "opened",
    }
    brief = ReportEvent.model_validate(event).alert
    assert (brief.id, brief.title, brief.source) == ("PGR0VU2", "t", "pagerduty")
    assert not hasattr(brief, "labels")

"""Slack approve/reject buttons through the real ingress into a waiting incident on a real worker."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml
from pydantic import SecretStr
from slack_sdk.signature import Clock, SignatureVerifier
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from remedium.incidents import start_incident
from remedium.ingress.app import create_app
from remedium.ingress.slack import SlackInteractions, Unauthorized, verify
from remedium.models import Alert, IncidentResult, IncidentStatus
from remedium.settings import Settings
from tests.plugins.alertmanager import ingress_settings, serve_app
from tests.support import TargetService, api_runbook, http_allow, settings_for, wait_for_stage, worker_for

VECTOR = json.loads(
    (
        Path(__file__).resolve().parents[2] / "shared" / "vectors" / "slack_block_actions_signed.json"
    ).read_text()
)
SECRET = "slack-secret-" + uuid.uuid4().hex


class FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self.at = now

    def now(self) -> float:
        return self.at


@contextmanager
def response_url_sink() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Stands in for hooks.slack.com: records what the ingress posts to a payload's response_url."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            received.append({"path": self.path, **json.loads(self.rfile.read(length))})
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}/actions/T0123ABCD/1234567890123/AbCdEf", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class SlackUser:
    """Clicks the Remedium buttons the way Slack delivers them: a signed `payload=` form body."""

    def __init__(self, username: str, response_url: str, secret: str = SECRET) -> None:
        self.username = username
        self.response_url = response_url
        self.signer = SignatureVerifier(secret)

    def click(
        self,
        action: str,
        workflow_id: str,
        step: str | None,
        *,
        at: float | None = None,
        action_ts: str | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        payload = json.loads(json.dumps(VECTOR["payload"]))
        payload["user"].update(id=f"U{self.username.upper()}", username=self.username, name=self.username)
        payload["response_url"] = self.response_url
        payload["actions"] = [
            {
                "type": "button",
                "action_id": action,
                "block_id": "remedium_approval",
                "text": {"type": "plain_text", "text": "Approve", "emoji": True},
                "value": json.dumps({"workflow_id": workflow_id, "step": step}),
                "style": "primary",
                "action_ts": action_ts or f"{time.time():.6f}",
            }
        ]
        body = ("payload=" + quote(json.dumps(payload, separators=(",", ":")), safe="")).encode()
        timestamp = str(int(at if at is not None else time.time()))
        signature = self.signer.generate_signature(timestamp=timestamp, body=body)
        assert signature is not None
        return body, {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": signature,
        }


@asynccontextmanager
async def slack_ingress(
    client: Client | None, settings: Settings, clock: Clock | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, SlackInteractions]]:
    async def get() -> Client:
        assert client is not None
        return client

    app = create_app(settings, get, slack_clock=clock)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        interactions: SlackInteractions = app.state.slack_interactions
        try:
            yield http, interactions
        finally:
            await interactions.drain()


async def _updates_accepted(handle: WorkflowHandle[Any, Any]) -> int:
    history = await handle.fetch_history()
    return sum(e.HasField("workflow_execution_update_accepted_event_attributes") for e in history.events)


async def _wait_for_reply(received: list[dict[str, Any]], count: int) -> dict[str, Any]:
    import asyncio

    for _ in range(200):
        if len(received) >= count:
            return received[count - 1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"response_url got {len(received)} replies, expected {count}: {received}")


async def test_button_clicks_refused_then_approved_and_audited_with_the_slack_user(
    dev_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMEDIUM_SLACK_SIGNING_SECRET", SECRET)  # the worker verifies clicks again
    target = TargetService().start()
    rb_dir = tmp_path / "runbooks"
    rb_dir.mkdir()
    (rb_dir / "api-flush.yaml").write_text(yaml.safe_dump(api_runbook(target)))
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "approval": {"approvers": [{"name": "alice", "slack": "UALICE"}], "required_for": ["high"]},
                **http_allow(target.url),
            }
        )
    )
    worker_settings = settings_for(tmp_path, rb_dir, policy)
    alert = Alert(
        source="pagerduty",
        id=f"SLACK{uuid.uuid4().hex[:8].upper()}",
        title="A little bump in the road",
        service="API Service",
        severity="P1",
    )
    settings = ingress_settings(slack_signing_secret=SecretStr(SECRET), task_queue=worker_settings.task_queue)
    try:
        with response_url_sink() as (response_url, received):
            alice, mallory = SlackUser("alice", response_url), SlackUser("mallory", response_url)
            forger = SlackUser("alice", response_url, secret="not-the-signing-secret")
            async with (
                worker_for(dev_env.client, worker_settings),
                slack_ingress(dev_env.client, settings) as (http, interactions),
            ):
                assert await start_incident(dev_env.client, worker_settings.task_queue, alert)
                handle = dev_env.client.get_workflow_handle(alert.workflow_id, result_type=IncidentResult)
                await wait_for_stage(handle, "awaiting_approval")

                path = "/webhooks/slack/interactions"
                body, headers = mallory.click("remedium_approve", alert.workflow_id, "flush-cache")
                not_allowed = await http.post(path, content=body, headers=headers)
                refused_reply = await _wait_for_reply(received, 1)
                body, headers = alice.click("remedium_approve", alert.workflow_id, "no-such-step")
                wrong_step = await http.post(path, content=body, headers=headers)
                wrong_step_reply = await _wait_for_reply(received, 2)
                body, headers = forger.click("remedium_approve", alert.workflow_id, "flush-cache")
                forged = await http.post(path, content=body, headers=headers)
                body, headers = alice.click("remedium_approve", alert.workflow_id, None, at=time.time() - 301)
                stale = await http.post(path, content=body, headers=headers)
                body, headers = alice.click("remedium_approve", alert.workflow_id, "flush-cache")
                tampered = await http.post(path, content=body.replace(b"alice", b"alicf"), headers=headers)
                unsigned = await http.post(
                    path, content=body, headers={"Content-Type": headers["Content-Type"]}
                )
                await interactions.drain()
                # nothing changed for the refused clicks: still waiting, each refusal audited
                status = await handle.query("status", result_type=IncidentStatus)
                refusals = [e for e in await handle.query("audit") if e["kind"] == "approval_refused"]
                replies_before = len(received)

                body, headers = alice.click("remedium_approve", alert.workflow_id, "flush-cache")
                approved = await http.post(path, content=body, headers=headers)
                repeated = await http.post(path, content=body, headers=headers)  # Slack retried the click
                result = await handle.result()
                await interactions.drain()
                approved_replies = received[replies_before:]
                late_body, late_headers = alice.click("remedium_approve", alert.workflow_id, None)
                late = await http.post(path, content=late_body, headers=late_headers)
                late_reply = await _wait_for_reply(received, replies_before + 2)
                audit = await handle.query("audit")
                updates_after = await _updates_accepted(handle)
    finally:
        target.stop()

    for response in (not_allowed, wrong_step, approved, repeated, late):
        assert response.status_code == 200 and response.content == b""  # Slack's ack: at once, empty
    assert refused_reply == {
        "path": "/actions/T0123ABCD/1234567890123/AbCdEf",
        "response_type": "ephemeral",
        "replace_original": False,
        "text": "Not applied: Slack user UMALLORY (mallory) is not an approver: the policy maps no "
        "approver to that Slack user id (mapped: alice)",
    }
    assert wrong_step_reply["response_type"] == "ephemeral"
    assert "'no-such-step' is not the pending step (pending: 'flush-cache')" in wrong_step_reply["text"]
    assert forged.status_code == 401 and forged.json()["error"] == "signature does not match"
    assert tampered.status_code == 401 and tampered.json()["error"] == "signature does not match"
    assert stale.status_code == 401 and "outside the 5-minute window" in stale.json()["error"]
    assert unsigned.status_code == 401 and "missing X-Slack-Signature" in unsigned.json()["error"]
    assert status.stage == "awaiting_approval" and status.approvals == []
    assert [(e["actor"], e["data"]["channel"], e["data"].get("slack_user")) for e in refusals] == [
        ("mallory", "slack", "UMALLORY"),
        ("alice", "slack", "UALICE"),
    ], "every refused click is on record, with the verified Slack user id"
    assert "'no-such-step' is not the pending step" in refusals[1]["message"]
    assert replies_before == 2, "no reply at all for the requests that failed authentication"

    assert approved_replies == [
        {
            "path": "/actions/T0123ABCD/1234567890123/AbCdEf",
            "replace_original": False,
            "text": f"Approved step flush-cache of {alert.workflow_id}",
        }
    ], "one reply: the repeated click was dropped"
    assert updates_after == 3, "two refused, one approved; the failed signatures never reached Temporal"
    assert result.outcome == "resolved"
    assert len(target.applied_to("/restart")) == 1
    decided = [e for e in audit if e["kind"] == "approved"]
    assert len(decided) == 1
    assert decided[0]["actor"] == "alice" and decided[0]["step"] == "flush-cache"
    assert decided[0]["message"] == "step flush-cache approved by alice via slack (verified UALICE)"
    # a click after the incident closed: told so, privately
    assert late_reply["response_type"] == "ephemeral"
    assert late_reply["text"] == f"Not applied: {alert.workflow_id} is not running (closed or unknown)"


async def test_the_vector_is_valid_for_five_minutes_then_refused_and_the_docs_vector_verifies(
    dev_env: WorkflowEnvironment,
) -> None:
    body, headers = VECTOR["raw_body"].encode(), VECTOR["http"]["headers"]
    clock = FixedClock(VECTOR["verify_at_unix_time"])
    settings = ingress_settings(slack_signing_secret=SecretStr(VECTOR["signing_secret"]))
    async with slack_ingress(dev_env.client, settings, clock) as (http, _):
        path = "/webhooks/slack/interactions"
        in_window = await http.post(path, content=body, headers=headers)
        clock.at = VECTOR["reject_if_now_after"]
        last_second = await http.post(path, content=body, headers=headers)
        clock.at = 1700000343
        too_late = await http.post(path, content=body, headers=headers)
        clock.at = int(headers["X-Slack-Request-Timestamp"]) - 301
        from_the_future = await http.post(path, content=body, headers=headers)
        metrics = (await http.get("/metrics")).text
    # the vector's button is not a Remedium button: verified, acknowledged, ignored
    assert in_window.status_code == 200 and last_second.status_code == 200
    assert too_late.status_code == 401 and "outside the 5-minute window" in too_late.json()["error"]
    assert from_the_future.status_code == 401
    assert 'remedium_webhooks_total{outcome="ignored",source="slack"} 2.0' in metrics

    docs = VECTOR["known_answer_from_slack_docs"]
    docs_headers = {
        "x-slack-request-timestamp": docs["timestamp"],
        "x-slack-signature": docs["X-Slack-Signature"],
    }
    at_docs_time = SignatureVerifier(docs["signing_secret"], FixedClock(int(docs["timestamp"]) + 10))
    verify(at_docs_time, docs["body"].encode(), docs_headers)
    with pytest.raises(Unauthorized, match="signature does not match"):
        verify(at_docs_time, docs["body"].encode() + b"&x=1", docs_headers)


async def test_unconfigured_secret_and_malformed_interactions_are_refused(
    dev_env: WorkflowEnvironment,
) -> None:
    user = SlackUser("alice", "http://127.0.0.1:9/unused")
    body, headers = user.click("remedium_approve", "incident-pagerduty-NOPE", None)
    async with slack_ingress(dev_env.client, ingress_settings(slack_signing_secret=None)) as (http, _):
        unconfigured = await http.post("/webhooks/slack/interactions", content=body, headers=headers)
    assert unconfigured.status_code == 401
    assert "REMEDIUM_SLACK_SIGNING_SECRET is not configured" in unconfigured.json()["error"]

    def signed(raw: bytes) -> tuple[bytes, dict[str, str]]:
        timestamp = str(int(time.time()))
        signature = SignatureVerifier(SECRET).generate_signature(timestamp=timestamp, body=raw)
        assert signature is not None
        return raw, {**headers, "X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature}

    bad_value = body.replace(b"workflow_id", b"flow")  # the button's value lost its workflow id
    settings = ingress_settings(slack_signing_secret=SecretStr(SECRET))
    async with slack_ingress(dev_env.client, settings) as (http, _):

        async def post(raw: bytes) -> httpx.Response:
            content, signed_headers = signed(raw)
            return await http.post("/webhooks/slack/interactions", content=content, headers=signed_headers)

        no_payload = await post(b"token=x")
        not_json = await post(b"payload=%7Bnope")
        wrong_value = await post(bad_value)
    assert no_payload.status_code == 400 and 'form field "payload" is missing' in no_payload.json()["error"]
    assert not_json.status_code == 400 and "payload" in not_json.json()["error"]
    assert wrong_value.status_code == 400 and "button value must be JSON" in wrong_value.json()["error"]


async def test_reject_button_rejects_the_step_and_nothing_is_applied(
    dev_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMEDIUM_SLACK_SIGNING_SECRET", SECRET)
    target = TargetService().start()
    rb_dir = tmp_path / "runbooks"
    rb_dir.mkdir()
    (rb_dir / "api-flush.yaml").write_text(yaml.safe_dump(api_runbook(target)))
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "approval": {"approvers": [{"name": "bob", "slack": "UBOB"}], "required_for": ["high"]},
                **http_allow(target.url),
            }
        )
    )
    worker_settings = settings_for(tmp_path, rb_dir, policy)
    alert = Alert(
        source="pagerduty",
        id=f"SLACKREJ{uuid.uuid4().hex[:8].upper()}",
        title="A little bump in the road",
        service="API Service",
        severity="P1",
    )
    settings = ingress_settings(slack_signing_secret=SecretStr(SECRET), task_queue=worker_settings.task_queue)
    try:
        with response_url_sink() as (response_url, received):
            async with (
                worker_for(dev_env.client, worker_settings),
                slack_ingress(dev_env.client, settings) as (http, _),
            ):
                assert await start_incident(dev_env.client, worker_settings.task_queue, alert)
                handle = dev_env.client.get_workflow_handle(alert.workflow_id, result_type=IncidentResult)
                await wait_for_stage(handle, "awaiting_approval")
                bob = SlackUser("bob", response_url)
                body, headers = bob.click("remedium_reject", alert.workflow_id, "flush-cache")
                clicked = await http.post("/webhooks/slack/interactions", content=body, headers=headers)
                result = await handle.result()
                reply = await _wait_for_reply(received, 1)
                audit = await handle.query("audit")
    finally:
        target.stop()
    assert clicked.status_code == 200
    assert reply == {
        "path": "/actions/T0123ABCD/1234567890123/AbCdEf",
        "replace_original": False,
        "text": f"Rejected step flush-cache of {alert.workflow_id}",
    }
    assert target.applied == []
    assert result.actions == [] and result.outcome != "resolved"
    rejected = [e for e in audit if e["kind"] == "rejected"]
    assert [(e["actor"], e["step"]) for e in rejected] == [("bob", "flush-cache")]

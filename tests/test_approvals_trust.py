"""Approvals bound to a verified identity, the step and the request: every path on a real worker.

Each test drives what an operator (or an attacker) really sends: signals as the Temporal UI
sends them, the `decide` update through the Temporal client, `remedium approve` as a
subprocess, and Slack clicks through the real ingress, signed with the real signing secret.
The outcome is read where a user reads it: the update's answer or refusal, the CLI's exit
code and stderr, the Slack reply, the audit trail, and what the target service received.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml
from pydantic import SecretStr
from slack_sdk.signature import SignatureVerifier
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from remedium.demo.sandbox.slack import SlackSandbox
from remedium.ingress.app import create_app
from remedium.ingress.slack import SlackInteractions
from remedium.models import (
    Alert,
    AuditEntry,
    DecideRequest,
    IncidentStatus,
    SlackInteraction,
)
from remedium.replay import replay_paths
from remedium.settings import Settings
from tests.conftest import dev_address
from tests.plugins.alertmanager import ingress_settings, serve_app
from tests.support import (
    TargetService,
    alert_for,
    api_runbook,
    http_allow,
    settings_for,
    start,
    wait_for_stage,
    worker_for,
)
from tests.test_ingress_slack import response_url_sink

BIN = Path(sys.executable).parent
VECTOR = json.loads(
    (
        Path(__file__).resolve().parents[2] / "shared" / "vectors" / "slack_block_actions_signed.json"
    ).read_text()
)
SECRET = "slack-secret-" + uuid.uuid4().hex
INTERACTIONS = "/webhooks/slack/interactions"
ALICE = {"name": "alice", "slack": "U0ALICE"}
SLACK_CHANNEL = "C0INCIDENTS"


@pytest.fixture
def target() -> Iterator[TargetService]:
    service = TargetService().start()
    yield service
    service.stop()


@pytest.fixture
def signing_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """The worker reads REMEDIUM_SLACK_SIGNING_SECRET too: it verifies each click again."""
    monkeypatch.setenv("REMEDIUM_SLACK_SIGNING_SECRET", SECRET)
    return SECRET


def _config(
    tmp: Path, runbook: dict[str, Any], target: TargetService, approval: dict[str, Any], **extra: Any
) -> Settings:
    rb_dir = tmp / "runbooks"
    rb_dir.mkdir(exist_ok=True)
    (rb_dir / f"{runbook['metadata']['name']}.yaml").write_text(yaml.safe_dump(runbook, sort_keys=False))
    policy = tmp / "policy.yaml"
    values = {"apiVersion": "remedium/v1", "kind": "Policy", "approval": approval, **http_allow(target.url)}
    policy.write_text(yaml.safe_dump(values))
    if extra:  # integration settings too, e.g. the Slack sandbox the reporter posts to
        return Settings(
            runbooks_dir=rb_dir, policy_file=policy, task_queue=f"tq-{uuid.uuid4().hex[:8]}", **extra
        )
    return settings_for(tmp, rb_dir, policy)


def two_step_runbook(target: TargetService) -> dict[str, Any]:
    """The finding's shape: switch the job's source, then re-run the job; each waits for approval."""

    def step(step_id: str) -> dict[str, Any]:
        return {
            "id": step_id,
            "action": "http.request",
            "risk": "medium",
            "with": {"url": f"{target.url}/admin/{step_id}", "json": {"job": "nightly-etl"}},
            "approval": {"required": True},
        }

    return {
        "apiVersion": "remedium/v1",
        "kind": "Runbook",
        "metadata": {"name": "etl-two-steps"},
        "match": {"source": ["manual"], "service": ["web*"]},
        "plan": [step("switch-source"), step("rerun-job")],
        "verify": {
            "checks": [{"id": "health", "kind": "http", "with": {"url": f"{target.url}/health"}}],
            "success": ["facts.health.value.status == 200"],
            "every": "1s",
            "within": "20s",
        },
    }


def api_alert() -> Alert:
    """Matched by `api_runbook`: one high-risk step, `flush-cache`."""
    return Alert(
        source="pagerduty",
        id=f"TRUST{uuid.uuid4().hex[:8].upper()}",
        title="A little bump in the road",
        service="API Service",
        severity="P1",
    )


def slack_click(
    user_id: str,
    username: str,
    workflow_id: str,
    step: str | None,
    *,
    request: int | None = 1,
    action: str = "remedium_approve",
    response_url: str = "http://127.0.0.1:9/unused",
    secret: str = SECRET,
    age_s: float = 0,
) -> tuple[bytes, dict[str, str]]:
    """A button click as Slack delivers it: a `payload=` form body, signed with `secret`."""
    payload = json.loads(json.dumps(VECTOR["payload"]))
    payload["user"].update(id=user_id, username=username, name=username)
    payload["response_url"] = response_url
    value: dict[str, Any] = {"workflow_id": workflow_id, "step": step}
    if request is not None:
        value["request"] = request
    payload["actions"] = [
        {
            "type": "button",
            "action_id": action,
            "block_id": "remedium_approval",
            "text": {"type": "plain_text", "text": "Approve", "emoji": True},
            "value": json.dumps(value),
            "style": "primary",
            "action_ts": f"{time.time():.6f}",
        }
    ]
    body = ("payload=" + quote(json.dumps(payload, separators=(",", ":")), safe="")).encode()
    timestamp = str(int(time.time() - age_s))
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    assert signature is not None
    return body, {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature,
    }


@asynccontextmanager
async def slack_ingress(
    client: Client, task_queue: str
) -> AsyncIterator[tuple[httpx.AsyncClient, SlackInteractions]]:
    """The real ingress app on a loopback port, with the real signing secret."""

    async def get() -> Client:
        return client

    settings = ingress_settings(slack_signing_secret=SecretStr(SECRET), task_queue=task_queue)
    app = create_app(settings, get)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        interactions: SlackInteractions = app.state.slack_interactions
        try:
            yield http, interactions
        finally:
            await interactions.drain()


async def _audit(handle: WorkflowHandle[Any, Any]) -> list[AuditEntry]:
    entries: list[AuditEntry] = await handle.query("audit", result_type=list[AuditEntry])
    return entries


async def _status(handle: WorkflowHandle[Any, Any]) -> IncidentStatus:
    status: IncidentStatus = await handle.query("status", result_type=IncidentStatus)
    return status


async def _refusals(handle: WorkflowHandle[Any, Any], count: int) -> list[AuditEntry]:
    """The incident's `approval_refused` entries, once there are `count` of them (signals are async)."""
    found: list[AuditEntry] = []
    for _ in range(300):
        found = [e for e in await _audit(handle) if e.kind == "approval_refused"]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} approval_refused entries, got {[e.message for e in found]}")


async def _until(
    handle: WorkflowHandle[Any, Any], ok: Callable[[IncidentStatus], bool], what: str
) -> IncidentStatus:
    status = await _status(handle)
    for _ in range(300):
        if ok(status):
            return status
        await asyncio.sleep(0.05)
        status = await _status(handle)
    raise AssertionError(f"{what} never happened; last status: {status}")


async def _wait_for_reply(received: list[dict[str, Any]], count: int) -> dict[str, Any]:
    for _ in range(300):
        if len(received) >= count:
            return received[count - 1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"response_url got {len(received)} replies, expected {count}: {received}")


async def _refused_update(handle: WorkflowHandle[Any, Any], request: DecideRequest) -> ApplicationError:
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update("decide", request, result_type=str)
    cause = refused.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ApprovalRefused", cause
    return cause


def _cli_env(env: WorkflowEnvironment, settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "REMEDIUM_TEMPORAL_ADDRESS": dev_address(env),
        "REMEDIUM_TASK_QUEUE": settings.task_queue,
        "REMEDIUM_RUNBOOKS_DIR": str(settings.runbooks_dir),
        "REMEDIUM_POLICY_FILE": str(settings.policy_file),
    }


async def _remedium(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [str(BIN / "remedium"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def _replays(handle: WorkflowHandle[Any, Any], tmp: Path) -> str | None:
    """Replay the incident's own history against this code: None when it is deterministic.

    The new rules live in signal and update handlers behind `workflow.patched`, and the Slack
    check is an activity run by an update handler: their histories must replay too.
    """
    path = tmp / f"{handle.id}.json"
    path.write_text((await handle.fetch_history()).to_json())
    ((_, failure),) = await replay_paths([path])
    return failure


async def _terminate(*handles: WorkflowHandle[Any, Any]) -> None:
    """Leave no incident waiting on the shared dev server (it would show in `remedium approvals`)."""
    for handle in handles:
        try:
            await handle.terminate("test finished")
        except Exception:
            pass  # it ended on its own


# ------------------------------------------------------------------ finding 1: bound to the step


async def test_stepless_signals_sent_twice_approve_nothing_and_an_old_request_never_approves_the_next(
    dev_env: WorkflowEnvironment, tmp_path: Path, target: TargetService
) -> None:
    target.health_status = 200  # the job's health check passes once both steps ran
    settings = _config(
        tmp_path, two_step_runbook(target), target, {"approvers": ["alice"], "required_for": []}
    )
    async with worker_for(dev_env.client, settings):
        handle = await start(dev_env.client, settings, alert_for(target))
        try:
            first = await wait_for_stage(handle, "awaiting_approval")
            metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
            # the finding: `{"by": "alice"}` sent twice as the `approve` signal
            await handle.signal("approve", {"by": "alice"})
            await handle.signal("approve", {"by": "alice"})
            stepless = await _refusals(handle, 2)
            still = await _status(handle)
            delivered_before = list(target.deliveries)

            # the approval that names the step (and its request), sent twice, like a double click
            await handle.signal("approve", {"step": "switch-source", "request": 1, "by": "alice"})
            await handle.signal("approve", {"step": "switch-source", "request": 1, "by": "alice"})
            second = await _until(
                handle,
                lambda s: s.pending_approval is not None and s.pending_approval.step == "rerun-job",
                "rerun-job waiting for approval",
            )
            doubled = await _refusals(handle, 3)
            # a decision written for request 1 cannot approve request 2, whatever step it names
            await handle.signal("approve", {"step": "rerun-job", "request": 1, "by": "alice"})
            await handle.signal("approve", {"by": "alice"})
            late = await _refusals(handle, 5)
            waiting = await _status(handle)
            delivered_while_waiting = [d.path for d in target.deliveries]

            answer = await handle.execute_update(
                "decide",
                DecideRequest(decision="approve", by="alice", step="rerun-job", request=2),
                result_type=str,
            )
            result = await handle.result()
            audit = await _audit(handle)
            replay = await _replays(handle, tmp_path)
        finally:
            await _terminate(handle)

    assert replay is None, replay
    assert first.pending_approval is not None and first.pending_approval.step == "switch-source"
    assert first.pending_approval.request == 1
    # the UI shows the exact JSON to paste, naming the step and the request
    assert '`{"step": "switch-source", "request": 1, "by": "<your name>", "reason": "<why>"}`' in (
        metadata.current_details
    )
    expected = (
        'approve signal from alice ignored: it names no step; the pending step is "switch-source": '
        'send {"step": "switch-source", "by": "alice"}'
    )
    assert [(e.message, e.actor, e.data["channel"]) for e in stepless] == [(expected, "alice", "signal")] * 2
    assert still.stage == "awaiting_approval" and still.approvals == []
    assert delivered_before == [], "nothing ran on a signal that named no step"

    assert second.pending_approval is not None and second.pending_approval.request == 2
    assert [(a.step, a.by, a.request) for a in second.approvals] == [("switch-source", "alice", 1)]
    assert doubled[2].actor == "alice" and doubled[2].kind == "approval_refused"
    assert late[3].message == (
        "approve signal from alice ignored: approval request 1 is closed; "
        "the pending one is request 2 (step 'rerun-job')"
    )
    assert late[4].message == (
        'approve signal from alice ignored: it names no step; the pending step is "rerun-job": '
        'send {"step": "rerun-job", "by": "alice"}'
    )
    assert waiting.stage == "awaiting_approval" and waiting.pending_approval is not None
    assert waiting.pending_approval.step == "rerun-job" and len(waiting.approvals) == 1
    assert delivered_while_waiting == ["/admin/switch-source"], "rerun-job waited for its own approval"

    assert answer == "step rerun-job approved by alice"
    assert result.outcome == "resolved", result.reason
    assert [d.path for d in target.applied] == ["/admin/switch-source", "/admin/rerun-job"]
    kinds = [(e.kind, e.step) for e in audit if e.kind in ("approved", "action_started")]
    assert kinds == [
        ("approved", "switch-source"),
        ("action_started", "switch-source"),
        ("approved", "rerun-job"),
        ("action_started", "rerun-job"),
    ]


# ------------------------------------------------------------------ finding 2: verified identity


async def test_spoofed_slack_username_is_refused_audited_and_nothing_runs(
    dev_env: WorkflowEnvironment, tmp_path: Path, target: TargetService, signing_secret: str
) -> None:
    settings = _config(
        tmp_path, api_runbook(target), target, {"approvers": [ALICE], "required_for": ["high"]}
    )
    alert = api_alert()
    with response_url_sink() as (response_url, received):
        async with (
            worker_for(dev_env.client, settings),
            slack_ingress(dev_env.client, settings.task_queue) as (http, interactions),
        ):
            handle = await start(dev_env.client, settings, alert)
            try:
                await wait_for_stage(handle, "awaiting_approval")
                # Slack user UEVIL999 renamed themselves "alice"; the click is genuinely signed
                body, headers = slack_click(
                    "UEVIL999", "alice", alert.workflow_id, "flush-cache", response_url=response_url
                )
                clicked = await http.post(INTERACTIONS, content=body, headers=headers)
                reply = await _wait_for_reply(received, 1)
                await interactions.drain()
                refusals = await _refusals(handle, 1)
                status = await _status(handle)
            finally:
                await _terminate(handle)

    assert clicked.status_code == 200 and clicked.content == b""
    reason = (
        "Slack user UEVIL999 (alice) is not an approver: the policy maps no approver to that "
        "Slack user id (mapped: alice)"
    )
    assert reply["response_type"] == "ephemeral" and reply["text"] == f"Not applied: {reason}"
    entry = refusals[0]
    assert (entry.kind, entry.actor, entry.step) == ("approval_refused", "alice", "flush-cache")
    assert entry.message == f"approve by alice via slack refused: {reason}"
    assert entry.data["channel"] == "slack" and entry.data["slack_user"] == "UEVIL999"
    assert entry.data["reason"] == reason
    assert status.stage == "awaiting_approval" and status.approvals == []
    assert target.deliveries == [], "nothing was executed"


async def _approval_button(slack: SlackSandbox) -> str:
    """The Approve button's value in the incident's Slack thread, as Slack shows it to people."""
    for _ in range(300):
        for parent in slack.top_level(SLACK_CHANNEL):
            for message in slack.thread(parent["ts"]):
                for block in message.get("blocks") or []:
                    for element in block.get("elements") or []:
                        if element.get("action_id") == "remedium_approve":
                            return str(element["value"])
        await asyncio.sleep(0.05)
    raise AssertionError("no Approve button was posted")


async def test_verified_slack_approver_approves_under_the_policy_name(
    dev_env: WorkflowEnvironment,
    tmp_path: Path,
    target: TargetService,
    signing_secret: str,
    slack_sandbox: SlackSandbox,
) -> None:
    settings = _config(
        tmp_path,
        api_runbook(target),
        target,
        {"approvers": [ALICE, "bob"], "required_for": ["high"]},
        slack_token=SecretStr(slack_sandbox.token),
        slack_channel=SLACK_CHANNEL,
        slack_api_url=slack_sandbox.api_url,
    )
    alert = api_alert()
    with response_url_sink() as (response_url, received):
        async with (
            worker_for(dev_env.client, settings),
            slack_ingress(dev_env.client, settings.task_queue) as (http, _),
        ):
            handle = await start(dev_env.client, settings, alert)
            try:
                await wait_for_stage(handle, "awaiting_approval")
                button = json.loads(await _approval_button(slack_sandbox))
                # the username is whatever U0ALICE chose; the approver is the policy's "alice"
                body, headers = slack_click(
                    "U0ALICE",
                    "al1ce.w",
                    button["workflow_id"],
                    button["step"],
                    request=button["request"],
                    response_url=response_url,
                )
                clicked = await http.post(INTERACTIONS, content=body, headers=headers)
                result = await asyncio.wait_for(handle.result(), 60)
                reply = await _wait_for_reply(received, 1)
                audit = await _audit(handle)
                status = await _status(handle)
                (parent,) = slack_sandbox.top_level(SLACK_CHANNEL)
                thread = json.dumps(slack_sandbox.thread(parent["ts"]))
                replay = await _replays(handle, tmp_path)
            finally:
                await _terminate(handle)

    assert replay is None, replay
    assert button == {"workflow_id": alert.workflow_id, "step": "flush-cache", "request": 1}
    assert clicked.status_code == 200
    assert reply == {
        "path": "/actions/T0123ABCD/1234567890123/AbCdEf",
        "replace_original": False,
        "text": f"Approved step flush-cache of {alert.workflow_id}",
    }
    assert result.outcome == "resolved", result.reason
    assert [d.body for d in target.applied] == [{"cache": "api"}]
    approved = [e for e in audit if e.kind == "approved"]
    assert [(e.actor, e.message) for e in approved] == [
        ("alice", "step flush-cache approved by alice via slack (verified U0ALICE)")
    ]
    assert approved[0].data["slack_user"] == "U0ALICE"
    assert [(a.by, a.via, a.verified) for a in status.approvals] == [("alice", "slack", "U0ALICE")]
    assert "Approved* by alice" in thread and "al1ce.w" not in thread, (
        "Slack names the approver, not the username"
    )


async def test_forged_update_with_a_slack_body_is_refused_and_audited(
    dev_env: WorkflowEnvironment, tmp_path: Path, target: TargetService, signing_secret: str
) -> None:
    """Anyone with Temporal access can send `decide`: a Slack body proves nothing unless it verifies."""
    settings = _config(
        tmp_path, api_runbook(target), target, {"approvers": [ALICE], "required_for": ["high"]}
    )
    alert, other = api_alert(), api_alert()
    async with worker_for(dev_env.client, settings):
        handle = await start(dev_env.client, settings, alert)
        try:
            await wait_for_stage(handle, "awaiting_approval")
            # a body naming alice's Slack id, signed without the signing secret
            body, headers = slack_click(
                "U0ALICE", "alice", alert.workflow_id, "flush-cache", secret="guessed-secret"
            )
            forged = SlackInteraction(
                body=body.decode(),
                timestamp=headers["X-Slack-Request-Timestamp"],
                signature=headers["X-Slack-Signature"],
            )
            bad_signature = await _refused_update(
                handle, DecideRequest(decision="approve", by="alice", step="flush-cache", slack=forged)
            )
            # a genuine click of alice's, captured from another incident, replayed here
            body, headers = slack_click("U0ALICE", "alice", other.workflow_id, "flush-cache")
            replayed = SlackInteraction(
                body=body.decode(),
                timestamp=headers["X-Slack-Request-Timestamp"],
                signature=headers["X-Slack-Signature"],
            )
            elsewhere = await _refused_update(
                handle, DecideRequest(decision="approve", by="alice", step="flush-cache", slack=replayed)
            )
            # a genuine click of alice's for this very step, captured and sent ten minutes later
            body, headers = slack_click("U0ALICE", "alice", alert.workflow_id, "flush-cache", age_s=600)
            captured = SlackInteraction(
                body=body.decode(),
                timestamp=headers["X-Slack-Request-Timestamp"],
                signature=headers["X-Slack-Signature"],
            )
            stale = await _refused_update(
                handle, DecideRequest(decision="approve", by="alice", step="flush-cache", slack=captured)
            )
            refusals = await _refusals(handle, 3)
            status = await _status(handle)
        finally:
            await _terminate(handle)

    assert stale.message == (
        "the Slack click does not verify: "
        "request timestamp is outside the 5-minute window (stale or replayed)"
    )
    assert bad_signature.message == "the Slack click does not verify: signature does not match"
    assert elsewhere.message == f"the Slack click is for {other.workflow_id}, not {alert.workflow_id}"
    assert [(e.actor, e.data["channel"], e.data["reason"]) for e in refusals] == [
        ("alice", "slack", bad_signature.message),
        ("alice", "slack", elsewhere.message),
        ("alice", "slack", stale.message),
    ]
    assert "slack_user" not in refusals[0].data, "an unverified body names nobody"
    assert refusals[1].data["slack_user"] == "U0ALICE"
    assert status.stage == "awaiting_approval" and status.approvals == []
    assert target.deliveries == []


async def test_require_verified_refuses_cli_and_signal_approvals_of_a_high_risk_step(
    dev_env: WorkflowEnvironment, tmp_path: Path, target: TargetService, signing_secret: str
) -> None:
    settings = _config(
        tmp_path,
        api_runbook(target),
        target,
        {"approvers": [ALICE], "required_for": ["high"], "require_verified": ["high"]},
    )
    alert = api_alert()
    with response_url_sink() as (response_url, _received):
        async with (
            worker_for(dev_env.client, settings),
            slack_ingress(dev_env.client, settings.task_queue) as (http, _),
        ):
            handle = await start(dev_env.client, settings, alert)
            try:
                await wait_for_stage(handle, "awaiting_approval")
                metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
                cli = await _remedium(
                    "approve", alert.workflow_id, "--step", "flush-cache", "--as", "alice",
                    env=_cli_env(dev_env, settings),
                )  # fmt: skip
                await handle.signal("approve", {"step": "flush-cache", "by": "alice"})
                refusals = await _refusals(handle, 2)
                status = await _status(handle)
                # the verified channel still works
                body, headers = slack_click(
                    "U0ALICE", "alice", alert.workflow_id, "flush-cache", response_url=response_url
                )
                await http.post(INTERACTIONS, content=body, headers=headers)
                result = await asyncio.wait_for(handle.result(), 60)
                audit = await _audit(handle)
            finally:
                await _terminate(handle)

    reason = (
        "step flush-cache (risk high) needs an approval from a verified channel: alice's approval "
        "{how} does not count; approve with the Slack button as an approver the policy maps to a "
        "Slack user id"
    )
    assert cli.returncode == 1, cli.stdout
    assert cli.stderr.strip() == "remedium: approve refused: " + reason.format(
        how="via update, self-declared"
    )
    assert [(e.actor, e.data["channel"], e.message) for e in refusals] == [
        (
            "alice",
            "update",
            "approve by alice via update refused: " + reason.format(how="via update, self-declared"),
        ),
        (
            "alice",
            "signal",
            "approve signal from alice ignored: " + reason.format(how="via signal, self-declared"),
        ),
    ]
    assert status.stage == "awaiting_approval" and status.approvals == []
    assert "Risk high needs a verified approval" in metadata.current_details
    assert result.outcome == "resolved", result.reason
    assert len(target.applied) == 1
    approved = [e.message for e in audit if e.kind == "approved"]
    assert approved == ["step flush-cache approved by alice via slack (verified U0ALICE)"]


# ------------------------------------------------------------------ finding 3: refusals audited


async def test_refused_updates_and_cli_approvals_are_audited_with_the_reason(
    dev_env: WorkflowEnvironment, tmp_path: Path, target: TargetService
) -> None:
    settings = _config(
        tmp_path, api_runbook(target), target, {"approvers": ["alice"], "required_for": ["high"]}
    )
    alert = api_alert()
    async with worker_for(dev_env.client, settings):
        handle = await start(dev_env.client, settings, alert)
        try:
            await wait_for_stage(handle, "awaiting_approval")
            refused = [
                await _refused_update(handle, request)
                for request in (
                    DecideRequest(decision="approve", by="mallory", step="flush-cache"),
                    DecideRequest(decision="approve", by="alice", step="scale-up"),
                    DecideRequest(decision="approve", by="", step="flush-cache"),
                    DecideRequest(decision="reject", by="alice"),
                )
            ]
            cli = await _remedium(
                "approve", alert.workflow_id, "--step", "flush-cache", "--as", "mallory",
                env=_cli_env(dev_env, settings),
            )  # fmt: skip
            refusals = await _refusals(handle, 5)
            status = await _status(handle)
        finally:
            await _terminate(handle)

    reasons = [
        "'mallory' may not approve: the policy allows alice",
        "step 'scale-up' is not the pending step (pending: 'flush-cache')",
        'an approval must say who decides: set "by" to your user name',
        'it names no step; the pending step is "flush-cache": '
        f"remedium reject {alert.workflow_id} --step flush-cache --as alice",
    ]
    assert [r.message for r in refused] == reasons
    assert cli.returncode == 1
    assert cli.stderr.strip() == f"remedium: approve refused: {reasons[0]}"
    assert [(e.actor, e.data["channel"], e.data["decision"], e.data["reason"]) for e in refusals] == [
        ("mallory", "update", "approve", reasons[0]),
        ("alice", "update", "approve", reasons[1]),
        ("unknown", "update", "approve", reasons[2]),
        ("alice", "update", "reject", reasons[3]),
        ("mallory", "update", "approve", reasons[0]),
    ]
    assert refusals[0].message == f"approve by mallory via update refused: {reasons[0]}"
    assert status.stage == "awaiting_approval" and status.approvals == []
    assert target.deliveries == []


# ------------------------------------------------------------------ finding 4: quorum and the worklist


async def test_quorum_of_two_waits_for_two_distinct_approvers_and_one_reject_rejects(
    dev_env: WorkflowEnvironment, tmp_path: Path, target: TargetService
) -> None:
    settings = _config(
        tmp_path,
        api_runbook(target),
        target,
        {"approvers": ["alice", "bob", "carol"], "required_for": ["high"], "quorum": {"high": 2}},
    )
    approved_alert, rejected_alert = api_alert(), api_alert()
    async with worker_for(dev_env.client, settings):
        handle = await start(dev_env.client, settings, approved_alert)
        other = await start(dev_env.client, settings, rejected_alert)
        try:
            await wait_for_stage(handle, "awaiting_approval")
            first = await handle.execute_update(
                "decide", DecideRequest(decision="approve", by="alice", step="flush-cache"), result_type=str
            )
            half = await _status(handle)
            metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
            again = await _refused_update(
                handle, DecideRequest(decision="approve", by="alice", step="flush-cache")
            )
            delivered_at_one = list(target.deliveries)
            await handle.signal(
                "approve", {"step": "flush-cache", "by": "bob", "reason": "second pair of eyes"}
            )
            result = await asyncio.wait_for(handle.result(), 60)
            audit = await _audit(handle)

            await wait_for_stage(other, "awaiting_approval")
            await other.execute_update(
                "decide", DecideRequest(decision="approve", by="alice", step="flush-cache"), result_type=str
            )
            rejected = await other.execute_update(
                "decide", DecideRequest(decision="reject", by="carol", step="flush-cache"), result_type=str
            )
            other_result = await asyncio.wait_for(other.result(), 60)
            replays = [await _replays(h, tmp_path) for h in (handle, other)]
        finally:
            await _terminate(handle, other)

    assert replays == [None, None], replays
    assert first == "step flush-cache approved by alice (1 of 2 approvals): waiting for 1 more"
    assert half.stage == "awaiting_approval" and half.pending_approval is not None
    assert (half.pending_approval.quorum, half.pending_approval.approved_by) == (2, ["alice"])
    assert "Approvals: 1 of 2 approvals (alice)" in metadata.current_details
    assert (
        again.message
        == "alice already approved step flush-cache; it needs 2 distinct approvers (1 of 2 approvals)"
    )
    assert delivered_at_one == [], "one approval of two runs nothing"
    assert result.outcome == "resolved", result.reason
    assert len(target.applied_to("/admin/restart")) == 1
    assert [e.message for e in audit if e.kind == "approved"] == [
        "step flush-cache approved by alice via update, self-declared (1 of 2 approvals)",
        "step flush-cache approved by bob via signal, self-declared (2 of 2 approvals): second pair of eyes",
    ]
    assert next(e for e in audit if e.kind == "approval_requested").message.endswith(
        "; it needs 2 distinct approvers"
    )
    assert rejected == "step flush-cache rejected by carol"
    assert other_result.outcome == "rejected" and "rejected by carol" in other_result.reason
    assert len(target.applied_to("/admin/restart")) == 1, "the rejected incident ran nothing"


async def test_remedium_approvals_json_lists_every_pending_approval(
    dev_env: WorkflowEnvironment, tmp_path: Path, target: TargetService
) -> None:
    settings = _config(
        tmp_path,
        api_runbook(target),
        target,
        {"approvers": ["alice", "bob"], "required_for": ["high"], "quorum": {"high": 2}},
    )
    env = _cli_env(dev_env, settings)
    alerts = [api_alert(), api_alert()]
    async with worker_for(dev_env.client, settings):
        handles = [await start(dev_env.client, settings, alert) for alert in alerts]
        try:
            for handle in handles:
                await wait_for_stage(handle, "awaiting_approval")
            await handles[0].execute_update(
                "decide", DecideRequest(decision="approve", by="alice", step="flush-cache"), result_type=str
            )
            ids = {handle.id for handle in handles}
            rows: dict[str, dict[str, Any]] = {}
            for _ in range(100):  # the visibility store catches up with the stage on its own time
                listed = await _remedium("approvals", "--json", env=env)
                assert listed.returncode == 0, listed.stderr
                rows = {r["workflow_id"]: r for r in json.loads(listed.stdout) if r["workflow_id"] in ids}
                if len(rows) == 2:
                    break
                await asyncio.sleep(0.2)
            table = await _remedium("approvals", env=env)
            statuses = [await _status(handle) for handle in handles]
        finally:
            await _terminate(*handles)

    assert set(rows) == ids
    for handle, status in zip(handles, statuses, strict=True):
        row, pending = rows[handle.id], status.pending_approval
        assert pending is not None
        assert row == {
            "workflow_id": handle.id,
            "step": "flush-cache",
            "request": 1,
            "action": "http.request",
            "risk": "high",
            "deadline": pending.deadline.isoformat(),
            "approvals": len(pending.approved_by),
            "quorum": 2,
            "approved_by": pending.approved_by,
            "verified_only": False,
            "approvers": ["alice", "bob"],
            "dry_run": pending.dry_run.summary,
        }
    assert rows[handles[0].id]["approved_by"] == ["alice"] and rows[handles[1].id]["approved_by"] == []
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["WORKFLOW_ID", "STEP", "ACTION", "RISK", "DEADLINE", "APPROVALS"]
    first_row = next(line for line in lines if line.startswith(handles[0].id))
    assert "flush-cache" in first_row and "1 of 2 (alice)" in first_row

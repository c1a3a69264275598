"""The human loop end to end: a real worker reports one incident to Slack, Jira and PagerDuty sandboxes.

The incident remediates a real HTTP service; the channels are the sandbox servers driven by
our reporters through slack_sdk, jira and httpx. Faults on the channels must never change
the remediation, only what the audit trail and the surviving channels say.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from activities.jira import incident_label
from remedium.demo.sandbox.jira import JiraSandbox
from remedium.demo.sandbox.pagerduty import PagerDutySandbox
from remedium.demo.sandbox.slack import SlackSandbox
from remedium.models import Alert, AuditEntry, IncidentResult
from remedium.settings import Settings
from tests.support import TargetService, restart_runbook, start, wait_for_stage, worker_for, write_config

CHANNEL = "C0INCIDENTS"


@pytest.fixture
def target() -> Iterator[TargetService]:
    service = TargetService(health_status=500, health_after_restart=200).start()
    try:
        yield service
    finally:
        service.stop()


def _settings(
    tmp: Path, rb_dir: Path, policy: Path, slack: SlackSandbox, jira: JiraSandbox, pd: PagerDutySandbox
) -> Settings:
    return Settings(
        runbooks_dir=rb_dir,
        policy_file=policy,
        task_queue=f"tq-{uuid.uuid4().hex[:8]}",
        slack_token=SecretStr(slack.token),
        slack_channel=CHANNEL,
        slack_api_url=slack.api_url if slack._server is not None else "http://127.0.0.1:9/api/",
        jira_url=jira.url,
        jira_user=jira.user,
        jira_token=SecretStr(jira.token),
        jira_project="OPS",
        pagerduty_token=SecretStr(pd.token),
        pagerduty_from="remedium@example.com",
        pagerduty_api_url=pd.url,
        temporal_ui_url="http://temporal.example:8233",
    )


def _alert(target: TargetService, pd: PagerDutySandbox) -> Alert:
    incident = f"Q{uuid.uuid4().hex[:12].upper()}"
    pd.add_incident(incident, "web-frontend health check failing")
    return Alert(
        source="pagerduty",
        id=incident,
        title="web-frontend health check failing",
        service="web-frontend",
        severity="P2",
        annotations={"base_url": target.url},
    )


def _unattended(
    tmp: Path, target: TargetService, slack: SlackSandbox, jira: JiraSandbox, pd: PagerDutySandbox
) -> tuple[Settings, Alert]:
    """An incident that needs no approval, reported to all three sandboxes."""
    rb_dir, policy = write_config(
        tmp, [restart_runbook(approval_required=False)], required_for=[], allow=[target.url]
    )
    return _settings(tmp, rb_dir, policy, slack, jira, pd), _alert(target, pd)


def _thread_text(slack: SlackSandbox) -> tuple[list[dict[str, Any]], str]:
    parents = slack.top_level(CHANNEL)
    assert len(parents) == 1, f"one thread per incident, got {len(parents)} top-level messages"
    thread = slack.thread(parents[0]["ts"])
    return thread, json.dumps(thread)


async def test_one_incident_reaches_every_channel_once_and_ends_with_the_summary(
    ts_env: WorkflowEnvironment,
    tmp_path: Path,
    target: TargetService,
    slack_sandbox: SlackSandbox,
    jira_sandbox: JiraSandbox,
    pagerduty_sandbox: PagerDutySandbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every library's most talkative level: still no secret
    rb_dir, policy = write_config(tmp_path, [restart_runbook()], allow=[target.url])
    settings = _settings(tmp_path, rb_dir, policy, slack_sandbox, jira_sandbox, pagerduty_sandbox)
    alert = _alert(target, pagerduty_sandbox)
    async with worker_for(ts_env.client, settings):
        handle = await start(ts_env.client, settings, alert)
        await wait_for_stage(handle, "awaiting_approval")
        await handle.signal("approve", {"step": "restart-pool", "by": "alice", "reason": "pool is wedged"})
        result = await handle.result()
        history = await handle.fetch_history()

    assert result.outcome == "resolved"
    assert len(target.applied) == 1

    # Slack: one thread; the approval message had buttons and now names who decided.
    thread, text = _thread_text(slack_sandbox)
    approval = [m for m in thread if "approve" in json.dumps(m.get("blocks", [])).lower()]
    assert approval, "an approval message was posted in the thread"
    assert "alice" in json.dumps(approval[-1]), "the approval message says who decided"
    assert not any(b.get("type") == "actions" for b in approval[-1].get("blocks", [])), (
        "the buttons are gone after the decision"
    )
    assert "restart-pool" in text and "resolved" in text.lower()

    # Jira: one ticket, comments per stage, transitioned to done, follow-up linked.
    incident_keys = jira_sandbox.find(incident_label(alert.workflow_id))
    assert len(incident_keys) == 1, f"one ticket per incident: {sorted(jira_sandbox.tickets)}"
    key = incident_keys[0]
    comments = "\n".join(jira_sandbox.comments(key))
    assert "Dry run" in comments or "dry run" in comments
    assert "restart-pool" in comments
    assert jira_sandbox.status(key) == "Done"
    assert jira_sandbox.links, "the follow-up ticket is linked to the incident's ticket"
    followup_summaries = [t["summary"] for k, t in jira_sandbox.tickets.items() if k != key]
    assert any("wedged" in s for s in followup_summaries), followup_summaries

    # PagerDuty: notes on the incident and resolved upstream.
    notes = pagerduty_sandbox.note_texts(alert.id)
    assert len(notes) >= 3
    assert pagerduty_sandbox.incidents[alert.id]["status"] == "resolved"

    # The end-of-incident summary reached Slack and Jira.
    assert "Timeline" in text
    assert "Timeline" in comments

    # Secrets never cross into workflow payloads (history = what Temporal stores and shows).
    # Payload data is raw bytes in the protobuf (base64 only in its JSON form), so search those.
    stored = b"".join(event.SerializeToString() for event in history.events)
    assert b"pool is wedged" in stored, "the search reaches payload contents (the approval reason)"
    for secret in (slack_sandbox.token, jira_sandbox.token, pagerduty_sandbox.token):
        assert secret.encode() not in stored
    # ...nor into logs, even at DEBUG
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "chat.postMessage" in logged, "the capture sees the clients' own debug logs"
    for secret in (slack_sandbox.token, jira_sandbox.token, pagerduty_sandbox.token):
        assert secret not in logged, f"a token reached the logs: {secret[:4]}…"


async def test_failing_channels_do_not_change_remediation_and_are_audited(
    ts_env: WorkflowEnvironment,
    tmp_path: Path,
    target: TargetService,
    slack_sandbox: SlackSandbox,
    jira_sandbox: JiraSandbox,
    pagerduty_sandbox: PagerDutySandbox,
) -> None:
    settings, alert = _unattended(tmp_path, target, slack_sandbox, jira_sandbox, pagerduty_sandbox)
    slack_sandbox.stop()  # Slack is down for the whole incident
    jira_sandbox.fail_next(r"/rest/api/2/", 500, count=10_000)  # Jira answers 500 to everything
    pagerduty_sandbox.fail_next(r"/incidents/", 429, count=1, retry_after=1)  # one rate limit, then fine

    async with worker_for(ts_env.client, settings):
        handle = await start(ts_env.client, settings, alert)
        result: IncidentResult = await handle.result()
        audit = await handle.query("audit", result_type=list[AuditEntry])

    assert result.outcome == "resolved"
    assert len(target.applied) == 1, "remediation happened exactly once despite the channels"

    failed = [e for e in audit if e.kind == "report_failed"]
    failed_channels = {str((e.data or {}).get("channel")) for e in failed}
    assert {"slack", "jira"} <= failed_channels, [e.message for e in failed]
    assert "pagerduty" not in failed_channels, "a single 429 is retried, not reported as a failure"

    notes = "\n".join(pagerduty_sandbox.note_texts(alert.id))
    assert "Reporting to slack failed" in notes or "Reporting to jira failed" in notes
    assert pagerduty_sandbox.incidents[alert.id]["status"] == "resolved"
    assert len(pagerduty_sandbox.requests_to("PUT", r"/incidents/")) >= 1
    assert not jira_sandbox.tickets, "Jira stayed down: nothing was created"


async def test_rate_limits_timeouts_and_a_down_pagerduty(
    ts_env: WorkflowEnvironment,
    tmp_path: Path,
    target: TargetService,
    slack_sandbox: SlackSandbox,
    jira_sandbox: JiraSandbox,
    pagerduty_sandbox: PagerDutySandbox,
) -> None:
    settings, alert = _unattended(tmp_path, target, slack_sandbox, jira_sandbox, pagerduty_sandbox)
    slack_sandbox.fail_next(r"chat\.postMessage", 429, count=2, retry_after=1)
    jira_sandbox.stall_next(r"/rest/api/2/issue$", 12.0)  # longer than the client's 10 s timeout
    pagerduty_sandbox.stop()  # PagerDuty unreachable for the whole incident

    async with worker_for(ts_env.client, settings):
        handle = await start(ts_env.client, settings, alert)
        result: IncidentResult = await handle.result()
        audit = await handle.query("audit", result_type=list[AuditEntry])

    assert result.outcome == "resolved"
    assert len(target.applied) == 1
    failed_channels = {str(e.data.get("channel")) for e in audit if e.kind == "report_failed"}
    assert failed_channels == {"pagerduty"}, [e.message for e in audit if e.kind == "report_failed"]
    # Events queued while PagerDuty's first report was still retrying are dropped once it has
    # failed, each audited, instead of each spending the whole retry budget in turn.
    skipped = [e for e in audit if e.kind == "report_failed" and e.data.get("skipped")]
    assert skipped and all("not sent: the channel failed earlier" in e.message for e in skipped)
    attempts = [e for e in audit if e.kind == "report_failed" and not e.data.get("skipped")]
    assert len(attempts) <= 2, [e.message for e in attempts]  # the first failure (and the outcome)

    thread, text = _thread_text(slack_sandbox)
    assert "Reporting to pagerduty failed" in text
    assert len(slack_sandbox.requests_to("POST", r"chat\.postMessage")) > len(thread) - 1
    keys = jira_sandbox.find(incident_label(alert.workflow_id))
    assert len(keys) == 1, "the timed-out create was retried without a second ticket"
    assert jira_sandbox.status(keys[0]) == "Done"
    assert any("Reporting to pagerduty failed" in c for c in jira_sandbox.comments(keys[0]))


async def test_unfixable_incident_is_reassigned_upstream_as_the_policy_says(
    ts_env: WorkflowEnvironment,
    tmp_path: Path,
    slack_sandbox: SlackSandbox,
    jira_sandbox: JiraSandbox,
    pagerduty_sandbox: PagerDutySandbox,
) -> None:
    service = TargetService(health_status=500, health_after_restart=500).start()  # restart does not help
    try:
        rb_dir, policy = write_config(
            tmp_path,
            [restart_runbook(approval_required=False)],
            required_for=[],
            policy_extra={"escalation": {"pagerduty": {"assign_to": ["PSRELD1"]}}},
            allow=[service.url],
        )
        settings = _settings(tmp_path, rb_dir, policy, slack_sandbox, jira_sandbox, pagerduty_sandbox)
        alert = _alert(service, pagerduty_sandbox)
        async with worker_for(ts_env.client, settings):
            result: IncidentResult = await (await start(ts_env.client, settings, alert)).result()
    finally:
        service.stop()

    assert result.outcome == "escalated", result.reason
    assert [d.path for d in service.applied] == ["/admin/restart", "/admin/restore"], "rolled back first"
    incident = pagerduty_sandbox.incidents[alert.id]
    assert incident["status"] == "triggered", "an escalated incident stays open upstream"
    assert [a["assignee"]["id"] for a in incident["assignments"]] == ["PSRELD1"]
    notes = "\n".join(pagerduty_sandbox.note_texts(alert.id))
    assert "Remedium reassigns this incident to PSRELD1." in notes
    assert "verification failed" in notes.lower()

"""Slack reporter (`report.slack`) through slack_sdk's AsyncWebClient against the Slack sandbox."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.exceptions import ApplicationError

from activities.slack import SlackReporter, SlackSettings, slack_web_client
from remedium.demo.sandbox.slack import SlackSandbox
from remedium.ingress.slack import ButtonValue
from remedium.models import ReportEvent

UI = "http://temporal.example:8233"
CHANNEL = "C0INCIDENTS"
Make = Callable[..., ReportEvent]


def _client(sandbox: SlackSandbox, token: str | None = None, timeout: int | None = None) -> AsyncWebClient:
    client = slack_web_client(SlackSettings(token=SecretStr(token or sandbox.token), api_url=sandbox.api_url))
    assert client is not None
    if timeout is not None:
        client.timeout = timeout
    return client


def _reporter(sandbox: SlackSandbox, token: str | None = None, timeout: int | None = None) -> SlackReporter:
    return SlackReporter(_client(sandbox, token, timeout), CHANNEL, UI)


def _buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for b in message.get("blocks") or [] if b["type"] == "actions" for e in b["elements"]]


async def test_one_thread_per_incident_across_workers_and_retries(
    slack_sandbox: SlackSandbox, report_event: Make
) -> None:
    opened = report_event("opened", 1, markdown="Alert from pagerduty: **payments/api crash looping**")
    diagnosis = report_event("diagnosis", 2, markdown="- `restarts`: 14\n- runbook **crashloop**")
    first = await _reporter(slack_sandbox).post(opened)
    await _reporter(slack_sandbox).post(opened)  # a retry on another worker: found via history
    await _reporter(slack_sandbox).post(diagnosis)
    await _reporter(slack_sandbox).post(diagnosis)

    (parent,) = slack_sandbox.top_level(CHANNEL)
    assert first.ref == parent["ts"]
    assert parent["blocks"][0]["text"]["text"] == "payments/api crash looping"
    thread = slack_sandbox.thread(parent["ts"])
    assert len(thread) == 2
    reply = thread[1]
    assert reply["thread_ts"] == parent["ts"]
    rendered = json.dumps(reply["blocks"])
    assert "Diagnosis for payments/api" in rendered and "*crashloop*" in rendered
    assert f"{UI}/namespaces/default/workflows/incident-pagerduty-PGR0VU2" in rendered


async def test_first_event_of_any_kind_opens_the_thread(
    slack_sandbox: SlackSandbox, report_event: Make
) -> None:
    result = await _reporter(slack_sandbox).post(
        report_event("verification", 5, title="Verification: healthy")
    )
    (parent,) = slack_sandbox.top_level(CHANNEL)
    thread = slack_sandbox.thread(parent["ts"])
    assert result.ref == parent["ts"]
    assert [m["text"] for m in thread[1:]] == ["Verification: healthy"]


async def test_reply_lands_but_answer_is_lost_then_retry_posts_nothing_new(
    slack_sandbox: SlackSandbox, report_event: Make
) -> None:
    await _reporter(slack_sandbox).post(report_event("opened", 1))
    slack_sandbox.fail_next(r"chat\.postMessage$", 500, after_effect=True)
    event = report_event("action", 6, step="restart", action="k8s.restart_deployment")
    with pytest.raises(ApplicationError) as failed:
        await _reporter(slack_sandbox).post(event)
    assert not failed.value.non_retryable
    await _reporter(slack_sandbox).post(event)
    (parent,) = slack_sandbox.top_level(CHANNEL)
    assert len(slack_sandbox.thread(parent["ts"])) == 2


async def test_approval_buttons_then_decision_rewrites_the_message(
    slack_sandbox: SlackSandbox, report_event: Make
) -> None:
    reporter = _reporter(slack_sandbox)
    await reporter.post(report_event("opened", 1))
    ask = report_event(
        "approval_requested",
        3,
        step="restart",
        action="k8s.restart_deployment",
        risk="medium",
        dry_run="would patch deployment payments/api restartedAt",
    )
    await reporter.post(ask)
    await reporter.post(ask)
    (parent,) = slack_sandbox.top_level(CHANNEL)
    approval = slack_sandbox.thread(parent["ts"])[1]
    buttons = _buttons(approval)
    assert [b["action_id"] for b in buttons] == ["remedium_approve", "remedium_reject"]
    values = [ButtonValue.model_validate_json(str(b["value"])) for b in buttons]
    assert values == [ButtonValue(workflow_id="incident-pagerduty-PGR0VU2", step="restart")] * 2
    shown = json.dumps(approval["blocks"])
    assert "restart" in shown and "medium" in shown and "would patch deployment" in shown

    decided = report_event("approval_decided", 4, step="restart", decision="approve", decided_by="alice")
    result = await _reporter(slack_sandbox).post(decided)
    await _reporter(slack_sandbox).post(decided)
    thread = slack_sandbox.thread(parent["ts"])
    assert len(thread) == 2  # updated in place, nothing new posted
    updated = thread[1]
    assert _buttons(updated) == []
    assert "Approved* by alice" in json.dumps(updated["blocks"])
    assert updated["text"].startswith("Approved by alice")
    assert result.detail == "approval message updated (approved)"


async def test_outcome_marks_the_parent(slack_sandbox: SlackSandbox, report_event: Make) -> None:
    await _reporter(slack_sandbox).post(report_event("opened", 1))
    await _reporter(slack_sandbox).post(
        report_event("outcome", 9, outcome="resolved", followups=["Raise memory limit of payments/api"])
    )
    (parent,) = slack_sandbox.top_level(CHANNEL)
    assert "Resolved" in parent["blocks"][1]["text"]["text"]
    assert "Raise memory limit" in json.dumps(slack_sandbox.thread(parent["ts"])[1]["blocks"])
    # the parent is still recognised as the incident's thread after its update
    await _reporter(slack_sandbox).post(report_event("outcome", 9, outcome="resolved"))
    assert len(slack_sandbox.top_level(CHANNEL)) == 1


async def test_not_configured_is_skipped(report_event: Make) -> None:
    assert slack_web_client(SlackSettings()) is None
    result = await SlackReporter(None, None, UI).post(report_event("opened"))
    assert result.skipped and "REMEDIUM_SLACK_TOKEN" in result.detail


async def test_rate_limit_carries_retry_after(slack_sandbox: SlackSandbox, report_event: Make) -> None:
    slack_sandbox.fail_next(r"conversations\.history$", 429, retry_after=30)
    with pytest.raises(ApplicationError) as failed:
        await _reporter(slack_sandbox).post(report_event("opened"))
    assert not failed.value.non_retryable
    assert failed.value.next_retry_delay == timedelta(seconds=30)
    assert slack_sandbox.messages == []


async def test_server_error_is_retryable(slack_sandbox: SlackSandbox, report_event: Make) -> None:
    slack_sandbox.fail_next(r"chat\.postMessage$", 503)
    with pytest.raises(ApplicationError) as failed:
        await _reporter(slack_sandbox).post(report_event("opened"))
    assert not failed.value.non_retryable and "HTTP 503" in failed.value.message


async def test_timeout_is_retryable(slack_sandbox: SlackSandbox, report_event: Make) -> None:
    slack_sandbox.stall_next(r"conversations\.history$", 5)
    with pytest.raises(ApplicationError) as failed:
        await _reporter(slack_sandbox, timeout=1).post(report_event("opened"))
    assert not failed.value.non_retryable and "no answer" in failed.value.message


async def test_down_server_is_retryable(slack_sandbox: SlackSandbox, report_event: Make) -> None:
    reporter = _reporter(slack_sandbox)
    slack_sandbox.stop()
    with pytest.raises(ApplicationError) as failed:
        await reporter.post(report_event("opened"))
    assert not failed.value.non_retryable and "cannot reach" in failed.value.message


async def test_bad_token_is_not_retryable_and_never_shown(
    slack_sandbox: SlackSandbox, report_event: Make
) -> None:
    secret = "xoxb-0000-wrong-secret-token"
    with pytest.raises(ApplicationError) as failed:
        await _reporter(slack_sandbox, token=secret).post(report_event("opened"))
    assert failed.value.non_retryable
    assert "invalid_auth" in failed.value.message
    assert secret not in str(failed.value) and failed.value.__cause__ is None
    assert (
        failed.value.__suppress_context__ or failed.value.__context__ is None
    )  # nothing chained to Temporal


async def test_sandbox_answers_errors_as_slack_does(slack_sandbox: SlackSandbox) -> None:
    client = _client(slack_sandbox)
    auth = await client.auth_test()
    assert auth["ok"] and auth["user_id"]
    from slack_sdk.errors import SlackApiError

    with pytest.raises(SlackApiError) as missing:
        await client.chat_postMessage(channel="C0NOPE", text="x")
    assert missing.value.response.status_code == 200
    assert missing.value.response["error"] == "channel_not_found"
    posted = await client.chat_postMessage(channel="#incidents", text="by name")
    assert posted["channel"] == CHANNEL
    with pytest.raises(SlackApiError) as by_name:
        await client.conversations_history(channel="#incidents")
    assert by_name.value.response["error"] == "channel_not_found"

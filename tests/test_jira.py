"""Jira reporter (`report.jira`) through the `jira` client library against the Jira sandbox."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from jira import JIRA
from pydantic import SecretStr
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.jira import JiraReporter, JiraSettings, incident_label, jira_connector
from remedium.bindings import reporter_activity
from remedium.demo.sandbox.jira import JiraSandbox
from remedium.models import ReportEvent, ReportResult

UI = "http://temporal.example:8233"
LABEL = "remedium-incident-pagerduty-PGR0VU2"
Make = Callable[..., ReportEvent]


def _connector(sandbox: JiraSandbox, token: str | None = None) -> Callable[[], JIRA]:
    connect = jira_connector(
        JiraSettings(url=sandbox.url, user=sandbox.user, token=SecretStr(token or sandbox.token))
    )
    assert connect is not None
    return connect


def _reporter(sandbox: JiraSandbox, token: str | None = None) -> JiraReporter:
    """A fresh reporter, as on another worker: nothing remembered, everything found through the API."""
    return JiraReporter(_connector(sandbox, token), "OPS", UI)


def test_label_is_the_sanitised_workflow_id() -> None:
    assert incident_label("incident-pagerduty-PGR0VU2") == LABEL
    assert (
        incident_label("incident-alertmanager-5f1a2b3c4d5e6f70")
        == "remedium-incident-alertmanager-5f1a2b3c4d5e6f70"
    )
    assert incident_label("incident-manual-disk full/node 3") == "remedium-incident-manual-disk-full-node-3"


async def test_connect_is_lazy_and_follows_the_client_sequence(jira_sandbox: JiraSandbox) -> None:
    connect = _connector(jira_sandbox)
    assert jira_sandbox.received == []
    assert connect() is connect()
    assert [r.path for r in jira_sandbox.received] == ["/rest/api/2/serverInfo"]


async def test_one_ticket_per_incident_and_one_comment_per_event(
    jira_sandbox: JiraSandbox, report_event: Make
) -> None:
    opened = report_event("opened", 1, markdown="Alert from pagerduty: **payments/api crash looping**")
    first = await _reporter(jira_sandbox).post(opened)
    await _reporter(jira_sandbox).post(opened)
    diagnosis = report_event("diagnosis", 2, runbook="crashloop", markdown="- `restarts`: 14")
    await _reporter(jira_sandbox).post(diagnosis)
    again = await _reporter(jira_sandbox).post(diagnosis)

    assert jira_sandbox.find(LABEL) == ["OPS-1"] and first.ref == "OPS-1"
    ticket = jira_sandbox.tickets["OPS-1"]
    assert ticket["summary"] == "[Remedium] payments/api crash looping"
    assert ticket["issuetype"]["name"] == "Incident"
    assert "*payments/api crash looping*" in ticket["description"]
    (comment,) = jira_sandbox.comments("OPS-1")
    assert "* {{restarts}}: 14" in comment and "* *Runbook:* crashloop" in comment
    assert f"{UI}/namespaces/default/workflows/incident-pagerduty-PGR0VU2" in comment
    assert again.detail == "diagnosis already on OPS-1"


async def test_ticket_created_by_whatever_event_comes_first(
    jira_sandbox: JiraSandbox, report_event: Make
) -> None:
    result = await _reporter(jira_sandbox).post(
        report_event("action", 5, step="restart", action="k8s.restart")
    )
    assert result.ref == "OPS-1" and result.detail.startswith("opened OPS-1")
    assert len(jira_sandbox.comments("OPS-1")) == 1


async def test_create_lands_but_reply_is_lost_then_retry_finds_the_ticket(
    jira_sandbox: JiraSandbox, report_event: Make
) -> None:
    jira_sandbox.fail_next(r"/rest/api/2/issue$", 500, after_effect=True)
    event = report_event("opened", 1)
    with pytest.raises(ApplicationError) as failed:
        await _reporter(jira_sandbox).post(event)
    assert not failed.value.non_retryable
    await _reporter(jira_sandbox).post(event)
    assert list(jira_sandbox.tickets) == ["OPS-1"]


async def test_resolved_outcome_closes_the_ticket_and_files_linked_followups(
    jira_sandbox: JiraSandbox, report_event: Make, caplog: pytest.LogCaptureFixture
) -> None:
    await _reporter(jira_sandbox).post(report_event("opened", 1))
    outcome = report_event(
        "outcome",
        9,
        outcome="resolved",
        title="Resolved: restarted payments/api",
        followups=["Raise the memory limit of payments/api", "Add a readiness probe"],
    )
    await _reporter(jira_sandbox).post(outcome)
    second = await _reporter(jira_sandbox).post(outcome)

    assert jira_sandbox.status("OPS-1") == "Done"
    assert len(jira_sandbox.tickets) == 3
    followups = {k: t for k, t in jira_sandbox.tickets.items() if "remedium-followup" in t["labels"]}
    assert sorted(t["summary"] for t in followups.values()) == [
        "[Remedium follow-up] Add a readiness probe",
        "[Remedium follow-up] Raise the memory limit of payments/api",
    ]
    assert sorted((link["inward"], link["outward"], link["type"]["name"]) for link in jira_sandbox.links) == [
        ("OPS-1", key, "Relates") for key in sorted(followups)
    ]
    assert "OPS-1 already Done" in second.detail and "already linked" in second.detail
    assert len(jira_sandbox.comments("OPS-1")) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def test_not_configured_is_skipped(report_event: Make) -> None:
    assert jira_connector(JiraSettings(url="http://jira.example")) is None
    result = await JiraReporter(None, None, UI).post(report_event("opened"))
    assert result.skipped and "REMEDIUM_JIRA_URL" in result.detail


async def test_rate_limit_carries_retry_after(jira_sandbox: JiraSandbox, report_event: Make) -> None:
    jira_sandbox.fail_next(r"/search", 429, retry_after=12)
    with pytest.raises(ApplicationError) as failed:
        await _reporter(jira_sandbox).post(report_event("opened"))
    assert not failed.value.non_retryable
    assert failed.value.next_retry_delay == timedelta(seconds=12)
    assert jira_sandbox.tickets == {}


async def test_server_error_is_retryable(jira_sandbox: JiraSandbox, report_event: Make) -> None:
    jira_sandbox.fail_next(r"/comment$", 502)
    with pytest.raises(ApplicationError) as failed:
        await _reporter(jira_sandbox).post(report_event("diagnosis", 2))
    assert not failed.value.non_retryable and "HTTP 502" in failed.value.message


async def test_timeout_is_retryable(
    jira_sandbox: JiraSandbox, report_event: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("activities.jira.TIMEOUT_S", 0.5)
    jira_sandbox.stall_next(r"/search", 5)
    with pytest.raises(ApplicationError) as failed:
        await _reporter(jira_sandbox).post(report_event("opened"))
    assert not failed.value.non_retryable and "timed out" in failed.value.message


async def test_down_server_is_retryable(jira_sandbox: JiraSandbox, report_event: Make) -> None:
    reporter = _reporter(jira_sandbox)
    jira_sandbox.stop()
    with pytest.raises(ApplicationError) as failed:
        await reporter.post(report_event("opened"))
    assert not failed.value.non_retryable and "cannot reach" in failed.value.message


async def test_bad_token_is_not_retryable_and_never_shown(
    jira_sandbox: JiraSandbox, report_event: Make
) -> None:
    secret = "ATATT3xWrongJiraSecretToken"
    with pytest.raises(ApplicationError) as failed:
        await _reporter(jira_sandbox, token=secret).post(report_event("opened"))
    assert failed.value.non_retryable
    assert "HTTP 401" in failed.value.message and "must be authenticated" in failed.value.message
    assert secret not in str(failed.value) and failed.value.__cause__ is None
    assert (
        failed.value.__suppress_context__ or failed.value.__context__ is None
    )  # nothing chained to Temporal


async def test_sandbox_speaks_jira_errors(jira_sandbox: JiraSandbox) -> None:
    from jira import JIRAError

    jira = _connector(jira_sandbox)()
    with pytest.raises(JIRAError) as missing:
        jira.issue("OPS-404")
    assert missing.value.status_code == 404
    assert missing.value.text == "Issue does not exist or you do not have permission to see it."
    with pytest.raises(JIRAError) as bad:
        jira.create_issue(fields={"project": {"key": "OPS"}, "issuetype": {"name": "Task"}})
    assert bad.value.status_code == 400 and "summary" in str(bad.value.text)
    assert jira.myself()["emailAddress"] == jira_sandbox.user


@workflow.defn(sandboxed=False)
class ReportOnceWorkflow:
    """Calls `report.jira` the way the outbox does: Temporal's retry policy, nothing else."""

    @workflow.run
    async def run(self, event: ReportEvent) -> ReportResult:
        result: ReportResult = await workflow.execute_activity(
            "report.jira",
            event,
            result_type=ReportResult,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=5),
        )
        return result


async def test_temporal_retries_after_lost_reply_and_429_leave_one_ticket(
    ts_env: WorkflowEnvironment, jira_sandbox: JiraSandbox, report_event: Make
) -> None:
    jira_sandbox.fail_next(r"/search", 429, retry_after=30)
    jira_sandbox.fail_next(r"/rest/api/2/issue$", 500, after_effect=True)
    queue = f"tq-{uuid.uuid4().hex[:8]}"
    reporter = _reporter(jira_sandbox)
    async with Worker(
        ts_env.client,
        task_queue=queue,
        workflows=[ReportOnceWorkflow],
        activities=[reporter_activity(reporter)],
    ):
        result = await ts_env.client.execute_workflow(
            ReportOnceWorkflow.run, report_event("opened", 1), id=f"report-{queue}", task_queue=queue
        )
    assert result.ok and result.ref == "OPS-1"
    assert list(jira_sandbox.tickets) == ["OPS-1"]
    # attempt 1: rate limited; attempt 2 (after Retry-After): created, answer lost; attempt 3: found
    assert [r.status for r in jira_sandbox.requests_to("GET", "/search")] == [429, 200, 200]
    assert [r.status for r in jira_sandbox.requests_to("POST", "/issue$")] == [500]


def test_sandbox_answers_the_captured_client_sequence(jira_sandbox: JiraSandbox) -> None:
    """Replays what jira 3.10.5 sent to a capture double (vectors/jira_client_request_sequence.json)."""
    jira = _connector(jira_sandbox)()
    jira.create_issue(
        project="OPS",
        summary="payments/api crash looping",
        description="Alert KubePodCrashLooping",
        issuetype={"name": "Incident"},
    )
    jira.create_issue(fields={"project": {"key": "OPS"}, "summary": "s", "issuetype": {"name": "Incident"}})
    jira.add_comment("OPS-1", "Restarted deployment payments/api (revision 7 -> 8)")
    jira.transition_issue("OPS-1", "Done", comment="Resolved automatically")
    jira.transition_issue("OPS-2", "31")
    jira.create_issue_link("Relates", "OPS-1", "OPS-2")
    seen = [(r.method, r.path, r.status) for r in jira_sandbox.received]
    assert seen == [
        ("GET", "/rest/api/2/serverInfo", 200),
        ("GET", "/rest/api/2/project/OPS", 200),
        ("POST", "/rest/api/2/issue", 201),
        ("GET", "/rest/api/2/issue/OPS-1", 200),
        ("POST", "/rest/api/2/issue", 201),
        ("GET", "/rest/api/2/issue/OPS-2", 200),
        ("POST", "/rest/api/2/issue/OPS-1/comment", 201),
        ("GET", "/rest/api/2/issue/OPS-1/transitions", 200),  # the capture also listed them beforehand
        ("POST", "/rest/api/2/issue/OPS-1/transitions", 204),
        ("POST", "/rest/api/2/issue/OPS-2/transitions", 204),
        ("GET", "/rest/api/2/issueLinkType", 200),
        ("POST", "/rest/api/2/issueLink", 201),
    ]
    assert jira_sandbox.received[-3].json == {"transition": {"id": 31}, "fields": {}}
    assert jira_sandbox.status("OPS-1") == jira_sandbox.status("OPS-2") == "Done"
    assert jira_sandbox.comments("OPS-1") == [
        "Restarted deployment payments/api (revision 7 -> 8)",
        "Resolved automatically",
    ]

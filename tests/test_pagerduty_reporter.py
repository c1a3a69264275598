"""PagerDuty reporter (`report.pagerduty`) through httpx against the PagerDuty REST sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import httpx
import pytest
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError

from activities.pagerduty import PagerDutyReporter, PagerDutySettings, pagerduty_http_client
from remedium.demo.sandbox.pagerduty import PagerDutySandbox
from remedium.models import ReportEvent
from remedium.models.policy import PagerDutyEscalation
from tests.plugins.messaging import PD_INCIDENT

UI = "http://temporal.example:8233"
Make = Callable[..., ReportEvent]


def _settings(sandbox: PagerDutySandbox, token: str | None = None) -> PagerDutySettings:
    return PagerDutySettings(
        token=SecretStr(token or sandbox.token),
        api_url=sandbox.url,
        from_="remedium@example.com",
    )


@pytest.fixture
async def client(pagerduty_sandbox: PagerDutySandbox) -> AsyncIterator[httpx.AsyncClient]:
    built = pagerduty_http_client(_settings(pagerduty_sandbox))
    assert built is not None
    async with built:
        yield built


def _reporter(
    client: httpx.AsyncClient | None,
    sender: str | None = "remedium@example.com",
    escalation: PagerDutyEscalation | None = None,
) -> PagerDutyReporter:
    return PagerDutyReporter(client, sender, UI, escalation)


async def test_notes_are_written_once_per_event_even_when_retried(
    pagerduty_sandbox: PagerDutySandbox, client: httpx.AsyncClient, report_event: Make
) -> None:
    event = report_event(
        "action", 4, step="restart", action="k8s.restart_deployment", markdown="**Restarted** it"
    )
    first = await _reporter(client).post(event)
    again = await _reporter(client).post(event)

    notes = pagerduty_sandbox.note_texts(PD_INCIDENT)
    assert len(notes) == 1
    assert "Action for payments/api" in notes[0] and "Restarted it" in notes[0]
    assert f"{UI}/namespaces/default/workflows/incident-pagerduty-{PD_INCIDENT}" in notes[0]
    assert first.ok and first.ref == PD_INCIDENT and first.detail == "note added"
    assert again.detail == "note already present"
    posted = pagerduty_sandbox.requests_to("POST", "/notes$")
    assert [r.header("From") for r in posted] == ["remedium@example.com"]


async def test_note_lands_but_reply_is_lost_then_retry_does_not_duplicate(
    pagerduty_sandbox: PagerDutySandbox, client: httpx.AsyncClient, report_event: Make
) -> None:
    pagerduty_sandbox.fail_next(r"/notes$", 502, after_effect=True)
    event = report_event("diagnosis", 2)
    with pytest.raises(ApplicationError) as failed:
        await _reporter(client).post(event)
    assert not failed.value.non_retryable
    await _reporter(client).post(event)
    assert len(pagerduty_sandbox.note_texts(PD_INCIDENT)) == 1


async def test_resolved_outcome_resolves_the_incident_with_a_resolution(
    pagerduty_sandbox: PagerDutySandbox, client: httpx.AsyncClient, report_event: Make
) -> None:
    event = report_event("outcome", 9, outcome="resolved", title="Resolved: restarted payments/api")
    result = await _reporter(client).post(event)
    assert pagerduty_sandbox.incidents[PD_INCIDENT]["status"] == "resolved"
    assert pagerduty_sandbox.log[-1]["resolution"] == "Resolved: restarted payments/api"
    assert result.detail == "note added, resolved"
    again = await _reporter(client).post(event)
    assert again.detail == "note already present, already resolved"
    assert len(pagerduty_sandbox.requests_to("PUT", "/incidents/")) == 1


async def test_escalation_raises_the_level_and_explains_why(
    pagerduty_sandbox: PagerDutySandbox, client: httpx.AsyncClient, report_event: Make
) -> None:
    event = report_event("outcome", 9, outcome="escalated", escalate=True, title="Verification failed twice")
    await _reporter(client).post(event)
    assert pagerduty_sandbox.incidents[PD_INCIDENT]["escalation_level"] == 2
    assert pagerduty_sandbox.incidents[PD_INCIDENT]["status"] == "triggered"
    (note,) = pagerduty_sandbox.note_texts(PD_INCIDENT)
    assert "escalation level 2" in note and "Verification failed twice" in note
    assert "/namespaces/default/workflows/incident-pagerduty-PGR0VU2" in note


async def test_policy_can_reassign_to_people_instead_of_raising_the_level(
    pagerduty_sandbox: PagerDutySandbox, client: httpx.AsyncClient, report_event: Make
) -> None:
    escalation = PagerDutyEscalation(assign_to=["PSRELD1", "PDBA002"])
    event = report_event("outcome", 9, outcome="escalated", escalate=True, title="Rollback did not help")
    result = await _reporter(client, escalation=escalation).post(event)

    incident = pagerduty_sandbox.incidents[PD_INCIDENT]
    assert [a["assignee"]["id"] for a in incident["assignments"]] == ["PSRELD1", "PDBA002"]
    assert incident["assigned_via"] == "direct_assignment"
    assert incident["escalation_level"] == 1, "reassigned, not escalated"
    (note,) = pagerduty_sandbox.note_texts(PD_INCIDENT)
    assert "Remedium reassigns this incident to PSRELD1, PDBA002." in note
    assert result.detail == "note added, escalated: reassigns to PSRELD1, PDBA002"
    (put,) = pagerduty_sandbox.requests_to("PUT", "/incidents/")
    assert put.json["incident"] == {
        "type": "incident_reference",
        "assignments": [
            {"assignee": {"id": "PSRELD1", "type": "user_reference"}},
            {"assignee": {"id": "PDBA002", "type": "user_reference"}},
        ],
    }


async def test_policy_can_hand_over_to_another_escalation_policy(
    pagerduty_sandbox: PagerDutySandbox, client: httpx.AsyncClient, report_event: Make
) -> None:
    escalation = PagerDutyEscalation(escalation_policy="PDBAPOL")
    event = report_event("outcome", 9, outcome="escalated", escalate=True, title="No runbook matched")
    await _reporter(client, escalation=escalation).post(event)
    incident = pagerduty_sandbox.incidents[PD_INCIDENT]
    assert incident["escalation_policy"]["id"] == "PDBAPOL"
    assert "escalation policy PDBAPOL" in pagerduty_sandbox.note_texts(PD_INCIDENT)[0]


async def test_other_sources_and_missing_configuration_are_skipped(
    pagerduty_sandbox: PagerDutySandbox, client: httpx.AsyncClient, report_event: Make
) -> None:
    from_am = await _reporter(client).post(report_event("diagnosis", source="alertmanager"))
    assert from_am.skipped and "alertmanager" in from_am.detail
    unconfigured = await _reporter(None).post(report_event("diagnosis"))
    assert unconfigured.skipped and "REMEDIUM_PAGERDUTY_TOKEN" in unconfigured.detail
    assert pagerduty_http_client(PagerDutySettings(token=None)) is None
    no_from = await _reporter(client, sender=None).post(report_event("diagnosis"))
    assert no_from.skipped and "REMEDIUM_PAGERDUTY_FROM" in no_from.detail
    assert pagerduty_sandbox.received == []


async def test_server_error_is_retryable(
    pagerduty_sandbox: PagerDutySandbox, client: httpx.AsyncClient, report_event: Make
) -> None:
    pagerduty_sandbox.fail_next(r"/incidents/", 500)
    with pytest.raises(ApplicationError) as failed:
        await _reporter(client).post(report_event("diagnosis"))
    assert not failed.value.non_retryable
    assert "HTTP 500" in failed.value.message


async def test_rate_limit_carries_retry_after_as_next_retry_delay(
    pagerduty_sandbox: PagerDutySandbox, client: httpx.AsyncClient, report_event: Make
) -> None:
    pagerduty_sandbox.fail_next(r"/notes$", 429, retry_after=17)
    with pytest.raises(ApplicationError) as failed:
        await _reporter(client).post(report_event("diagnosis"))
    assert not failed.value.non_retryable
    assert failed.value.next_retry_delay == timedelta(seconds=17)
    assert pagerduty_sandbox.note_texts(PD_INCIDENT) == []


async def test_timeout_is_retryable(pagerduty_sandbox: PagerDutySandbox, report_event: Make) -> None:
    pagerduty_sandbox.stall_next(r"/notes$", 5)
    async with httpx.AsyncClient(
        base_url=pagerduty_sandbox.url,
        headers={
            "Authorization": f"Token token={pagerduty_sandbox.token}",
            "Accept": "application/vnd.pagerduty+json;version=2",
        },
        timeout=0.5,
    ) as short:
        with pytest.raises(ApplicationError) as failed:
            await _reporter(short).post(report_event("diagnosis"))
    assert not failed.value.non_retryable
    assert "timed out" in failed.value.message


async def test_down_server_is_retryable(pagerduty_sandbox: PagerDutySandbox, report_event: Make) -> None:
    settings = _settings(pagerduty_sandbox)
    pagerduty_sandbox.stop()
    client = pagerduty_http_client(settings)
    assert client is not None
    async with client:
        with pytest.raises(ApplicationError) as failed:
            await _reporter(client).post(report_event("diagnosis"))
    assert not failed.value.non_retryable
    assert "cannot reach" in failed.value.message


async def test_bad_token_is_not_retryable_and_never_shown(
    pagerduty_sandbox: PagerDutySandbox, report_event: Make
) -> None:
    secret = "u+pdSECRET-wrong-token-value"
    client = pagerduty_http_client(_settings(pagerduty_sandbox, token=secret))
    assert client is not None
    async with client:
        with pytest.raises(ApplicationError) as failed:
            await _reporter(client).post(report_event("diagnosis"))
    assert failed.value.non_retryable
    assert "HTTP 401" in failed.value.message and "Authentication failed" in failed.value.message
    assert secret not in str(failed.value) and failed.value.__cause__ is None
    assert (
        failed.value.__suppress_context__ or failed.value.__context__ is None
    )  # nothing chained to Temporal


async def test_sandbox_requires_from_on_writes(pagerduty_sandbox: PagerDutySandbox) -> None:
    async with httpx.AsyncClient(
        base_url=pagerduty_sandbox.url,
        headers={
            "Authorization": f"Token token={pagerduty_sandbox.token}",
            "Accept": "application/vnd.pagerduty+json;version=2",
        },
    ) as raw:
        missing = await raw.post(f"/incidents/{PD_INCIDENT}/notes", json={"note": {"content": "x"}})
        unknown = await raw.get("/incidents/PNOPE")
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == 2001
    assert unknown.status_code == 404 and unknown.json() == {
        "error": {"message": "Not Found", "code": 2100, "errors": []}
    }

"""Fixtures for the human channels: Slack, Jira and PagerDuty sandboxes on loopback, and events to post."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from remedium.demo.sandbox.jira import JiraSandbox
from remedium.demo.sandbox.pagerduty import PagerDutySandbox
from remedium.demo.sandbox.slack import SlackSandbox
from remedium.models import Alert, ReportEvent

PD_INCIDENT = "PGR0VU2"


@pytest.fixture
def slack_sandbox() -> Iterator[SlackSandbox]:
    sandbox = SlackSandbox().start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def jira_sandbox() -> Iterator[JiraSandbox]:
    sandbox = JiraSandbox().start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def pagerduty_sandbox() -> Iterator[PagerDutySandbox]:
    sandbox = PagerDutySandbox().start()
    sandbox.add_incident(PD_INCIDENT, "payments/api crash looping")
    try:
        yield sandbox
    finally:
        sandbox.stop()


def make_event(kind: str, seq: int = 1, source: str = "pagerduty", **fields: Any) -> ReportEvent:
    """An event as IncidentWorkflow._notify builds it, for incident `incident-<source>-PGR0VU2`."""
    alert = Alert(
        source=source,
        id=PD_INCIDENT,
        title="payments/api crash looping",
        service="payments",
        severity="critical",
    )
    step = fields.get("step")
    values: dict[str, Any] = {
        "workflow_id": alert.workflow_id,
        "event_id": f"{seq:03d}-{kind}" + (f"-{step}" if step else ""),
        "kind": kind,
        "stage": fields.pop("stage", "acting"),
        "alert": alert,
        "title": fields.pop("title", f"{kind.replace('_', ' ').capitalize()} for payments/api"),
    }
    values.update(fields)
    return ReportEvent(**values)


@pytest.fixture
def report_event() -> Callable[..., ReportEvent]:
    return make_event

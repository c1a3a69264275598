"""The alert that opens an incident, normalised across sources."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from remedium.models.common import Model
from remedium.names import incident_workflow_id

AlertSource = Literal["pagerduty", "alertmanager", "manual"]


class Alert(Model):
    source: AlertSource
    id: str = Field(min_length=1, description="PagerDuty incident id or Alertmanager fingerprint")
    title: str
    service: str = ""
    severity: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    url: str | None = None
    started_at: datetime | None = None
    truncated: list[str] = Field(
        default_factory=list,
        description="what the ingress cut to fit the input limits (remedium.models.limits), one line each",
    )

    @property
    def workflow_id(self) -> str:
        return incident_workflow_id(self.source, self.id)

    def brief(self) -> AlertBrief:
        """What a channel needs to name the incident: no labels or annotations."""
        return AlertBrief.model_validate(self)


class AlertBrief(Model):
    """The alert as report events carry it: one per event and channel, so only what names it.

    Unknown fields are ignored rather than refused: a report event scheduled by an older
    worker carries the whole Alert, and a newer worker must still be able to post it.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    source: AlertSource
    id: str
    title: str
    service: str = ""
    severity: str = ""
    url: str | None = None
    started_at: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_alert(cls, value: Any) -> Any:
        """An Alert given where a brief is expected is briefed (the journal passes its alert)."""
        if isinstance(value, Alert):
            return value.model_dump(include=set(cls.model_fields))
        return value

    @property
    def workflow_id(self) -> str:
        return incident_workflow_id(self.source, self.id)


class ExternalUpdate(Model):
    """A lifecycle event from upstream (PagerDuty acknowledged/resolved/annotated, AM resolved)."""

    event: Literal["resolved", "acknowledged", "annotated", "reopened"]
    by: str = ""
    note: str = ""
    source: str = ""

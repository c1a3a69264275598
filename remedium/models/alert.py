"""The alert that opens an incident, normalised across sources."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

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

    @property
    def workflow_id(self) -> str:
        return incident_workflow_id(self.source, self.id)


class ExternalUpdate(Model):
    """A lifecycle event from upstream (PagerDuty acknowledged/resolved/annotated, AM resolved)."""

    event: Literal["resolved", "acknowledged", "annotated", "reopened"]
    by: str = ""
    note: str = ""
    source: str = ""

"""Temporal names of the public contract: task queue, workflow ids, search attributes."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

DEFAULT_TASK_QUEUE = "remedium"
DEFAULT_NAMESPACE = "default"
WORKFLOW_TYPE = "IncidentWorkflow"

SA_SERVICE = SearchAttributeKey.for_keyword("IncidentService")
SA_SEVERITY = SearchAttributeKey.for_keyword("IncidentSeverity")
SA_STAGE = SearchAttributeKey.for_keyword("IncidentStage")
SA_RUNBOOK = SearchAttributeKey.for_keyword("RunbookName")
SEARCH_ATTRIBUTES = (SA_SERVICE, SA_SEVERITY, SA_STAGE, SA_RUNBOOK)

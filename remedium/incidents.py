"""Starting and signalling incident workflows: the one place the ingress touches Temporal.

Starting is idempotent by workflow id: a duplicate delivery of the same alert, while the
incident runs or after it closed, starts nothing and says so.
"""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from remedium.models import Alert, ExternalUpdate, IncidentInput, IncidentResult
from remedium.names import SA_SERVICE, SA_SEVERITY, SA_STAGE, WORKFLOW_TYPE


async def start_incident(client: Client, task_queue: str, alert: Alert) -> bool:
    """Start the incident's workflow; False when it already exists (running or closed)."""
    # Set at start so the incident is searchable before its first workflow task runs.
    pairs: list[SearchAttributePair[str]] = [SearchAttributePair(SA_STAGE, "triggered")]
    if alert.service:
        pairs.append(SearchAttributePair(SA_SERVICE, alert.service))
    if alert.severity:
        pairs.append(SearchAttributePair(SA_SEVERITY, alert.severity))
    attributes = TypedSearchAttributes(pairs)
    try:
        await client.start_workflow(
            WORKFLOW_TYPE,
            IncidentInput(alert=alert),
            id=alert.workflow_id,
            task_queue=task_queue,
            result_type=IncidentResult,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=attributes,
            static_summary=f"{alert.title} ({alert.service or 'unknown service'})"[:200],
        )
    except WorkflowAlreadyStartedError:
        return False
    return True


async def signal_external_update(client: Client, workflow_id: str, update: ExternalUpdate) -> bool:
    """Deliver a lifecycle event; False when no such incident is running."""
    try:
        await client.get_workflow_handle(workflow_id).signal("external_update", update)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True

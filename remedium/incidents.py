"""Starting and signalling incident workflows: the one place the ingress touches Temporal.

Starting is idempotent by workflow id: a duplicate delivery of the same alert, while the
incident runs or after it closed, starts nothing and says so. Alertmanager alerts are the one
exception: a fingerprint is a hash of the labels, so the same alert firing again next week
reuses it; a new firing episode (another `startsAt`) opens a new run under the same id.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from remedium.models import Alert, DecideRequest, ExternalUpdate, IncidentInput, IncidentResult
from remedium.models.common import utc_text
from remedium.names import SA_SERVICE, SA_SEVERITY, SA_STAGE, WORKFLOW_TYPE


async def start_incident(client: Client, task_queue: str, alert: Alert) -> bool:
    """Start the incident's workflow; False when it already exists (running or closed)."""
    try:
        await _start(client, task_queue, alert, WorkflowIDReusePolicy.REJECT_DUPLICATE, {})
    except WorkflowAlreadyStartedError:
        return False
    return True


EPISODE_MEMO = "alert_episode"


async def start_alert_episode(client: Client, task_queue: str, alert: Alert, episode: str) -> bool:
    """Start the incident for one firing episode of a recurring alert; False for a repeat.

    A repeat is a delivery while the workflow runs, or after it closed for the same `episode`
    (kept in the workflow's memo). A closed run of an older episode does not block a new one.
    """
    memo = {EPISODE_MEMO: episode}
    try:
        await _start(client, task_queue, alert, WorkflowIDReusePolicy.REJECT_DUPLICATE, memo)
        return True
    except WorkflowAlreadyStartedError:
        pass
    description = await client.get_workflow_handle(alert.workflow_id).describe()
    if description.status == WorkflowExecutionStatus.RUNNING:
        return False
    if await description.memo_value(EPISODE_MEMO, None, type_hint=str) == episode:
        return False
    try:
        await _start(client, task_queue, alert, WorkflowIDReusePolicy.ALLOW_DUPLICATE, memo)
    except WorkflowAlreadyStartedError:  # a concurrent delivery of the new episode won
        return False
    return True


async def _start(
    client: Client,
    task_queue: str,
    alert: Alert,
    reuse: WorkflowIDReusePolicy,
    memo: dict[str, Any],
) -> None:
    # Set at start so the incident is searchable before its first workflow task runs.
    pairs: list[SearchAttributePair[str]] = [SearchAttributePair(SA_STAGE, "triggered")]
    if alert.service:
        pairs.append(SearchAttributePair(SA_SERVICE, alert.service))
    if alert.severity:
        pairs.append(SearchAttributePair(SA_SEVERITY, alert.severity))
    await client.start_workflow(
        WORKFLOW_TYPE,
        IncidentInput(alert=alert),
        id=alert.workflow_id,
        task_queue=task_queue,
        result_type=IncidentResult,
        id_reuse_policy=reuse,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        search_attributes=TypedSearchAttributes(pairs),
        memo=memo or None,
        static_summary=f"{alert.title} ({alert.service or 'unknown service'})"[:200],
        static_details=alert_details(alert),
    )


DETAIL_LABELS = 20


def alert_details(alert: Alert) -> str:
    """The alert as it arrived, for the Temporal UI's "Details" panel (fixed for the run)."""
    source = {"pagerduty": "PagerDuty incident", "alertmanager": "Alertmanager alert"}.get(
        alert.source, alert.source
    )
    where = f"[{alert.id}]({alert.url})" if alert.url else f"`{alert.id}`"
    lines = [f"**{source}** {where}  "]
    facts = [("Service", alert.service), ("Severity", alert.severity)]
    if alert.started_at is not None:
        facts.append(("Started", utc_text(alert.started_at)))
    lines += [f"**{name}:** {value}  " for name, value in facts if value]
    shown = sorted(alert.labels.items())[:DETAIL_LABELS]
    if shown:
        lines += ["", "**Labels:** " + ", ".join(f"`{k}={v}`" for k, v in shown)]
        if len(alert.labels) > DETAIL_LABELS:
            lines[-1] += f" and {len(alert.labels) - DETAIL_LABELS} more"
    summary = alert.annotations.get("description") or alert.annotations.get("summary")
    if summary:
        lines += ["", summary[:500]]
    return "\n".join(lines)


async def signal_external_update(client: Client, workflow_id: str, update: ExternalUpdate) -> bool:
    """Deliver a lifecycle event; False when no such incident is running."""
    try:
        await client.get_workflow_handle(workflow_id).signal("external_update", update)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


class DecisionRefused(Exception):
    """The incident refused the decision (validator); nothing was recorded in its history."""


class IncidentNotRunning(Exception):
    """No running incident has this workflow id (closed, or never existed)."""


async def decide(client: Client, workflow_id: str, request: DecideRequest) -> str:
    """Approve or reject through the validated `decide` update; returns the incident's answer.

    Raises DecisionRefused with the validator's reason (unknown step, approver not allowed,
    nothing pending) and IncidentNotRunning; other errors mean Temporal is unavailable.
    """
    handle = client.get_workflow_handle(workflow_id)
    try:
        result = await handle.execute_update("decide", request, result_type=str)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        raise DecisionRefused(cause.message if isinstance(cause, ApplicationError) else str(cause)) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise IncidentNotRunning(f"{workflow_id} is not running (closed or unknown)") from None
        raise
    return str(result)

"""The one client API for incident workflows: start, signal, decide, list and show.

The ingress and the CLI both go through here, so the workflow's names, payloads and the
way Temporal reports "no such incident" or "refused" are handled once.

Starting is idempotent by workflow id: a duplicate delivery of the same alert, while the
incident runs or after it closed, starts nothing and says so. Alertmanager alerts are the one
exception: a fingerprint is a hash of the labels, so the same alert firing again next week
reuses it; a new firing episode (another `startsAt`) opens a new run under the same id.

Where an incident starts is the policy's `priority` section: an urgent one (default: severity
P1 or critical) goes to `<task queue>-urgent`, which the worker polls with its own reserved
slots, so a storm queued on the normal task queue never stands in front of it. Separate queues
rather than Temporal task priority: priority reorders one queue's backlog but reserves no
worker slots, so while slow diagnostics of lower incidents hold every slot an urgent task still
waits; a reserved queue also needs no server-side priority support.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from remedium.errors import (
    DecisionRefused,
    IncidentError,
    IncidentNotFound,
    IncidentNotRunning,
    IncidentUnreadable,
)
from remedium.models import (
    Alert,
    AuditEntry,
    DecideRequest,
    ExternalUpdate,
    IncidentInput,
    IncidentResult,
    IncidentStatus,
    PendingApproval,
)
from remedium.models.common import utc_text
from remedium.models.policy import PriorityPolicy
from remedium.names import (
    AUDIT_QUERY,
    DECIDE_UPDATE,
    EXTERNAL_UPDATE_SIGNAL,
    SA_RUNBOOK,
    SA_SERVICE,
    SA_SEVERITY,
    SA_STAGE,
    STATUS_QUERY,
    WORKFLOW_TYPE,
    incident_workflow_id,
    urgent_task_queue,
)
from remedium.report_render import source_link
from remedium.untrusted import markdown_code, markdown_text

__all__ = [
    "DecisionRefused",
    "IncidentDetails",
    "IncidentError",
    "IncidentNotFound",
    "IncidentNotRunning",
    "IncidentSummary",
    "IncidentUnreadable",
    "PendingRow",
    "alert_details",
    "decide",
    "incident_task_queue",
    "list_incidents",
    "list_pending_approvals",
    "load_priority",
    "show_incident",
    "signal_external_update",
    "start_alert_episode",
    "start_incident",
]

log = logging.getLogger("remedium.incidents")
DEFAULT_PRIORITY = PriorityPolicy()


def load_priority(policy_file: Path | None) -> PriorityPolicy:
    """The policy's `priority` section for the ingress; the default one when the file is unreadable.

    The worker refuses a bad policy file; the ingress only ranks with it, so it keeps accepting
    pages (with the default ranking, and a warning) rather than refusing them.
    """
    from remedium.errors import ProblemsError
    from remedium.policy_loader import load_policy

    try:
        return load_policy(policy_file).priority
    except (ProblemsError, OSError) as exc:
        log.warning("policy %s unreadable, ranking incidents by the default priority: %s", policy_file, exc)
        return DEFAULT_PRIORITY


def incident_task_queue(task_queue: str, alert: Alert, priority: PriorityPolicy | None = None) -> str:
    """The normal task queue, or its reserved urgent twin when the policy ranks the alert urgent."""
    if (priority or DEFAULT_PRIORITY).is_urgent(alert.severity, alert.service):
        return urgent_task_queue(task_queue)
    return task_queue


async def start_incident(
    client: Client, task_queue: str, alert: Alert, priority: PriorityPolicy | None = None
) -> bool:
    """Start the incident's workflow; False when it already exists (running or closed)."""
    queue = incident_task_queue(task_queue, alert, priority)
    try:
        await _start(client, queue, alert, WorkflowIDReusePolicy.REJECT_DUPLICATE, {})
    except WorkflowAlreadyStartedError:
        return False
    return True


EPISODE_MEMO = "alert_episode"


async def start_alert_episode(
    client: Client,
    task_queue: str,
    alert: Alert,
    episode: str,
    priority: PriorityPolicy | None = None,
) -> bool:
    """Start the incident for one firing episode of a recurring alert; False for a repeat.

    A repeat is a delivery while the workflow runs, or after it closed for the same `episode`
    (kept in the workflow's memo). A closed run of an older episode does not block a new one.
    """
    memo = {EPISODE_MEMO: episode}
    task_queue = incident_task_queue(task_queue, alert, priority)
    try:
        await _start(client, task_queue, alert, WorkflowIDReusePolicy.REJECT_DUPLICATE, memo)
        return True
    except WorkflowAlreadyStartedError:
        pass
    description = await client.get_workflow_handle(_workflow_id(alert)).describe()
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
        id=_workflow_id(alert),
        task_queue=task_queue,
        result_type=IncidentResult,
        id_reuse_policy=reuse,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        search_attributes=TypedSearchAttributes(pairs),
        memo=memo or None,
        static_summary=markdown_text(f"{alert.title} ({alert.service or 'unknown service'})"[:200]),
        static_details=alert_details(alert),
    )


def _workflow_id(alert: Alert) -> str:
    return incident_workflow_id(alert.source, alert.id)


DETAIL_LABELS = 20


def alert_details(alert: Alert) -> str:
    """The alert as it arrived, for the Temporal UI's "Details" panel (fixed for the run)."""
    source = {"pagerduty": "PagerDuty incident", "alertmanager": "Alertmanager alert"}.get(
        alert.source, alert.source
    )
    # The UI renders this as Markdown: alert text is escaped, and only PagerDuty's own page links.
    url = source_link(alert)
    where = f"[{markdown_text(alert.id)}]({url})" if url else markdown_code(alert.id)
    lines = [f"**{source}** {where}  "]
    facts = [("Service", alert.service), ("Severity", alert.severity)]
    if alert.started_at is not None:
        facts.append(("Started", utc_text(alert.started_at)))
    lines += [f"**{name}:** {markdown_text(value)}  " for name, value in facts if value]
    shown = sorted(alert.labels.items())[:DETAIL_LABELS]
    if shown:
        lines += ["", "**Labels:** " + ", ".join(markdown_code(f"{k}={v}") for k, v in shown)]
        if len(alert.labels) > DETAIL_LABELS:
            lines[-1] += f" and {len(alert.labels) - DETAIL_LABELS} more"
    summary = alert.annotations.get("description") or alert.annotations.get("summary")
    if summary:
        lines += ["", markdown_text(summary[:500])]
    return "\n".join(lines)


async def signal_external_update(client: Client, workflow_id: str, update: ExternalUpdate) -> bool:
    """Deliver a lifecycle event; False when no such incident is running."""
    try:
        await client.get_workflow_handle(workflow_id).signal(EXTERNAL_UPDATE_SIGNAL, update)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def decide(client: Client, workflow_id: str, request: DecideRequest) -> str:
    """Approve or reject through the `decide` update; returns the incident's answer.

    Raises DecisionRefused with the workflow's reason (no or unknown step, approver not allowed,
    nothing pending, an unverified approval where the policy needs a verified one; the
    workflow audits each refusal) and IncidentNotRunning; other errors (RPCError) mean
    Temporal failed.
    """
    handle = client.get_workflow_handle(workflow_id)
    try:
        result = await handle.execute_update(DECIDE_UPDATE, request, result_type=str)
    except WorkflowUpdateFailedError as exc:
        # The handler records the refusal, then raises ApplicationError: its message is the reason.
        cause = exc.cause
        raise DecisionRefused(getattr(cause, "message", None) or str(cause)) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise IncidentNotRunning(f"{workflow_id} is not running (closed or unknown)") from None
        raise
    return str(result)


@dataclass(frozen=True)
class IncidentSummary:
    """One incident as the visibility store sees it: no worker needed to list it."""

    workflow_id: str
    status: WorkflowExecutionStatus | None
    stage: str
    service: str
    severity: str
    runbook: str
    started: datetime


@dataclass(frozen=True)
class IncidentDetails:
    """One incident's state and audit trail, as its workflow answers the queries."""

    status: IncidentStatus
    audit: list[AuditEntry]
    workflow_status: WorkflowExecutionStatus | None

    @property
    def running(self) -> bool:
        return self.workflow_status == WorkflowExecutionStatus.RUNNING


async def list_incidents(client: Client, limit: int) -> list[IncidentSummary]:
    """Open and recent incidents, from the visibility store (search attributes set as they run)."""
    rows: list[IncidentSummary] = []
    async for wf in client.list_workflows(f'WorkflowType = "{WORKFLOW_TYPE}"', limit=limit):
        sa = wf.typed_search_attributes
        rows.append(
            IncidentSummary(
                workflow_id=wf.id,
                status=wf.status,
                stage=sa.get(SA_STAGE) or "",
                service=sa.get(SA_SERVICE) or "",
                severity=sa.get(SA_SEVERITY) or "",
                runbook=sa.get(SA_RUNBOOK) or "",
                started=wf.start_time,
            )
        )
    return rows


async def show_incident(client: Client, workflow_id: str) -> IncidentDetails:
    """The `status` and `audit` queries of one incident, running or closed.

    Raises IncidentNotFound when no workflow has the id, and IncidentUnreadable when the
    queries fail (a closed incident needs a worker to answer them too).
    """
    handle = client.get_workflow_handle(workflow_id)
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise IncidentNotFound(f"no incident {workflow_id!r}") from None
        raise
    try:
        status = await handle.query(STATUS_QUERY, result_type=IncidentStatus)
        audit = await handle.query(AUDIT_QUERY, result_type=list[AuditEntry])
    except Exception as exc:  # no worker to answer, or one that cannot: either way unreadable
        raise IncidentUnreadable(workflow_id, description.status, str(exc)) from None
    return IncidentDetails(status=status, audit=audit, workflow_status=description.status)


@dataclass(frozen=True)
class PendingRow:
    """One approval waiting for a human: which incident, and the request as its workflow holds it."""

    workflow_id: str
    approval: PendingApproval


AWAITING_APPROVAL = (
    f'WorkflowType = "{WORKFLOW_TYPE}" AND ExecutionStatus = "Running" '
    f'AND {SA_STAGE.name} = "awaiting_approval"'
)


async def list_pending_approvals(client: Client, limit: int = 200) -> tuple[list[PendingRow], list[str]]:
    """Every pending approval across incidents, and the ids of waiting incidents that did not answer.

    Visibility finds the incidents (`IncidentStage = "awaiting_approval"`); each one's `status`
    query says what exactly waits, so a stage that moved on since is simply not listed.
    """
    rows: list[PendingRow] = []
    unreadable: list[str] = []
    async for wf in client.list_workflows(AWAITING_APPROVAL, limit=limit):
        try:
            status = await client.get_workflow_handle(wf.id, run_id=wf.run_id).query(
                STATUS_QUERY, result_type=IncidentStatus
            )
        except Exception:  # no worker to answer, or closed meanwhile
            unreadable.append(wf.id)
            continue
        if status.pending_approval is not None:
            rows.append(PendingRow(workflow_id=wf.id, approval=status.pending_approval))
    rows.sort(key=lambda row: row.approval.deadline)
    return rows, unreadable


async def export_history(client: Client, workflow_id: str) -> str:
    """One incident's history as JSON (`WorkflowHistory.to_json()`), running or closed: what
    `remedium replay` and `replay --shadow` read. Payloads stay as stored (encrypted ones too).

    Raises IncidentNotFound when no workflow has the id.
    """
    handle = client.get_workflow_handle(workflow_id)
    try:
        history = await handle.fetch_history()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise IncidentNotFound(f"no incident {workflow_id!r}") from None
        raise
    return history.to_json()

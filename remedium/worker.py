"""Build the worker from settings: load runbooks and policy, build clients, register activities.

The worker refuses to start on a bad runbook or policy (naming the file and line), and
on a namespace that lacks our search attributes (which would silently stall workflows).
It knows no external system by name: it connects every integration the catalog discovers
under `activities/` and registers every action, diagnostic and reporter found there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from activities.autonomy import AutonomyActivities
from activities.engine import RunbookActivities
from activities.guards import GuardActivities
from activities.llm import LlmActivities
from activities.rules import evaluate_policy_rules
from activities.slack import SlackApprovalActivities
from remedium.bindings import HEARTBEAT_THROTTLE, action_activities, diagnostic_activity, reporter_activity
from remedium.catalog import (
    Clients,
    IntegrationSettings,
    action_catalog,
    diagnostic_catalog,
    integration_catalog,
    reporter_catalog,
)
from remedium.connection import connect
from remedium.errors import StartupError, TemporalUnreachable
from remedium.metrics import metrics_runtime
from remedium.models import Policy, Runbook
from remedium.names import SEARCH_ATTRIBUTES, urgent_task_queue
from remedium.policy_loader import load_policy
from remedium.runbook.loader import load_runbooks
from remedium.settings import Settings
from remedium.versioning import deployment_config
from workflows.autonomy import AutonomyWorkflow
from workflows.freeze import FreezeWorkflow
from workflows.incident import IncidentWorkflow
from workflows.limiter import TargetLimiterWorkflow
from workflows.versioned import VERSIONED_WORKFLOWS

log = logging.getLogger("remedium.worker")


async def check_search_attributes(client: Client, namespace: str) -> None:
    try:
        response = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
    except RPCError as exc:
        if exc.status != RPCStatusCode.UNIMPLEMENTED:  # the time-skipping test server has no such call
            raise
        log.warning("cannot list search attributes on this server; assuming they are registered")
        return
    known = dict(response.custom_attributes)
    missing = [
        key.name
        for key in SEARCH_ATTRIBUTES
        if known.get(key.name) != IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    ]
    if missing:
        commands = "; ".join(
            f"temporal operator search-attribute create --namespace {namespace} --name {name} --type Keyword"
            for name in missing
        )
        raise StartupError(
            f"search attribute(s) {', '.join(missing)} are not registered as Keyword in namespace "
            f"{namespace!r}, so every incident would stall; register them: {commands}"
        )


def load_configuration(settings: Settings) -> tuple[list[Runbook], Policy]:
    """Everything or nothing: a bad file stops the worker before it takes any work."""
    from remedium.errors import ProblemsError

    try:
        runbooks = load_runbooks([settings.runbooks_dir])
    except ProblemsError as exc:
        raise StartupError(f"refusing to start: invalid runbooks:\n{exc}") from None
    try:
        policy = load_policy(settings.policy_file)
    except ProblemsError as exc:
        raise StartupError(f"refusing to start: invalid policy:\n{exc}") from None
    return runbooks, policy


@asynccontextmanager
async def open_clients(settings: Settings) -> AsyncIterator[Clients]:
    """Connect every discovered integration once; close them all on the way out."""
    async with AsyncExitStack() as stack:
        built: dict[str, Any] = {}
        read: dict[str, IntegrationSettings] = {}
        for name, integration in integration_catalog().items():
            system_settings = settings.of(integration.settings)
            read[name] = system_settings
            client = integration.connect(system_settings)
            if client is not None:
                built[name] = client
                stack.push_async_callback(integration.close, client)
        shown = sorted(name for name in built if name != "http")
        log.info("integrations configured: %s", ", ".join(shown) or "none")
        yield Clients(temporal_ui_url=settings.temporal_ui_url, settings=read, **built)


def configured_channels(clients: Clients, reporters: list[str] | None = None) -> list[str]:
    """Report channels that have both a registered reporter and what it needs to post."""
    catalog = reporter_catalog()
    names = sorted(catalog) if reporters is None else reporters
    return [name for name in names if name in catalog and catalog[name].ready(clients)]


def build_activities(
    runbooks: list[Runbook], policy: Policy, clients: Clients, ui_url: str = ""
) -> list[Callable[..., Any]]:
    activities: list[Callable[..., Any]] = []
    clients = clients.with_policy(policy)
    for action_cls in action_catalog().values():
        activities += action_activities(action_cls.build(clients))
    for diagnostic_cls in diagnostic_catalog().values():
        activities.append(diagnostic_activity(diagnostic_cls.build(clients)))
    reporters = reporter_catalog()
    for reporter_cls in reporters.values():
        activities.append(reporter_activity(reporter_cls.build(clients)))
    channels = configured_channels(clients, sorted(reporters))
    investigator = LlmActivities.build(clients, runbooks)
    activities += RunbookActivities(runbooks, policy, channels, ui_url, investigator.setup()).activities()  # type: ignore[arg-type]
    activities += investigator.activities()  # type: ignore[arg-type]
    activities += SlackApprovalActivities.build(clients).activities()
    activities.append(evaluate_policy_rules)
    return activities


# The reserved capacity for urgent incidents: its own pollers and slots on `<queue>-urgent`, which
# a storm on the normal queue cannot take. Sized for a handful of concurrent pages, not a storm.
URGENT_ACTIVITY_SLOTS = 20
URGENT_WORKFLOW_TASK_SLOTS = 10
URGENT_CACHED_WORKFLOWS = 100  # a cache of its own, so urgent incidents never evict each other


@asynccontextmanager
async def running_worker(
    settings: Settings,
    client: Client | None = None,
    *,
    max_concurrent_activities: int | None = None,
) -> AsyncIterator[Worker]:
    """The worker on the normal task queue, and beside it one on the reserved urgent queue.

    Incidents the policy ranks urgent are started on `<task queue>-urgent` (remedium.incidents).
    The second Worker in this process polls only that queue with its own slots, so an urgent
    incident's workflow and activity tasks (activities follow their workflow's task queue) are
    taken at once even while a backlog of lower incidents holds every slot of the normal one.
    Chosen over Temporal task priority, which orders one queue's backlog but reserves no slots:
    with every slot held by slow diagnostics, a prioritised task still waits for one to free up
    (tests/test_priority.py holds exactly that state). `max_concurrent_activities` bounds the
    normal worker only (tests saturate it).
    """
    runbooks, policy = load_configuration(settings)
    versioning = deployment_config(settings)  # one version for both queues; None: unversioned
    try:
        client = client or await connect(settings, runtime=metrics_runtime_of(settings))
    except TemporalUnreachable as exc:
        raise StartupError(str(exc)) from None
    await check_search_attributes(client, client.namespace)  # TEMPORAL_NAMESPACE may have chosen it
    async with open_clients(settings) as clients:
        workflows: list[type] = [IncidentWorkflow, TargetLimiterWorkflow, FreezeWorkflow, AutonomyWorkflow]
        if versioning is not None:  # the same workflows, declaring their versioning behaviour
            workflows = VERSIONED_WORKFLOWS
        activities = (
            build_activities(runbooks, policy, clients, settings.temporal_ui_url)
            + GuardActivities(client, settings.task_queue).activities()
            + AutonomyActivities(client, settings.task_queue).activities()
        )
        normal_tuning: dict[str, Any] = {"max_cached_workflows": settings.worker_max_cached_workflows}
        if settings.worker_max_concurrent_workflow_tasks is not None:
            normal_tuning["max_concurrent_workflow_tasks"] = settings.worker_max_concurrent_workflow_tasks
        slots = max_concurrent_activities or settings.worker_max_concurrent_activities
        if slots is not None:
            normal_tuning["max_concurrent_activities"] = slots
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=workflows,
            activities=activities,
            graceful_shutdown_timeout=timedelta(seconds=10),
            max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
            deployment_config=versioning,
            **normal_tuning,
        )
        urgent = Worker(
            client,
            task_queue=urgent_task_queue(settings.task_queue),
            workflows=workflows,
            activities=activities,
            graceful_shutdown_timeout=timedelta(seconds=10),
            max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
            deployment_config=versioning,
            max_concurrent_activities=URGENT_ACTIVITY_SLOTS,
            max_concurrent_workflow_tasks=URGENT_WORKFLOW_TASK_SLOTS,
            max_cached_workflows=min(URGENT_CACHED_WORKFLOWS, settings.worker_max_cached_workflows),
        )
        log.info(
            "worker on task queues %r and %r (urgent) with %d runbook(s): %s",
            settings.task_queue,
            urgent_task_queue(settings.task_queue),
            len(runbooks),
            ", ".join(rb.name for rb in runbooks) or "none",
        )
        if versioning is not None:
            log.info("worker deployment version %s", versioning.version.to_canonical_string())
        async with worker, urgent:
            yield worker


def metrics_runtime_of(settings: Settings) -> Runtime | None:
    """The Runtime serving `/metrics` when REMEDIUM_METRICS_ADDRESS is set (SDK's and ours), else None.

    Only for a client the worker connects itself: a client handed in keeps its own Runtime.
    """
    if not settings.metrics_address:
        return None
    try:
        runtime = metrics_runtime(settings.metrics_address)
    except ValueError as exc:  # the SDK core: address in use, or not host:port
        raise StartupError(
            f"cannot serve metrics on REMEDIUM_METRICS_ADDRESS={settings.metrics_address}: {exc}"
        ) from None
    log.info("worker metrics on http://%s/metrics", settings.metrics_address)
    return runtime


async def run_worker(settings: Settings, stop: asyncio.Event, client: Client | None = None) -> None:
    async with running_worker(settings, client):
        await stop.wait()

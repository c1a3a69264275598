"""The action and diagnostic registry: one contract for everything a runbook can call.

An action declares its params model, whether it changes state, and three coroutines:
dry_run (touches nothing), execute (idempotent by `ActionRequest.idempotency_key`,
returns the checkpoint that undoes it) and rollback. A diagnostic declares its params
model and one coroutine returning a value. The worker turns each into Temporal
activities named `<action>.dry_run|execute|rollback` and `diagnose.<kind>`, so new
integrations plug in without the workflow knowing about them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Self, TypeVar

import httpx
from pydantic import BaseModel

from remedium.models import (
    ActionRequest,
    ActionResult,
    Checkpoint,
    DryRun,
    ReportEvent,
    ReportResult,
    RollbackRequest,
)
from remedium.models.policy import PagerDutyEscalation

P = TypeVar("P", bound=BaseModel)


@dataclass(frozen=True)
class Clients:
    """Live clients the worker built from settings; actions take what they need.

    A client is None when its system is not configured; an action or diagnostic that needs
    it fails with a non-retryable error naming the missing setting.
    """

    http: httpx.AsyncClient
    prometheus: httpx.AsyncClient | None = None  # base_url = REMEDIUM_PROMETHEUS_URL, auth applied
    loki: httpx.AsyncClient | None = None  # base_url = REMEDIUM_LOKI_URL, auth/org header applied
    kubernetes: Any = None  # kubernetes.client.ApiClient (blocking: call it via asyncio.to_thread)
    slack: Any = None  # slack_sdk.web.async_client.AsyncWebClient
    slack_channel: str | None = None
    jira: Any = None  # a zero-argument callable returning a connected jira.JIRA (connects lazily)
    jira_project: str | None = None
    pagerduty: httpx.AsyncClient | None = None  # base_url = REMEDIUM_PAGERDUTY_API_URL, token applied
    pagerduty_from: str | None = None
    pagerduty_escalation: PagerDutyEscalation = field(default_factory=PagerDutyEscalation)  # from the policy
    temporal_ui_url: str = "http://localhost:8233"


class Action(ABC, Generic[P]):
    name: ClassVar[str]
    params_model: ClassVar[type[BaseModel]]
    state_changing: ClassVar[bool] = True
    description: ClassVar[str] = ""

    @classmethod
    @abstractmethod
    def build(cls, clients: Clients) -> Self: ...

    @abstractmethod
    async def dry_run(self, request: ActionRequest, params: P) -> DryRun: ...

    @abstractmethod
    async def execute(self, request: ActionRequest, params: P) -> ActionResult: ...

    async def rollback(self, request: RollbackRequest) -> ActionResult:
        raise NotImplementedError(f"{self.name} has no rollback")


class Diagnostic(ABC, Generic[P]):
    kind: ClassVar[str]
    params_model: ClassVar[type[BaseModel]]
    description: ClassVar[str] = ""

    @classmethod
    @abstractmethod
    def build(cls, clients: Clients) -> Self: ...

    @abstractmethod
    async def run(self, params: P) -> tuple[Any, str | None]:
        """Return the fact's value and the rendered query (for the audit trail)."""


class Reporter(ABC):
    """A human channel (Slack, Jira, PagerDuty). Becomes the activity `report.<channel>`.

    `post` is idempotent by `event.key`, returns `ReportResult(skipped=True)` when its channel is
    not configured, and raises on failure so the workflow's retry policy applies (honour
    Retry-After by raising ApplicationError(next_retry_delay=...)). The workflow never lets a
    reporter's failure stop remediation.
    """

    channel: ClassVar[str]

    @classmethod
    @abstractmethod
    def build(cls, clients: Clients) -> Self: ...

    @abstractmethod
    async def post(self, event: ReportEvent) -> ReportResult: ...


ACTIONS: dict[str, type[Action[Any]]] = {}
DIAGNOSTICS: dict[str, type[Diagnostic[Any]]] = {}
REPORTERS: dict[str, type[Reporter]] = {}

A = TypeVar("A", bound=type[Action[Any]])
D = TypeVar("D", bound=type[Diagnostic[Any]])
R = TypeVar("R", bound=type[Reporter])


def register_action(cls: A) -> A:
    if cls.name in ACTIONS and ACTIONS[cls.name] is not cls:
        raise ValueError(f"action {cls.name!r} is registered twice")
    ACTIONS[cls.name] = cls
    return cls


def register_diagnostic(cls: D) -> D:
    if cls.kind in DIAGNOSTICS and DIAGNOSTICS[cls.kind] is not cls:
        raise ValueError(f"diagnostic kind {cls.kind!r} is registered twice")
    DIAGNOSTICS[cls.kind] = cls
    return cls


def register_reporter(cls: R) -> R:
    if cls.channel in REPORTERS and REPORTERS[cls.channel] is not cls:
        raise ValueError(f"reporter {cls.channel!r} is registered twice")
    REPORTERS[cls.channel] = cls
    return cls


def load_catalog() -> None:
    """Import every module of the `activities` package, so each registers its actions and diagnostics."""
    import importlib
    import pkgutil

    import activities

    for module in pkgutil.iter_modules(activities.__path__):
        importlib.import_module(f"activities.{module.name}")


def action_catalog() -> dict[str, type[Action[Any]]]:
    load_catalog()
    return dict(ACTIONS)


def diagnostic_catalog() -> dict[str, type[Diagnostic[Any]]]:
    load_catalog()
    return dict(DIAGNOSTICS)


def reporter_catalog() -> dict[str, type[Reporter]]:
    load_catalog()
    return dict(REPORTERS)


def make_checkpoint(request: ActionRequest, target: str, undo: str, **captured: Any) -> Checkpoint:
    return Checkpoint(
        step_id=request.step_id, action=request.action, target=target, captured=captured, undo=undo
    )

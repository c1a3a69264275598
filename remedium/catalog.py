"""The contract every integration implements, and the registry the worker discovers.

An external system lives in one room under `activities/` and declares there:

- its settings: an `IntegrationSettings` model with its own `REMEDIUM_<SYSTEM>_` env prefix;
- how its client is built from those settings and closed (`Integration`), registered with
  `register_integration`; the client is None when the system is not configured;
- its actions (`Action`: params model, dry run, idempotent execute returning the checkpoint
  that undoes it, rollback), diagnostics (`Diagnostic`) and reporter (`Reporter`).

The worker imports every module of `activities` (`load_catalog`), connects every registered
integration and turns each action, diagnostic and reporter into Temporal activities named
`<action>.dry_run|execute|rollback`, `diagnose.<kind>` and `report.<channel>`. Adding a
system or an action is therefore one new file, and the workflow never learns its name.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict

from remedium.models import (
    ActionRequest,
    ActionResult,
    Checkpoint,
    DryRun,
    Policy,
    ReportEvent,
    ReportResult,
    RollbackRequest,
)

P = TypeVar("P", bound=BaseModel)
S = TypeVar("S", bound="IntegrationSettings")
C = TypeVar("C")

DEFAULT_UI_URL = "http://localhost:8233"
ACTIVITIES_PACKAGE = "activities"


class IntegrationSettings(BaseSettings):
    """Base of a system's settings; subclasses set `env_prefix="REMEDIUM_<SYSTEM>_"`.

    Read from the environment and from the file named by REMEDIUM_CONFIG, like the core
    settings (`remedium.settings.Settings.of` builds them); unknown variables are ignored.
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)


async def close_client(client: Any) -> None:
    """Close whatever the client offers (`aclose` or `close`, sync or async)."""
    for method in ("aclose", "close"):
        closer = getattr(client, method, None)
        if callable(closer):
            result = closer()
            if inspect.isawaitable(result):
                await result
            return


@dataclass(frozen=True)
class Integration(Generic[S, C]):
    """An external system: its settings model and how its client is built and closed.

    `connect` returns None when the settings say the system is not configured; actions that
    need it then fail with a non-retryable error naming the missing setting.
    """

    name: str
    settings: type[S]
    connect: Callable[[S], C | None]
    close: Callable[[C], Any] = close_client
    describe: Callable[[S], str] = lambda settings: ""  # shown in the worker's start-up log line

    def client(self, clients: Clients) -> C | None:
        """This system's live client in the worker's set (None when not configured)."""
        value: C | None = clients.get(self.name)
        return value

    def settings_of(self, clients: Clients) -> S:
        """This system's settings as the worker read them."""
        found = clients.settings.get(self.name)
        return found if isinstance(found, self.settings) else self.settings()


class Clients:
    """The live clients the worker built from settings, by integration name.

    Each integration's client is `INTEGRATION.client(clients)` (typed) or `clients.<name>`;
    `clients.http` is the shared outbound client of the `http` room.
    """

    def __init__(
        self,
        *,
        temporal_ui_url: str = DEFAULT_UI_URL,
        policy: Policy | None = None,
        settings: Mapping[str, IntegrationSettings] | None = None,
        **systems: Any,
    ) -> None:
        self.temporal_ui_url = temporal_ui_url
        self.policy = policy or Policy()
        self.settings: dict[str, IntegrationSettings] = dict(settings or {})
        self._systems = {name: value for name, value in systems.items() if value is not None}

    def get(self, name: str) -> Any:
        return self._systems.get(name)

    def configured(self) -> list[str]:
        return sorted(self._systems)

    def with_policy(self, policy: Policy) -> Clients:
        return Clients(
            temporal_ui_url=self.temporal_ui_url,
            policy=policy,
            settings=self.settings,
            **self._systems,
        )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._systems.get(name)


class Action(ABC, Generic[P]):
    """A state-changing (or waiting) step a runbook's plan can name."""

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
    """A read-only fact a runbook's `diagnose` or `verify` can gather."""

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

    @classmethod
    def ready(cls, clients: Clients) -> bool:
        """Whether the worker has what this channel needs; only ready channels get events."""
        return clients.get(cls.channel) is not None

    @abstractmethod
    async def post(self, event: ReportEvent) -> ReportResult: ...


INTEGRATIONS: dict[str, Integration[Any, Any]] = {}
ACTIONS: dict[str, type[Action[Any]]] = {}
DIAGNOSTICS: dict[str, type[Diagnostic[Any]]] = {}
REPORTERS: dict[str, type[Reporter]] = {}

A = TypeVar("A", bound=type[Action[Any]])
D = TypeVar("D", bound=type[Diagnostic[Any]])
R = TypeVar("R", bound=type[Reporter])


def _register(registry: dict[str, Any], what: str, key: str, value: Any) -> None:
    if key in registry and registry[key] is not value:
        raise ValueError(f"{what} {key!r} is registered twice")
    registry[key] = value


def register_integration(integration: Integration[S, C]) -> Integration[S, C]:
    _register(INTEGRATIONS, "integration", integration.name, integration)
    return integration


def register_action(cls: A) -> A:
    _register(ACTIONS, "action", cls.name, cls)
    return cls


def register_diagnostic(cls: D) -> D:
    _register(DIAGNOSTICS, "diagnostic kind", cls.kind, cls)
    return cls


def register_reporter(cls: R) -> R:
    _register(REPORTERS, "reporter", cls.channel, cls)
    return cls


def load_catalog() -> None:
    """Import every module of the `activities` package (sub-packages too), so each registers."""
    package = importlib.import_module(ACTIVITIES_PACKAGE)
    for module in pkgutil.walk_packages(package.__path__, prefix=f"{ACTIVITIES_PACKAGE}."):
        importlib.import_module(module.name)


def integration_catalog() -> dict[str, Integration[Any, Any]]:
    load_catalog()
    return dict(INTEGRATIONS)


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

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
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Self, TypeVar

import httpx
from pydantic import BaseModel

from remedium.models import ActionRequest, ActionResult, Checkpoint, DryRun, RollbackRequest

P = TypeVar("P", bound=BaseModel)


@dataclass(frozen=True)
class Clients:
    """Live clients the worker built from settings; actions take what they need."""

    http: httpx.AsyncClient


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


ACTIONS: dict[str, type[Action[Any]]] = {}
DIAGNOSTICS: dict[str, type[Diagnostic[Any]]] = {}

A = TypeVar("A", bound=type[Action[Any]])
D = TypeVar("D", bound=type[Diagnostic[Any]])


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


def load_catalog() -> None:
    """Import every module that registers actions or diagnostics."""
    import activities.http  # noqa: F401


def action_catalog() -> dict[str, type[Action[Any]]]:
    load_catalog()
    return dict(ACTIONS)


def diagnostic_catalog() -> dict[str, type[Diagnostic[Any]]]:
    load_catalog()
    return dict(DIAGNOSTICS)


def make_checkpoint(request: ActionRequest, target: str, undo: str, **captured: Any) -> Checkpoint:
    return Checkpoint(
        step_id=request.step_id, action=request.action, target=target, captured=captured, undo=undo
    )

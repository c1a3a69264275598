"""Turn registered actions and diagnostics into Temporal activities bound to live clients."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.registry import Action, Diagnostic, Reporter
from remedium.models import (
    ActionRequest,
    ActionResult,
    DiagnosticRequest,
    DryRun,
    Fact,
    ReportEvent,
    ReportResult,
    RollbackRequest,
)
from remedium.runbook.engine import context
from remedium.runbook.templating import TemplateError, render_value


def _params(model: type[BaseModel], raw: dict[str, Any], what: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ApplicationError(
            f"{what}: invalid parameters: {exc.errors(include_url=False)}",
            type="InvalidParams",
            non_retryable=True,
        ) from None


def action_activities(action: Action[Any]) -> list[Callable[..., Any]]:
    name = action.name

    async def dry_run(request: ActionRequest) -> DryRun:
        return await action.dry_run(request, _params(action.params_model, request.params, name))

    async def execute(request: ActionRequest) -> ActionResult:
        return await action.execute(request, _params(action.params_model, request.params, name))

    async def rollback(request: RollbackRequest) -> ActionResult:
        return await action.rollback(request)

    return [
        activity.defn(name=f"{name}.dry_run")(dry_run),
        activity.defn(name=f"{name}.execute")(execute),
        activity.defn(name=f"{name}.rollback")(rollback),
    ]


def diagnostic_activity(diagnostic: Diagnostic[Any]) -> Callable[..., Any]:
    kind = diagnostic.kind

    async def run(request: DiagnosticRequest) -> Fact:
        started = time.monotonic()
        try:
            raw = render_value(request.params, context(request.alert, request.facts))
        except TemplateError as exc:
            raise ApplicationError(str(exc), type="TemplateError", non_retryable=True) from None
        value, query = await diagnostic.run(_params(diagnostic.params_model, raw, kind))
        return Fact(
            id=request.spec_id,
            kind=kind,
            ok=True,
            value=value,
            query=query,
            duration_ms=int((time.monotonic() - started) * 1000),
        )

    return activity.defn(name=f"diagnose.{kind}")(run)


def reporter_activity(reporter: Reporter) -> Callable[..., Any]:
    async def post(event: ReportEvent) -> ReportResult:
        return await reporter.post(event)

    return activity.defn(name=f"report.{reporter.channel}")(post)

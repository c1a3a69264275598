"""Turn registered actions, diagnostics and reporters into Temporal activities bound to live clients.

The activity names come from `remedium.names`, the same functions the workflow uses to call
them, so a name the workflow schedules is by construction one the worker registers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from remedium import names
from remedium.catalog import Action, Diagnostic, Reporter
from remedium.errors import ErrorType, TemplateError
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
from remedium.runbook.templating import render_value


def params_of(model: type[BaseModel], raw: dict[str, Any], what: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ApplicationError(
            f"{what}: invalid parameters: {exc.errors(include_url=False)}",
            type=ErrorType.INVALID_PARAMS,
            non_retryable=True,
        ) from None


# How often a running activity tells the server it is alive. The workflow's heartbeat timeouts
# (workflows/retries.py, 5-10 s) are several of these, so a live attempt is never taken for a
# dead one, and one on a worker that died is retried on another within seconds.
HEARTBEAT_EVERY_S = 1.0
# The worker's `max_heartbeat_throttle_interval`: the SDK otherwise sends at most one heartbeat
# per 0.8 x heartbeat timeout (4 s of a 5 s timeout), so a worker starved for one second looks
# dead; measured on 2 loaded cores, live diagnostics then timed out three attempts in a row.
HEARTBEAT_THROTTLE = timedelta(seconds=1)


@contextlib.asynccontextmanager
async def heartbeating(what: str) -> AsyncIterator[None]:
    """Heartbeat in the background while the body runs, whatever it awaits (no-op outside an activity).

    The wrappers do it, not each diagnostic or reporter: one that forgot to would otherwise be
    cut by its heartbeat timeout, however healthy, or never noticed when its worker died.
    """
    if not activity.in_activity():
        yield
        return

    async def beat() -> None:
        while True:
            activity.heartbeat(what)
            await asyncio.sleep(HEARTBEAT_EVERY_S)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def action_activities(action: Action[Any]) -> list[Callable[..., Any]]:
    name = action.name

    async def dry_run(request: ActionRequest) -> DryRun:
        async with heartbeating(f"{name}: dry run of {request.step_id}"):
            return await action.dry_run(request, params_of(action.params_model, request.params, name))

    async def execute(request: ActionRequest) -> ActionResult:
        async with heartbeating(f"{name}: executing {request.step_id}"):
            return await action.execute(request, params_of(action.params_model, request.params, name))

    async def rollback(request: RollbackRequest) -> ActionResult:
        async with heartbeating(f"{name}: rolling back {request.checkpoint.step_id}"):
            return await action.rollback(request)

    return [
        activity.defn(name=names.action_activity(name, "dry_run"))(dry_run),
        activity.defn(name=names.action_activity(name, "execute"))(execute),
        activity.defn(name=names.action_activity(name, "rollback"))(rollback),
    ]


def diagnostic_activity(diagnostic: Diagnostic[Any]) -> Callable[..., Any]:
    kind = diagnostic.kind

    async def run(request: DiagnosticRequest) -> Fact:
        started = time.monotonic()
        try:
            # In a thread: the worker's event loop (the ingress's too, under `remedium up`) never
            # waits for a template, which its bounds (`template_limits`) keep short there.
            ctx = context(request.alert, request.facts, request.vars)
            raw = await asyncio.to_thread(render_value, request.params, ctx)
        except TemplateError as exc:
            raise ApplicationError(str(exc), type=ErrorType.TEMPLATE_ERROR, non_retryable=True) from None
        async with heartbeating(f"{kind}: {request.spec_id}"):
            value, query = await diagnostic.run(params_of(diagnostic.params_model, raw, kind))
        return Fact(
            id=request.spec_id,
            kind=kind,
            ok=True,
            value=value,
            query=query,
            duration_ms=int((time.monotonic() - started) * 1000),
        )

    return activity.defn(name=names.diagnostic_activity(kind))(run)


def reporter_activity(reporter: Reporter) -> Callable[..., Any]:
    async def post(event: ReportEvent) -> ReportResult:
        async with heartbeating(f"{reporter.channel}: {event.kind}"):
            return await reporter.post(event)

    return activity.defn(name=names.report_activity(reporter.channel))(post)

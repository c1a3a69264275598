"""The systems `remedium runbook test` may read, made unable to change anything.

`runbook test` connects each integration with the catalog's own `connect` (what the worker
does), then wraps the client so that nothing it sends can change state: a Kubernetes client
may only GET (and, for the plan's dry runs, send writes carrying `dryRun=All`, which the
apiserver never persists); an HTTP client (Prometheus, Loki, the `http` room) may only GET.
A client of any other kind is left out, so an action needing it is skipped rather than run.
`--live` runs only registered `Diagnostic`s, built against the policy (so `http.allow`
applies), each under its runbook timeout; a system that is not configured makes its
diagnostic (or dry run) "skipped", naming the setting that would configure it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import httpx
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError

from remedium.catalog import ACTIVITIES_PACKAGE, Clients, Diagnostic, Integration, integration_catalog
from remedium.errors import ErrorType, RemediumError, TemplateError
from remedium.models import Alert, Fact, Policy
from remedium.models.runbook import DiagnosticSpec
from remedium.runbook.engine import context
from remedium.runbook.templating import render_value
from remedium.settings import Settings, env_names

READ_METHODS = frozenset({"GET", "HEAD"})
NOT_CONFIGURED_TYPES = frozenset({ErrorType.NOT_CONFIGURED, ErrorType.KUBERNETES_NOT_CONFIGURED})


class StateChangeRefused(RemediumError):
    """A request `runbook test` refused to send: it could have changed the system."""


def _is_dry_run(url: str) -> bool:
    return parse_qs(urlsplit(url).query).get("dryRun") == ["All"]


class _ReadOnlyKubeRest:
    """The kubernetes client's REST layer, which every API call goes through, minus writes."""

    def __init__(self, inner: Any, allow_dry_run: bool) -> None:
        self._inner = inner
        self._allow_dry_run = allow_dry_run

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        verb = method.upper()
        if verb not in READ_METHODS and not (self._allow_dry_run and _is_dry_run(url)):
            raise StateChangeRefused(
                f"refused {verb} {urlsplit(url).path}: runbook test sends no state-changing request"
            )
        return self._inner.request(method, url, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def _refuse_writes(request: httpx.Request) -> None:
    if request.method.upper() not in READ_METHODS:
        raise StateChangeRefused(
            f"refused {request.method} {request.url}: runbook test sends no state-changing request"
        )


def read_only(client: Any, *, allow_dry_run: bool) -> Any | None:
    """`client` made read-only in place (None when its kind is unknown, so it cannot be trusted)."""
    import kubernetes.client

    if isinstance(client, kubernetes.client.ApiClient):
        client.rest_client = _ReadOnlyKubeRest(client.rest_client, allow_dry_run)  # type: ignore[assignment]
        return client
    if isinstance(client, httpx.AsyncClient):
        hooks = client.event_hooks
        client.event_hooks = {**hooks, "request": [_refuse_writes, *hooks.get("request", [])]}
        return client
    return None


def system_of(cls: type) -> str | None:
    """The integration an action or diagnostic belongs to: its room under `activities/`."""
    parts = cls.__module__.split(".")
    if len(parts) >= 2 and parts[0] == ACTIVITIES_PACKAGE and parts[1] in integration_catalog():
        return parts[1]
    return None


def setting_names(integration: Integration[Any, Any]) -> str:
    """The env var(s) that turn a system on: those of its settings model's first field."""
    model = integration.settings
    name, info = next(iter(model.model_fields.items()))
    return " / ".join(env_names(model, name, info))


@dataclass
class Systems:
    """The read-only clients, and why each system without one has none."""

    clients: Clients
    missing: dict[str, str] = field(default_factory=dict)

    def unavailable(self, cls: type) -> str | None:
        """Why `cls` (an action or diagnostic) has no client here; None when it has one (or needs none)."""
        system = system_of(cls)
        if system is None or self.clients.get(system) is not None:
            return None
        return self.missing.get(system, f"{system} is not configured")

    def skipped(self, cls: type, exc: BaseException) -> str | None:
        """Why `cls` failed with `exc` if that is a missing system (None for a real failure).

        Each is run even without its system (a dry run may only describe): only what it
        raises then says it needed one; the reason names the setting that would configure it.
        """
        why = self.unavailable(cls)
        if why is not None:
            return why
        return one_sentence(exc) if is_not_configured(exc) else None


@asynccontextmanager
async def open_systems(settings: Settings, policy: Policy, *, allow_dry_run: bool) -> AsyncIterator[Systems]:
    """Each integration connected as the worker connects it, made read-only; closed on the way out."""
    async with AsyncExitStack() as stack:
        built: dict[str, Any] = {}
        read: dict[str, Any] = {}
        missing: dict[str, str] = {}
        for name, integration in integration_catalog().items():
            try:
                system_settings = settings.of(integration.settings)
                read[name] = system_settings
                client = integration.connect(system_settings)
            except Exception as exc:  # a named but unusable kubeconfig, a bad URL: say which
                missing[name] = f"{name} cannot be used: {one_sentence(exc)}"
                continue
            if client is None:
                missing[name] = f"{name} is not configured ({setting_names(integration)})"
                continue
            stack.push_async_callback(integration.close, client)
            guarded = read_only(client, allow_dry_run=allow_dry_run)
            if guarded is None:
                missing[name] = f"{name} cannot be made read-only, so runbook test leaves it out"
                continue
            built[name] = guarded
        clients = Clients(temporal_ui_url=settings.temporal_ui_url, settings=read, policy=policy, **built)
        yield Systems(clients, missing)


def one_sentence(exc: BaseException) -> str:
    """An error as one line: its message (an ApplicationError's without the type prefix)."""
    if isinstance(exc, ApplicationError):
        text = exc.message
    elif isinstance(exc, ValidationError):
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        text = f"invalid parameters: {where + ': ' if where else ''}{first['msg']}"
    else:
        text = str(exc) or type(exc).__name__
        if not isinstance(exc, StateChangeRefused | TemplateError):
            text = f"{type(exc).__name__}: {text}"
    return " ".join(text.split())


def is_not_configured(exc: BaseException) -> bool:
    return isinstance(exc, ApplicationError) and exc.type in NOT_CONFIGURED_TYPES


Status = Literal["given", "live", "failed", "skipped", "not run"]


@dataclass
class DiagnosticOutcome:
    """What `--live` did with one `diagnose` entry: a fact, or why there is none."""

    spec: DiagnosticSpec
    status: Status
    fact: Fact | None = None
    reason: str = ""


async def run_diagnostic(
    spec: DiagnosticSpec,
    alert: Alert,
    alert_vars: dict[str, Any],
    catalog: dict[str, type[Diagnostic[Any]]],
    systems: Systems,
) -> DiagnosticOutcome:
    """One `diagnose` entry as the worker's `diagnose.<kind>` activity runs it, read-only."""
    cls = catalog.get(spec.kind)
    if cls is None or not issubclass(cls, Diagnostic):
        return DiagnosticOutcome(spec, "not run", reason=f"{spec.kind!r} is not a registered diagnostic")
    started = time.monotonic()

    def failed(reason: str) -> DiagnosticOutcome:
        return DiagnosticOutcome(
            spec, "failed", Fact(id=spec.id, kind=spec.kind, ok=False, error=reason), reason
        )

    try:
        raw = await asyncio.to_thread(render_value, spec.with_, context(alert, {}, alert_vars))
        params = cls.params_model.model_validate(raw)
        diagnostic = cls.build(systems.clients)
        value, query = await asyncio.wait_for(diagnostic.run(params), spec.timeout.total_seconds())
    except TimeoutError:
        return failed(f"timed out after {spec.timeout.total_seconds():g}s")
    except Exception as exc:  # every failure is a fact, as in the workflow
        why = systems.skipped(cls, exc)
        if why is not None:
            return DiagnosticOutcome(
                spec, "skipped", Fact(id=spec.id, kind=spec.kind, ok=False, error=why), why
            )
        return failed(one_sentence(exc))
    fact = Fact(
        id=spec.id,
        kind=spec.kind,
        ok=True,
        value=value,
        query=query,
        duration_ms=int((time.monotonic() - started) * 1000),
    )
    return DiagnosticOutcome(spec, "live", fact)


async def run_diagnostics(
    specs: list[DiagnosticSpec],
    alert: Alert,
    alert_vars: dict[str, Any],
    catalog: dict[str, type[Diagnostic[Any]]],
    systems: Systems,
) -> list[DiagnosticOutcome]:
    """All at once, as the workflow runs them; results in the runbook's order."""
    return list(
        await asyncio.gather(*(run_diagnostic(s, alert, alert_vars, catalog, systems) for s in specs))
    )

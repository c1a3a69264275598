"""Every activity the workflows can call is registered by the worker built from default settings.

A name typed differently in the workflow and in the activity would only show at 2 a.m., as a
workflow task waiting forever for an activity no worker offers; this test makes it a CI failure.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from temporalio import activity
from temporalio.client import Client

from activities.autonomy import AutonomyActivities
from activities.guards import GuardActivities
from remedium import names
from remedium.catalog import Clients, reporter_catalog
from remedium.models import Policy
from remedium.runbook.loader import load_runbooks
from remedium.settings import Settings
from remedium.worker import build_activities, open_clients

REPO = Path(__file__).resolve().parent.parent


def _registered(functions: list[Callable[..., Any]]) -> set[str]:
    found = set()
    for function in functions:
        definition = activity._Definition.from_callable(function)
        assert definition is not None and definition.name, f"{function!r} is not an activity"
        found.add(definition.name)
    return found


async def _worker_activity_names(client: Client) -> set[str]:
    runbooks = load_runbooks([REPO / "runbooks"])
    async with open_clients(Settings()) as clients:
        built = build_activities(runbooks, Policy(), clients)
    guards = GuardActivities(client, names.DEFAULT_TASK_QUEUE).activities()
    return _registered(built + guards + AutonomyActivities(client, names.DEFAULT_TASK_QUEUE).activities())


def _called_by_workflows() -> tuple[set[str], list[str]]:
    """Fixed names the workflows pass to execute_activity, and any that are not a names constant."""
    fixed: set[str] = set()
    loose: list[str] = []
    for path in sorted((REPO / "workflows").glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "execute_activity"):
                continue
            first = node.args[0] if node.args else None
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if isinstance(first, ast.Name) and first.id.isupper():
                value = getattr(names, first.id, None)
                if isinstance(value, str):
                    fixed.add(value)
                else:
                    loose.append(f"{where}: {first.id} is not defined in remedium.names")
            elif isinstance(first, ast.Call) and getattr(first.func, "id", None) in (
                "action_activity",
                "diagnostic_activity",
                "report_activity",
            ):
                continue  # dynamic: checked against every runbook and reporter below
            else:
                loose.append(f"{where}: {ast.unparse(first) if first else 'no name'}")
    return fixed, loose


def test_workflows_name_activities_only_through_remedium_names() -> None:
    fixed, loose = _called_by_workflows()
    assert loose == []
    assert fixed == set(names.ENGINE_ACTIVITIES)


async def test_every_activity_the_workflows_call_is_registered(dev_env: Any) -> None:
    registered = await _worker_activity_names(dev_env.client)
    fixed, _ = _called_by_workflows()
    wanted = set(fixed)
    for runbook in load_runbooks([REPO / "runbooks"]):
        for step in runbook.plan:
            wanted |= {names.action_activity(step.action, phase) for phase in names.ACTION_PHASES}
        checks = runbook.verify.checks if runbook.verify else []
        wanted |= {names.diagnostic_activity(spec.kind) for spec in [*runbook.diagnose, *checks]}
    wanted |= {names.report_activity(channel) for channel in reporter_catalog()}
    assert wanted - registered == set()
    # The control: a name nobody registers is seen as missing.
    assert names.diagnostic_activity("no-such-kind") not in registered


async def test_integrations_without_settings_leave_their_client_out() -> None:
    async with open_clients(Settings()) as clients:
        assert isinstance(clients, Clients)
        assert isinstance(clients.http, httpx.AsyncClient)
        assert clients.get("prometheus") is None and clients.get("slack") is None

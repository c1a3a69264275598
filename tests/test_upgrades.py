"""Safe upgrades of in-flight incidents: Worker Deployment versioning on a real dev server.

A rollout as an operator runs it (README "Upgrading the worker while incidents are in
flight"): build 1 is current and takes an incident that waits for approval; build 2 (a real
`remedium worker` process) starts and is made current with the `temporal` CLI; a second
incident starts. The first must finish on build 1 (it waits for build 1 while build 1 is
down, even though build 2 is up and idle), the second on build 2, and build 1 must show as
drained once its incident is done: the signal that it can be stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType, VersioningBehavior
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from remedium.errors import StartupError
from remedium.guards import limiter_id
from remedium.replay import replay_paths
from remedium.settings import Settings
from remedium.versioning import deployment_config
from remedium.worker import running_worker
from tests.conftest import _binary, dev_address
from tests.support import TargetService, alert_for, restart_runbook, start, wait_for_stage, write_config
from workflows.versioned import PinnedIncidentWorkflow

REMEDIUM = str(Path(sys.executable).with_name("remedium"))
STEP = "restart-pool"
HISTORIES = Path(__file__).resolve().parent / "histories"


@pytest.fixture
def target() -> Iterator[TargetService]:
    service = TargetService().start()
    yield service
    service.stop()


def _temporal(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_binary("temporal"), *args, "--address", address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def set_current(address: str, deployment: str, build_id: str) -> None:
    """`temporal worker deployment set-current-version`, as the README says to run it.

    The server refuses until the build's workers have polled ("build ID ... not found"), which
    is also how an operator knows the new build is up: retry until it is accepted.
    """
    args = ("worker", "deployment", "set-current-version", "--deployment-name", deployment)
    deadline = time.monotonic() + 60
    while True:
        done = await asyncio.to_thread(_temporal, address, *args, "--build-id", build_id, "--yes")
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{build_id} never became current: {done.stderr.strip()}")
        await asyncio.sleep(0.5)


async def drainage(address: str, deployment: str, build_id: str) -> str:
    """What `temporal worker deployment describe-version` says of the build's drainage."""
    done = await asyncio.to_thread(
        _temporal,
        address,
        *("worker", "deployment", "describe-version", "--deployment-name", deployment),
        *("--build-id", build_id, "--output", "json"),
    )
    assert done.returncode == 0, done.stderr
    info: dict[str, Any] = json.loads(done.stdout).get("drainageInfo") or {}
    return str(info.get("drainageStatus", "unspecified"))


async def wait_for_drainage(address: str, deployment: str, build_id: str, status: str) -> None:
    deadline = time.monotonic() + 60
    last = ""
    while time.monotonic() < deadline:
        last = await drainage(address, deployment, build_id)
        if last == status:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{build_id} never became {status}; last drainage status: {last}")


async def task_builds(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """The build id that completed each workflow task, as the history records it."""
    builds = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            builds.append(event.workflow_task_completed_event_attributes.deployment_version.build_id)
    return builds


async def pinned_to(handle: WorkflowHandle[Any, Any]) -> tuple[int, str]:
    """The versioning behaviour and build the server routes this incident's tasks to."""
    info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
    return info.behavior, info.deployment_version.build_id


@asynccontextmanager
async def worker_process(env: dict[str, str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A real `remedium worker`, stopped with SIGTERM (as a deploy stops it) on the way out."""
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            REMEDIUM, "worker", env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), timeout=30)
                except TimeoutError:
                    process.kill()
                    await process.wait()


async def test_incident_started_on_build_1_finishes_there_while_build_2_takes_new_ones(
    dev_env: WorkflowEnvironment, target: TargetService, tmp_path: Path
) -> None:
    client = dev_env.client
    address = dev_address(dev_env)
    runbook = restart_runbook(every="1s", within="30s")
    runbook["decide"] = {"when": ["facts.health.ok"]}  # every incident acts, whatever the others did
    one_limiter = {"rate_limits": [{"action": "http.request", "target": "*", "max": 10, "per": "30m"}]}
    rb_dir, policy = write_config(tmp_path, [runbook], allow=[target.url], policy_extra=one_limiter)
    deployment = f"remedium-{uuid.uuid4().hex[:8]}"
    queue = f"tq-{uuid.uuid4().hex[:8]}"
    build_1 = Settings(
        runbooks_dir=rb_dir,
        policy_file=policy,
        task_queue=queue,
        worker_deployment_name=deployment,
        worker_build_id="build-1",
    )
    build_2_env = {
        "REMEDIUM_TEMPORAL_ADDRESS": address,
        "REMEDIUM_RUNBOOKS_DIR": str(rb_dir),
        "REMEDIUM_POLICY_FILE": str(policy),
        "REMEDIUM_TASK_QUEUE": queue,
        "REMEDIUM_WORKER_DEPLOYMENT_NAME": deployment,
        "REMEDIUM_WORKER_BUILD_ID": "build-2",
    }
    approval = {"step": STEP, "by": "alice", "reason": "looks right"}
    limiter = client.get_workflow_handle(limiter_id("http.request", f"{target.url}/admin/restart"))

    def restarted() -> set[str]:
        return {d.key or "" for d in target.applied_to("/admin/restart")}

    async with worker_process(build_2_env, tmp_path / "build-2.log") as build_2:
        async with running_worker(build_1, client):
            await set_current(address, deployment, "build-1")
            first = await start(client, build_1, alert_for(target))
            await wait_for_stage(first, "awaiting_approval", timeout=60)
            # An incident that acts now starts the target's rate limiter on build 1.
            early = await start(client, build_1, alert_for(target))
            await wait_for_stage(early, "awaiting_approval", timeout=60)
            await early.signal("approve", approval)
            assert (await asyncio.wait_for(early.result(), timeout=90)).outcome == "resolved"
            await set_current(address, deployment, "build-2")  # build 2's process is polling by now
            assert await drainage(address, deployment, "build-1") == "draining"
            second = await start(client, build_1, alert_for(target))
            await wait_for_stage(second, "awaiting_approval", timeout=60)
        # Build 1 is down. The first incident is approved, but only build 1 may run it: build 2
        # finishes the second incident meanwhile (its slot from the limiter, which followed the
        # current build) and never touches the first.
        await first.signal("approve", approval)
        await second.signal("approve", approval)
        second_result = await asyncio.wait_for(second.result(), timeout=90)
        assert build_2.returncode is None, (tmp_path / "build-2.log").read_text()
        assert second_result.outcome == "resolved", second_result.reason
        assert restarted() == {f"{early.id}/{STEP}", f"{second.id}/{STEP}"}
        assert await drainage(address, deployment, "build-1") == "draining"

        async with running_worker(build_1, client):  # build 1 back: its incident resumes there
            first_result = await asyncio.wait_for(first.result(), timeout=90)
            assert first_result.outcome == "resolved", first_result.reason
            assert restarted() == {f"{early.id}/{STEP}", f"{first.id}/{STEP}", f"{second.id}/{STEP}"}
            # No open incident is pinned to build 1 any more: the README's cue to stop it.
            await wait_for_drainage(address, deployment, "build-1", "drained")

    first_builds, second_builds = await task_builds(first), await task_builds(second)
    assert len(first_builds) >= 3 and set(first_builds) == {"build-1"}, first_builds
    assert len(second_builds) >= 3 and set(second_builds) == {"build-2"}, second_builds
    assert await pinned_to(first) == (VersioningBehavior.VERSIONING_BEHAVIOR_PINNED, "build-1")
    assert await pinned_to(second) == (VersioningBehavior.VERSIONING_BEHAVIOR_PINNED, "build-2")
    limiter_builds = await task_builds(limiter)
    assert (limiter_builds[0], limiter_builds[-1]) == ("build-1", "build-2"), limiter_builds
    assert (await pinned_to(limiter))[0] == VersioningBehavior.VERSIONING_BEHAVIOR_AUTO_UPGRADE
    await limiter.terminate("test over")  # its grants would keep it open for 30 minutes
    # What a versioned worker recorded replays like any other history (`remedium replay`).
    recorded = tmp_path / "pinned-incident.json"
    recorded.write_text((await first.fetch_history()).to_json())
    assert await replay_paths([recorded]) == [(recorded, None)]


async def test_recorded_histories_replay_on_the_pinned_incident_workflow() -> None:
    histories = sorted(HISTORIES.glob("*.json"))
    assert histories
    assert await replay_paths(histories, workflows=[PinnedIncidentWorkflow]) == [(h, None) for h in histories]


def test_versioning_is_off_without_a_build_id() -> None:
    assert deployment_config(Settings()) is None
    assert deployment_config(Settings(worker_deployment_name="remedium")) is None
    config = deployment_config(Settings(worker_build_id="2026.12.01-abc"))
    assert config is not None
    assert config.version.to_canonical_string() == "remedium.2026.12.01-abc"  # the task queue's name


async def test_worker_refuses_a_deployment_name_with_a_dot(tmp_path: Path) -> None:
    rb_dir, policy = write_config(tmp_path, [restart_runbook()])
    settings = Settings(
        runbooks_dir=rb_dir, policy_file=policy, worker_build_id="7", worker_deployment_name="prod.remedium"
    )
    with pytest.raises(StartupError, match=r"'prod\.remedium' is not a valid Worker Deployment name"):
        async with running_worker(settings):
            pass

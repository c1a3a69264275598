"""Record histories of completed incidents into tests/histories/ (the incident library).

Run after an intentional, patched change of the workflow:  .venv/bin/python scripts/record_histories.py
(or name the recordings to make: `... record_histories.py no-runbook closed-upstream`).
Each scenario runs on a real dev server with the real worker and a real HTTP target.

The library serves two checks: `remedium replay` (determinism: the first four, recorded with
the test runbook of remedium.demo.recording, are those fixtures and are never re-recorded on
a whim) and `remedium replay --shadow runbooks/` (decisions: the rest are recorded with the
shipped runbooks/, so a shadow replay of an unchanged runbooks/ reports `same` for them).
Naming no recording re-records the four fixtures too: name the ones to make, e.g.
`... record_histories.py llm-investigation resolved-supervised`.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from remedium.demo.recording import (  # noqa: E402
    TargetService,
    alert_for,
    http_allow,
    restart_runbook,
    settings_for,
    start,
    wait_for_stage,
    worker_for,
    write_config,
)
from remedium.models import ExternalUpdate, FreezeState  # noqa: E402
from remedium.names import FREEZE_UPDATE, FREEZE_WORKFLOW_ID, FREEZE_WORKFLOW_TYPE, SEARCH_ATTRIBUTES  # noqa: E402
from remedium.settings import Settings  # noqa: E402

OUT = REPO / "tests" / "histories"
STEP = "restart-pool"  # the plan step of restart_runbook() and runbooks/web-health-restart.yaml
RUNBOOKS = REPO / "runbooks"  # the shipped library: what the shadow-replay check runs against


async def scenario(env: WorkflowEnvironment, name: str, target: TargetService, **kw: Any) -> None:
    decision: dict[str, str] | None = kw.pop("signal", None)
    required_for = kw.pop("required_for", None)
    with tempfile.TemporaryDirectory() as tmp:
        rb_dir, policy = write_config(
            Path(tmp), [restart_runbook(**kw)], required_for=required_for, allow=[target.url]
        )
        settings = settings_for(Path(tmp), rb_dir, policy)
        async with worker_for(env.client, settings):
            handle = await start(env.client, settings, alert_for(target, incident_id=name))
            if decision is not None:
                await wait_for_stage(handle, "awaiting_approval")
                await handle.signal(decision.pop("name"), decision)
            result = await handle.result()
            history = await handle.fetch_history()
    (OUT / f"{name}.json").write_text(history.to_json())
    print(f"{name}: {result.outcome} ({result.reason})")


def shipped_policy(tmp: Path, **sections: Any) -> Path:
    """A policy for runbooks/ recordings: no approvals unless asked, plus the sections given."""
    body: dict[str, Any] = {
        "apiVersion": "remedium/v1",
        "kind": "Policy",
        "approval": {"approvers": ["alice", "bob"], "required_for": [], "timeout": "30m"},
    }
    policy = tmp / "policy.yaml"
    policy.write_text(yaml.safe_dump(body | sections))
    return policy


Drive = Callable[[Any, Any, Settings], Awaitable[None]]


async def shipped(
    env: WorkflowEnvironment,
    name: str,
    target: TargetService,
    *,
    title: str = "web health check failing",
    service: str = "web-frontend",
    drive: Drive | None = None,
    before: Drive | None = None,
    **sections: Any,
) -> None:
    """One incident under the shipped runbooks/ and a policy of `sections`; saves its history."""
    with tempfile.TemporaryDirectory() as tmp:
        policy = shipped_policy(Path(tmp), **({"http": http_allow(target.url)["http"]} | sections))
        settings = settings_for(Path(tmp), RUNBOOKS, policy)
        async with worker_for(env.client, settings):
            if before is not None:
                await before(env.client, None, settings)
            alert = alert_for(target, incident_id=name, title=title).model_copy(update={"service": service})
            handle = await start(env.client, settings, alert)
            if drive is not None:
                await drive(env.client, handle, settings)
            result = await handle.result()
            history = await handle.fetch_history()
    (OUT / f"{name}.json").write_text(history.to_json())
    print(f"{name}: {result.outcome} ({result.reason})")


async def _freeze(client: Any, _: Any, settings: Settings) -> None:
    """`remedium freeze`: the Freeze workflow started through its update, as the CLI does."""
    from temporalio.client import WithStartWorkflowOperation
    from temporalio.common import WorkflowIDConflictPolicy

    from workflows.freeze import FreezeRequest

    start_op: WithStartWorkflowOperation[Any, FreezeState] = WithStartWorkflowOperation(
        FREEZE_WORKFLOW_TYPE,
        FreezeState(frozen=True, reason="change window", by="carol"),
        id=FREEZE_WORKFLOW_ID,
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        result_type=FreezeState,
    )
    await client.execute_update_with_start_workflow(
        FREEZE_UPDATE,
        FreezeRequest(reason="change window", by="carol"),
        start_workflow_operation=start_op,
        result_type=FreezeState,
    )


async def _close_upstream(client: Any, handle: Any, settings: Settings) -> None:
    """The on-call resolves the page in PagerDuty while the step waits for approval."""
    await wait_for_stage(handle, "awaiting_approval")
    await handle.signal("external_update", ExternalUpdate(event="resolved", by="dana", source="pagerduty"))


async def record_etl(env: WorkflowEnvironment, name: str) -> None:
    """The seeds' ETL incident on the demo sandboxes (Kubernetes, Loki, Prometheus), resolved."""
    from remedium.demo.sandboxes import DemoSandboxes
    from remedium.demo.scenarios import load_scenario

    scenario = load_scenario("etl-source-timeout")
    sandboxes = DemoSandboxes.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            update = sandboxes.settings_update(Path(tmp), None)
            settings = Settings(**update, runbooks_dir=RUNBOOKS, task_queue=f"tq-{uuid.uuid4().hex[:8]}")
            scenario.seed(sandboxes.world())
            alert = scenario.alert(name)
            sandboxes.pagerduty.add_incident(name, alert.title)  # the page the reports annotate
            async with worker_for(env.client, settings):
                handle = await start(env.client, settings, alert)
                result = await handle.result()
                history = await handle.fetch_history()
    finally:
        sandboxes.stop()
    (OUT / "etl-source-timeout-resolved.json").write_text(history.to_json())
    print(f"etl-source-timeout-resolved: {result.outcome} ({result.reason})")


async def record_llm_investigation(env: WorkflowEnvironment, name: str) -> None:
    """An alert no runbook matches, investigated by the demo's LLM sandbox (`sandbox-crashloop`)
    with its tools on the Kubernetes and Loki sandboxes; the proposal approved, resolved."""
    from remedium.demo.sandboxes import DemoSandboxes
    from remedium.demo.scenarios import load_scenario

    scenario = load_scenario("unknown-crashloop")
    sandboxes = DemoSandboxes.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            update = sandboxes.settings_update(Path(tmp), None)
            settings = Settings(**update, runbooks_dir=RUNBOOKS, task_queue=f"tq-{uuid.uuid4().hex[:8]}")
            scenario.seed(sandboxes.world())
            alert = scenario.alert(name)
            sandboxes.pagerduty.add_incident(name, alert.title)
            async with worker_for(env.client, settings):
                handle = await start(env.client, settings, alert)
                answer = await scenario.drive(env.client, alert.workflow_id)
                result = await handle.result()
                history = await handle.fetch_history()
    finally:
        sandboxes.stop()
    (OUT / "llm-investigation.json").write_text(history.to_json())
    print(f"llm-investigation: {result.outcome} ({result.reason}; {answer})")


async def record_shipped(env: WorkflowEnvironment, wanted: set[str]) -> None:
    """The recordings made with runbooks/ (each must shadow-replay as `same` against it)."""

    def want(name: str) -> bool:
        return not wanted or name in wanted

    if want("resolved-no-approval"):
        target = TargetService().start()
        await shipped(env, "resolved-no-approval", target)
        target.stop()
    if want("escalated-blast-radius"):  # the admin API is outside http.allow: refused before acting
        target = TargetService().start()
        await shipped(env, "escalated-blast-radius", target, http={"allow": [f"{target.url}/health"]})
        target.stop()
    if want("escalated-rate-limit"):
        target = TargetService().start()
        limit = [{"action": "http.request", "target": "*", "max": 0, "per": "1h"}]
        await shipped(env, "escalated-rate-limit", target, rate_limits=limit)
        target.stop()
    if want("escalated-freeze"):
        target = TargetService().start()
        await shipped(env, "escalated-freeze", target, before=_freeze, freeze={"on_frozen": "escalate"})
        target.stop()
        # Its worker is gone: a freeze left running would leave the next recordings' freeze
        # checks querying a workflow nobody serves.
        await env.client.get_workflow_handle(FREEZE_WORKFLOW_ID).terminate("recorded")
    if want("no-runbook"):
        target = TargetService().start()
        await shipped(env, "no-runbook", target, title="disk 91% full on /var/lib/db", service="orders-db")
        target.stop()
    if want("closed-upstream"):
        target = TargetService().start()
        approval = {"approvers": ["alice"], "required_for": ["medium"], "timeout": "30m"}
        await shipped(env, "closed-upstream", target, drive=_close_upstream, approval=approval)
        target.stop()
    if want("resolved-supervised"):  # earned autonomy: at level supervised a medium step runs unasked
        target = TargetService().start()
        trust = {"start": "supervised", "supervised_max_risk": "medium", "review_sample": 0.0}
        await shipped(env, "resolved-supervised", target, trust=trust)
        target.stop()
    if want("etl-source-timeout-resolved"):
        await record_etl(env, "PETLRESOLVED1")
    if want("llm-investigation"):
        await record_llm_investigation(env, "PLLMINVESTIGATED1")


FIXTURES = ("approved-resolved", "rejected", "verify-failed-rolled-back", "approval-timeout")


async def main(wanted: set[str]) -> None:
    binary = Path(sys.executable).with_name("temporal")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(binary if binary.exists() else shutil.which("temporal")),
        data_converter=pydantic_data_converter,
        search_attributes=list(SEARCH_ATTRIBUTES),
    )
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        await record_shipped(env, wanted)
        if wanted and not wanted & set(FIXTURES):
            return
        ok = TargetService().start()
        await scenario(env, "approved-resolved", ok, signal={"name": "approve", "step": STEP, "by": "alice"})
        ok.stop()
        rejected = TargetService().start()
        await scenario(
            env, "rejected", rejected, signal={"name": "reject", "step": STEP, "by": "bob", "reason": "no"}
        )
        rejected.stop()
        bad = TargetService(health_after_restart=503).start()
        await scenario(
            env,
            "verify-failed-rolled-back",
            bad,
            approval_required=False,
            required_for=[],
            every="1s",
            within="2s",
        )
        bad.stop()
        timeout = TargetService().start()
        await scenario(env, "approval-timeout", timeout, approval_timeout="2s")
        timeout.stop()
    finally:
        await env.shutdown()


if __name__ == "__main__":
    # `--help` prints this and exits instead of re-recording; names pick recordings (default: all).
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="recordings to make (default: all)")
    asyncio.run(main(set(parser.parse_args().names)))

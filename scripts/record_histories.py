"""Record histories of completed incidents into tests/histories/ for replay tests.

Run after an intentional, patched change of the workflow:  .venv/bin/python scripts/record_histories.py
Each scenario runs on a real dev server with the real worker and a real HTTP target.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from remedium.demo.recording import (  # noqa: E402
    TargetService,
    alert_for,
    restart_runbook,
    settings_for,
    start,
    wait_for_stage,
    worker_for,
    write_config,
)
from remedium.names import SEARCH_ATTRIBUTES  # noqa: E402

OUT = REPO / "tests" / "histories"
STEP = "restart-pool"  # the plan step of restart_runbook(): a decision must name it


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


async def main() -> None:
    binary = Path(sys.executable).with_name("temporal")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(binary if binary.exists() else shutil.which("temporal")),
        data_converter=pydantic_data_converter,
        search_attributes=list(SEARCH_ATTRIBUTES),
    )
    OUT.mkdir(parents=True, exist_ok=True)
    try:
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
    # No options: parsing only makes `--help` print this and exit instead of re-recording.
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    asyncio.run(main())

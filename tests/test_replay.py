"""Past incidents replay against the current workflow; a non-deterministic change is caught."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from temporalio import workflow

from remedium.models import IncidentInput, IncidentResult
from remedium.replay import replay_paths
from workflows.incident import IncidentWorkflow

HISTORIES = Path(__file__).parent / "histories"


@workflow.defn(name="IncidentWorkflow")
class IncidentWorkflowWithExtraTimer(IncidentWorkflow):
    """The shipped workflow plus one unpatched timer: exactly the change replay must refuse."""

    @workflow.run
    async def run(self, input: IncidentInput) -> IncidentResult:
        await workflow.sleep(1)
        return await super().run(input)


def test_histories_are_committed() -> None:
    names = sorted(p.stem for p in HISTORIES.glob("*.json"))
    fixtures = ["approval-timeout", "approved-resolved", "rejected", "verify-failed-rolled-back"]
    assert set(fixtures) <= set(names)  # the incident library adds more (tests/test_shadow.py)


def test_remedium_replay_accepts_current_code() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("remedium")), "replay", str(HISTORIES)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    count = len(list(HISTORIES.glob("*.json")))
    assert done.stdout.strip().splitlines()[-1] == f"{count} replayed, 0 failed"


async def test_changed_workflow_fails_replay() -> None:
    results = await replay_paths([HISTORIES], workflows=[IncidentWorkflowWithExtraTimer])
    assert len(results) == len(list(HISTORIES.glob("*.json")))
    for path, error in results:
        assert error is not None, f"{path.name} replayed despite the extra timer"
        assert error.startswith("NondeterminismError"), error


def test_replay_of_garbage_fails(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    done = subprocess.run(
        [str(Path(sys.executable).with_name("remedium")), "replay", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "FAILED" in done.stdout and "broken.json" in done.stdout

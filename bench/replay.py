"""How fast the product's workflows replay recorded incident histories.

Replay is what a worker does for every evicted or restarted incident before it can act, and
what `remedium replay` does in CI. This takes the committed histories (tests/histories/*.json,
real recordings of each way an incident ends) and replays each of them until N histories
(default 1,000) have gone through `temporalio.worker.Replayer` with the product's workflows and
the pydantic data converter, exactly as `remedium replay` builds it. Every replay must succeed
(a failure is a determinism bug, and the bench stops on it). No server is needed: replay is
local to the worker, so there is no stack to build and no baseline to race against; the
figure is absolute (target >= 50 histories/s on this machine).

    .venv/bin/python bench/replay.py [--histories 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stack import REPO, write_result

from workflows.freeze import FreezeWorkflow
from workflows.incident import IncidentWorkflow
from workflows.limiter import TargetLimiterWorkflow

HISTORIES = REPO / "tests" / "histories"


async def main(count: int) -> None:
    files = sorted(HISTORIES.glob("*.json"))
    recorded = [WorkflowHistory.from_json(p.stem, p.read_text()) for p in files]
    histories = [recorded[i % len(recorded)] for i in range(count)]
    replayer = Replayer(
        workflows=[IncidentWorkflow, TargetLimiterWorkflow, FreezeWorkflow],
        data_converter=pydantic_data_converter,
    )
    # Warm: the first replay imports the workflow modules into the sandbox.
    await replayer.replay_workflow(recorded[0])
    started = time.perf_counter()
    # replay_workflows runs one replay worker for the whole batch, like `remedium replay`
    # over a directory; each history gets its own workflow id so none is a cache hit.
    replayed = 0
    failures: list[str] = []
    async with replayer.workflow_replay_iterator(_each(histories)) as results:
        async for result in results:
            replayed += 1
            if result.replay_failure is not None:
                failures.append(f"{result.history.workflow_id}: {result.replay_failure}")
    seconds = time.perf_counter() - started
    assert not failures, failures[:3]
    rate = replayed / seconds
    events = sum(len(h.events) for h in histories)
    write_result(
        "replay",
        {
            "histories": replayed,
            "distinct_recordings": [p.name for p in files],
            "events": events,
            "seconds": round(seconds, 3),
            "histories_per_s": round(rate, 2),
            "events_per_s": round(events / seconds, 1),
            "target_histories_per_s": 50,
        },
    )
    print(f"replay: {rate:.1f} histories/s")


async def _each(histories: list[WorkflowHistory]) -> AsyncIterator[WorkflowHistory]:
    for i, history in enumerate(histories):
        yield WorkflowHistory(f"{history.workflow_id}-{i}", history.events)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--histories", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(main(args.histories))

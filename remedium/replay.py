"""Replay exported incident histories against the current workflow code (regression guard)."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.incident import IncidentWorkflow


def history_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.glob("*.json"))
        else:
            files.append(path)
    return files


async def replay_paths(
    paths: list[Path], workflows: list[type] | None = None
) -> list[tuple[Path, str | None]]:
    """(file, None) when a history replays cleanly, (file, reason) when it does not."""
    replayer = Replayer(workflows=workflows or [IncidentWorkflow], data_converter=pydantic_data_converter)
    results: list[tuple[Path, str | None]] = []
    for path in history_files(paths):
        try:
            history = WorkflowHistory.from_json(path.stem, path.read_text())
        except (OSError, ValueError, KeyError) as exc:
            results.append((path, f"not a workflow history: {exc}"))
            continue
        outcome = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        failure = outcome.replay_failure
        results.append((path, None if failure is None else f"{type(failure).__name__}: {failure}"))
    return results

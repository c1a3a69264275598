"""Replay exported incident histories against the current workflow code (regression guard)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.converter import DefaultFailureConverter
from temporalio.worker import Replayer

from remedium.codec import data_converter
from remedium.errors import CodecConfigError
from remedium.settings import Settings
from workflows.autonomy import AutonomyWorkflow
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
    paths: list[Path], workflows: list[type] | None = None, settings: Settings | None = None
) -> list[tuple[Path, str | None]]:
    """(file, None) when a history replays cleanly, (file, reason) when it does not.

    Encrypted histories decode with the configured REMEDIUM_CODEC_KEYS (`settings`, or the
    environment's), the same keys the worker that recorded them used.
    """
    # Replay sends nothing to the server: failures keep their message in the clear, so a history
    # the keys cannot open reports why (the key id) instead of "Encoded failure".
    try:
        converter = dataclasses.replace(
            data_converter(settings or Settings.load()), failure_converter_class=DefaultFailureConverter
        )
    except CodecConfigError as exc:  # bad REMEDIUM_CODEC_KEYS: every history fails, saying why
        return [(path, str(exc)) for path in history_files(paths)]
    replayer = Replayer(workflows=workflows or [IncidentWorkflow, AutonomyWorkflow], data_converter=converter)
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

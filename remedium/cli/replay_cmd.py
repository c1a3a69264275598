"""`remedium replay PATH...`: exported histories against today's workflow code.

A line per history and a total; exit 1 on any nondeterminism, so CI can gate a change
to the workflow on the recorded incidents still replaying.
"""

from __future__ import annotations

from pathlib import Path

from remedium.cli.common import CommandError
from remedium.replay import replay_paths


async def replay_command(paths: list[str]) -> int:
    """Replay every `*.json` history found under `paths`; 0 when all replay cleanly."""
    results = await replay_paths([Path(p) for p in paths])
    if not results:
        raise CommandError("no workflow histories (*.json) found in " + ", ".join(paths))
    failed = 0
    for path, error in results:
        if error is None:
            print(f"ok      {path}")
        else:
            failed += 1
            print(f"FAILED  {path}: {error}")
    print(f"{len(results) - failed} replayed, {failed} failed")
    return 1 if failed else 0

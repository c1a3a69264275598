"""`remedium replay PATH...`: exported histories against today's workflow code.

A line per history and a total; exit 1 on any nondeterminism, so CI can gate a change
to the workflow on the recorded incidents still replaying. Over many histories a progress
bar on stderr says how far it got (only on a terminal, never with `--json`: see
remedium.progress); `--json` prints one document instead of the lines:
`{"replayed", "failed", "results": [{"path", "ok", "error"}]}`.
"""

from __future__ import annotations

from pathlib import Path

from remedium.cli.common import CommandError, line, print_json
from remedium.progress import progress_bar, wanted
from remedium.replay import history_files, replay_paths


async def replay_command(paths: list[str], as_json: bool = False) -> int:
    """Replay every `*.json` history found under `paths`; 0 when all replay cleanly."""
    files = history_files([Path(p) for p in paths])
    if not files:
        raise CommandError("no workflow histories (*.json) found in " + ", ".join(paths))
    results: list[tuple[Path, str | None]] = []
    with progress_bar(len(files), "replaying", wanted(as_json)) as advance:
        for file in files:  # one at a time, so the bar moves per history
            for path, error in await replay_paths([file]):
                results.append((path, error))
                if not as_json:
                    print(
                        line(f"ok      {path}" if error is None else f"FAILED  {path}: {error}"), flush=True
                    )
            advance(f"replayed {file.name}")
    failed = sum(1 for _, error in results if error is not None)
    if as_json:
        print_json(
            {
                "replayed": len(results) - failed,
                "failed": failed,
                "results": [{"path": str(p), "ok": e is None, "error": e} for p, e in results],
            }
        )
    else:
        print(f"{len(results) - failed} replayed, {failed} failed")
    return 1 if failed else 0

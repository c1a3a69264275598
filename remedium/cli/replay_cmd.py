"""`remedium replay PATH...`: exported histories against today's workflow code (or `--shadow` runbooks).

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


async def shadow_command(
    runbook_dir: str, policy_file: str | None, paths: list[str], as_json: bool = False
) -> int:
    """`--shadow`: each history's decisions re-made under `runbook_dir`; 0 all same, 3 any differs, 1 error.

    Per incident `same` or its diff lines; `--json` one document:
    `{"same", "differ", "errors", "results": [{"path", "workflow_id", "same", "diff", "needs", "error"}]}`.
    """
    from remedium.errors import ProblemsError
    from remedium.policy_loader import load_policy
    from remedium.runbook.loader import load_runbooks
    from remedium.shadow import ShadowError, shadow_file

    if not Path(runbook_dir).is_dir():
        raise CommandError(f"--shadow needs a folder of runbooks; {runbook_dir} is not one")
    try:
        runbooks = load_runbooks([runbook_dir])
        policy = load_policy(policy_file) if policy_file is not None else None
    except ProblemsError as exc:
        raise CommandError(
            f"cannot shadow-replay with invalid runbooks or policy: {exc.problems[0]}"
        ) from None
    files = history_files([Path(p) for p in paths])
    if not files:
        raise CommandError("no workflow histories (*.json) found in " + ", ".join(paths))
    results: list[dict[str, object]] = []
    with progress_bar(len(files), "shadow-replaying", wanted(as_json)) as advance:
        for file in files:
            try:
                result = await shadow_file(file, runbooks, policy)
                row = result.as_json() | {"error": None}
            except ShadowError as exc:
                row = {"path": str(file), "same": False, "diff": [], "needs": [], "error": str(exc)}
            results.append(row)
            if not as_json:
                _print_shadow(row)
            advance(f"shadow-replayed {file.name}")
    same = sum(1 for r in results if r["same"])
    errors = sum(1 for r in results if r["error"])
    if as_json:
        print_json(
            {"same": same, "differ": len(results) - same - errors, "errors": errors, "results": results}
        )
    else:
        print(f"{same} same, {len(results) - same - errors} differ, {errors} failed")
    return 1 if errors else 0 if same == len(results) else 3


def _print_shadow(row: dict[str, object]) -> None:
    if row["error"]:
        print(line(f"FAILED  {row['path']}: {row['error']}"), flush=True)
        return
    if row["same"]:
        print(line(f"same    {row['path']}"), flush=True)
        return
    print(line(f"DIFFERS {row['path']} ({row['workflow_id']})"), flush=True)
    for text in [*row["diff"], *row["needs"]]:  # type: ignore[misc]
        print("  " + line(text), flush=True)

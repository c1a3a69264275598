"""Progress for long commands (`replay` over many histories, `demo`), drawn with `rich` on stderr.

Shown only to a person: when stderr is a terminal and the command is not asked for `--json`.
Scripts and CI read stdout (the results, or the one JSON document) and stderr (one sentence
per error); a redrawn bar in either would be noise in their logs, so there it draws nothing.
When stdout is the same terminal, lines the command prints while the bar is up are drawn
above it (rich's stdout redirection), so they must already be terminal-safe (`line()`);
when stdout is a pipe they go to the pipe untouched.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.progress import Progress, ProgressColumn


def wanted(as_json: bool = False) -> bool:
    """Whether to draw progress: a person is watching stderr and no script asked for JSON."""
    return not as_json and sys.stderr.isatty()


class Advance(Protocol):
    def __call__(self, text: str | None = None) -> None: ...


def _progress(*columns: ProgressColumn | str) -> Progress:
    from rich.console import Console
    from rich.progress import Progress

    return Progress(
        *columns,
        # The terminal itself: the CLI's safe_terminal wrapper would strip rich's own escape codes.
        console=Console(file=getattr(sys.stderr, "raw", sys.stderr)),
        transient=True,
        redirect_stdout=sys.stdout.isatty(),  # printed lines go above the bar only on the same terminal
        redirect_stderr=False,
    )


@contextmanager
def progress_bar(total: int, description: str, enabled: bool) -> Iterator[Advance]:
    """A bar of `total` steps; the caller calls the yielded function after each step."""
    if not enabled:

        def nothing(text: str | None = None) -> None:
            return None

        yield nothing
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    progress = _progress(
        TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    )
    with progress:
        task = progress.add_task(description, total=total)

        def advance(text: str | None = None) -> None:
            progress.update(task, advance=1, description=text if text is not None else description)

        yield advance


class Phase(Protocol):
    def __call__(self, text: str) -> None: ...


@contextmanager
def status(first: str, enabled: bool) -> Iterator[Phase]:
    """A spinner naming the current phase (`phase("starting the worker")`), gone when the block ends."""
    if not enabled:
        yield lambda text: None
        return
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = _progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), TimeElapsedColumn())
    with progress:
        task = progress.add_task(first, total=None)
        yield lambda text: progress.update(task, description=text)

"""What the command modules share: the error they raise, connecting to Temporal, printing.

Command modules import from here and never from each other or from `main`, so the CLI's
import graph is a tree: main -> command module -> common. Heavy imports (the SDK, settings)
happen inside the functions, which keeps `remedium --help` quick.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from remedium.errors import CommandError, TemporalUnreachable
from remedium.untrusted import terminal_text

if TYPE_CHECKING:
    from temporalio.client import Client

    from remedium.settings import Settings

__all__ = [
    "USAGE_ERROR",
    "CommandError",
    "connect",
    "line",
    "print_json",
    "print_table",
    "safe_terminal",
]

USAGE_ERROR = 2


async def connect(settings: Settings) -> Client:
    """A client for the configured Temporal; unreachable becomes one sentence, exit 1."""
    from remedium.connection import connect as connect_temporal

    try:
        return await connect_temporal(settings)
    except TemporalUnreachable as exc:
        raise CommandError(str(exc)) from None


def print_json(value: Any) -> None:
    """`--json` output: indented, in the order the command built it."""
    print(json.dumps(value, indent=2))


def line(text: object) -> str:
    """A field that must stay on one line of output (a title, an audit message): see safe_terminal."""
    return terminal_text(str(text), multiline=False)


class _SafeStream(io.TextIOBase):
    """A text stream that drops control and bidi characters on their way to the terminal."""

    def __init__(self, raw: TextIO) -> None:
        self.raw = raw

    def write(self, text: str) -> int:
        self.raw.write(terminal_text(text))
        return len(text)

    def flush(self) -> None:
        self.raw.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.raw.isatty()

    def fileno(self) -> int:
        return self.raw.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.raw.encoding


@contextlib.contextmanager
def safe_terminal() -> Iterator[None]:
    """While a command runs, nothing it prints can steer the terminal.

    Alert titles, audit messages, facts and reports are written by whoever sends alerts: an
    ESC sequence in them would clear or recolour the screen, BEL ring, a bidi override reorder
    the line. Every command's stdout and stderr go through `terminal_text` (newlines and tabs
    stay); `--json` output is unaffected, as json.dumps already escapes those characters.
    """
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _SafeStream(saved[0]), _SafeStream(saved[1])
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = saved


def print_table(header: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows as left-aligned columns under an upper-case header, one space pair apart (cells one line each)."""
    rows = [{h: line(r[h]) for h in header} for r in rows]
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in header]
    print("  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r[h]).ljust(w) for h, w in zip(header, widths, strict=True)))

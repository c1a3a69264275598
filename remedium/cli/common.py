"""What the command modules share: the error they raise, connecting to Temporal, printing.

Command modules import from here and never from each other or from `main`, so the CLI's
import graph is a tree: main -> command module -> common. Heavy imports (the SDK, settings)
happen inside the functions, which keeps `remedium --help` quick.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from remedium.errors import CommandError, TemporalUnreachable

if TYPE_CHECKING:
    from temporalio.client import Client

    from remedium.settings import Settings

__all__ = ["USAGE_ERROR", "CommandError", "connect", "print_json", "print_table"]

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


def print_table(header: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows as left-aligned columns under an upper-case header, one space pair apart."""
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in header]
    print("  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r[h]).ljust(w) for h, w in zip(header, widths, strict=True)))

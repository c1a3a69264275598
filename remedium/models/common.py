"""Shared building blocks for models: strict bases and human-friendly durations."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> Any:
    """Accept '30m', '1h30m', '45s', '250ms' as well as what pydantic already takes."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("P"):  # ISO 8601, the form pydantic serialises to
            return text
        if not text or _DURATION_PART.sub("", text) != "":
            raise ValueError(f"invalid duration {value!r}: use forms like 45s, 30m, 1h30m")
        return timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text)))
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def format_duration(value: timedelta) -> str:
    """Render a timedelta the way a runbook author would write it."""
    total = int(value.total_seconds())
    if total == 0:
        return f"{int(value.total_seconds() * 1000)}ms"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts)


class Model(BaseModel):
    """Internal data: validated, tolerant of nothing unexpected."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class UserModel(BaseModel):
    """Anything a user writes (runbooks, policy): unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=False)


def utc_text(moment: datetime) -> str:
    """A moment as people read it in audit entries and the UI: `2026-11-23 11:30:11 UTC`."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"

"""One way to connect to Temporal, with our data converter and a clear error when it is down."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from remedium.errors import TemporalUnreachable
from remedium.settings import Settings


async def connect(settings: Settings) -> Client:
    try:
        return await Client.connect(
            settings.temporal_address, namespace=settings.namespace, data_converter=pydantic_data_converter
        )
    except Exception as exc:
        raise TemporalUnreachable(
            f"cannot reach Temporal at {settings.temporal_address}: {_why(exc)} "
            "(is `remedium up` or your Temporal cluster running? "
            "REMEDIUM_TEMPORAL_ADDRESS sets where to look)"
        ) from None


def _why(exc: BaseException) -> str:
    """The SDK's Rust core reports a chain of transport errors; say what it amounts to."""
    text = str(exc)
    lowered = text.lower()
    for needle, reason in _REASONS:
        if needle in lowered:
            return reason
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if len(first) <= 200 else first[:200] + "…"


_REASONS = (
    ("connection refused", "connection refused"),
    ("dns error", "the host name does not resolve"),
    ("failed to lookup address", "the host name does not resolve"),
    ("timed out", "no answer before the timeout"),
    ("connection reset", "the connection was reset"),
    ("invalid uri", "the address is not host:port"),
)

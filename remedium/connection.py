"""One way to connect to Temporal, with our data converter and a clear error when it is down."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from remedium.settings import Settings


class TemporalUnreachable(Exception):
    """Temporal did not answer at the configured address."""


async def connect(settings: Settings) -> Client:
    try:
        return await Client.connect(
            settings.temporal_address, namespace=settings.namespace, data_converter=pydantic_data_converter
        )
    except Exception as exc:
        raise TemporalUnreachable(f"cannot reach Temporal at {settings.temporal_address}: {exc}") from None

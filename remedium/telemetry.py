"""What the Prometheus and Loki diagnostics share: authenticated clients, retried reads, extraction.

A read is retried a few times inside the activity on 5xx and connection errors (the cheap,
common blips); what still fails becomes a retryable `Unavailable` for Temporal, while a 4xx
(a bad query) is a non-retryable `QueryError` carrying the server's own message, so the
fact is marked failed with a reason a human can act on and the incident goes on.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError

from remedium.errors import ErrorType

ATTEMPTS = 3
BACKOFF_S = 0.5
TIMEOUT = httpx.Timeout(15.0, connect=5.0)


def telemetry_client(
    base_url: str | None,
    token: SecretStr | None,
    username: str | None,
    password: SecretStr | None,
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient | None:
    """One shared client per worker; bearer token wins over basic auth; None when not configured."""
    if not base_url:
        return None
    all_headers = dict(headers or {})
    auth: httpx.BasicAuth | None = None
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token.get_secret_value()}"
    elif username:
        auth = httpx.BasicAuth(username, password.get_secret_value() if password else "")
    return httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=all_headers, auth=auth, timeout=TIMEOUT)


def not_configured(system: str, setting: str) -> ApplicationError:
    return ApplicationError(
        f"{system} is not configured ({setting})", type=ErrorType.NOT_CONFIGURED, non_retryable=True
    )


async def read(
    client: httpx.AsyncClient, system: str, path: str, params: dict[str, str], shown: str
) -> httpx.Response:
    """GET with in-activity retries; errors name the system and the query (`shown`)."""
    last = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            await asyncio.sleep(BACKOFF_S * 2 ** (attempt - 1))
        try:
            response = await client.get(path, params=params)
        except httpx.TransportError as exc:
            last = f"cannot reach {system} at {client.base_url}: {type(exc).__name__}: {exc}".rstrip(": ")
            continue
        if response.status_code >= 500 or response.status_code == 429:
            last = f"{system} answered {response.status_code}: {response.text.strip()[:300]}"
            continue
        if response.status_code >= 400:
            raise ApplicationError(
                f"{system} refused {shown}: {response.status_code} {error_text(response)}",
                type=ErrorType.QUERY_ERROR,
                non_retryable=True,
            )
        return response
    raise ApplicationError(f"{last} (query {shown})", type=ErrorType.UNAVAILABLE)


def error_text(response: httpx.Response) -> str:
    """Prometheus errors are JSON (`error`), Loki's are plain text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500]
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])[:500]
    return response.text.strip()[:500]


def extract(lines: list[str], patterns: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Named-group regex extraction over lines (oldest first): count, first and last match."""
    out: dict[str, dict[str, Any]] = {}
    for name, pattern in patterns.items():
        compiled = re.compile(pattern)
        hits = [m for m in (compiled.search(line) for line in lines) if m is not None]

        def groups(match: re.Match[str]) -> dict[str, Any]:
            named = match.groupdict()
            return named if named else {"match": match.group(0)}

        out[name] = {
            "count": len(hits),
            "first": groups(hits[0]) if hits else None,
            "last": groups(hits[-1]) if hits else None,
        }
    return out


def check_patterns(patterns: dict[str, str]) -> dict[str, str]:
    for name, pattern in patterns.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"extract.{name}: invalid regular expression: {exc}") from None
    return patterns

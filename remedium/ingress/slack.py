"""Slack approve/reject buttons (block_actions) turned into the incident's `decide` update.

Slack wants HTTP 200 within 3 seconds, so the request is verified, parsed and acknowledged at
once and the decision is applied in the background; its result (or the workflow's refusal)
goes back to the clicking user through the payload's `response_url`. The signature covers the
raw body with a 5-minute timestamp window, checked before anything is parsed.

The update carries the raw request (body, timestamp, signature), not just who clicked: the
worker verifies it again and takes the user id from it, because the `decide` update can be
sent by anyone with Temporal access, and a `slack_user` field alone would prove nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.webhook.async_client import AsyncWebhookClient
from temporalio.client import Client

from remedium.errors import BodyTooLarge
from remedium.incidents import DecisionRefused, IncidentNotRunning, decide
from remedium.ingress.common import IngressMetrics, read_bounded, refuse
from remedium.models import DecideRequest, SlackInteraction
from remedium.models.limits import depth_problem
from remedium.settings import Settings
from remedium.slack_interaction import (
    APPROVE_ACTION,
    REJECT_ACTION,
    REPLAY_WINDOW_S,
    ButtonValue,
    Click,
    MalformedInteraction,
    Unauthorized,
    parse_click,
    verify,
)

# Re-exported: tests and callers reach the parser and the check through the ingress.
__all__ = [
    "APPROVE_ACTION",
    "REJECT_ACTION",
    "REPLAY_WINDOW_S",
    "ButtonValue",
    "Click",
    "MalformedInteraction",
    "SlackInteractions",
    "Unauthorized",
    "parse_click",
    "router",
    "verify",
]

log = logging.getLogger("remedium.ingress.slack")

DECIDE_TIMEOUT_S = 60.0
_DEDUPE_KEEP = 4096
SOURCE = "slack"
_PARTIAL = re.compile(r"\((\d+) of (\d+) approvals\)")


def interaction(body: bytes, headers: Mapping[str, str]) -> SlackInteraction:
    """The click as received, for the worker to verify again (an empty signature proves nothing)."""
    return SlackInteraction(
        body=body.decode("utf-8", errors="replace"),
        timestamp=headers.get("x-slack-request-timestamp", "")[:32],
        signature=headers.get("x-slack-signature", "")[:128],
    )


class SlackInteractions:
    """Verifies, deduplicates and applies button clicks; one instance per ingress app."""

    def __init__(
        self,
        signing_secret: str | None,
        client: Callable[[], Awaitable[Client]],
        clock: Clock | None = None,
        decide_timeout: float = DECIDE_TIMEOUT_S,
    ) -> None:
        self._verifier = SignatureVerifier(signing_secret, clock or Clock()) if signing_secret else None
        self._client = client
        self._decide_timeout = decide_timeout
        self._seen: OrderedDict[tuple[str, ...], None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def configured(self) -> bool:
        """Whether a signing secret was given; without one only insecure mode accepts clicks."""
        return self._verifier is not None

    def authenticate(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Raise Unauthorized; without a secret only insecure mode gets here (then anything passes)."""
        if self._verifier is not None:
            verify(self._verifier, body, headers)

    def accept(self, click: Click, raw: SlackInteraction) -> bool:
        """Schedule the decision; False (nothing scheduled) for a repeated click."""
        if click.key in self._seen:
            return False
        self._seen[click.key] = None
        while len(self._seen) > _DEDUPE_KEEP:
            self._seen.popitem(last=False)
        task = asyncio.create_task(self._apply(click, raw))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def drain(self) -> None:
        """Wait for decisions in flight (used on shutdown and by tests)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _apply(self, click: Click, raw: SlackInteraction) -> None:
        request = DecideRequest(
            decision=click.decision, by=click.by, step=click.step, request=click.request, slack=raw
        )
        try:
            async with asyncio.timeout(self._decide_timeout):
                answer = await decide(await self._client(), click.workflow_id, request)
        except DecisionRefused as exc:
            log.info(
                "slack %s of %s by %s (%s) refused: %s",
                click.decision,
                click.workflow_id,
                click.by,
                click.user_id,
                exc,
            )
            await self._reply(click, f"Not applied: {exc}", ephemeral=True)
        except IncidentNotRunning as exc:
            await self._reply(click, f"Not applied: {exc}", ephemeral=True)
        except TimeoutError:
            await self._reply(
                click,
                f"No answer from {click.workflow_id} within {self._decide_timeout:.0f}s; the decision may "
                "still apply once its worker runs: check `remedium incident show`",
                ephemeral=True,
            )
        except Exception as exc:
            log.error("cannot hand the slack decision on %s to Temporal: %s", click.workflow_id, exc)
            await self._reply(
                click,
                f"Not applied: Remedium cannot reach Temporal ({exc}); try again or use `remedium "
                f"{click.decision}`",
                ephemeral=True,
            )
        else:
            verb = "Approved" if click.decision == "approve" else "Rejected"
            named = re.match(r"step (\S+) ", answer)
            step = click.step or (named.group(1) if named else "(pending)")
            text = f"{verb} step {step} of {click.workflow_id}"
            partial = _PARTIAL.search(answer)
            if partial and int(partial.group(1)) < int(partial.group(2)):
                text += f": {partial.group(1)} of {partial.group(2)} approvals so far, waiting for more"
            await self._reply(click, text, ephemeral=False)

    async def _reply(self, click: Click, text: str, *, ephemeral: bool) -> None:
        if not click.response_url:
            return
        body: dict[str, Any] = {"replace_original": False, "text": text}
        if ephemeral:
            body["response_type"] = "ephemeral"
        try:
            response = await AsyncWebhookClient(click.response_url, timeout=10).send_dict(body)
        except Exception as exc:
            log.warning("slack response_url unreachable for %s: %s", click.workflow_id, exc)
            return
        if response.status_code != 200:
            log.warning("slack response_url answered %d: %s", response.status_code, response.body)


def check_body(body: bytes) -> None:
    """What the signature cannot vouch for: a UTF-8 form whose `payload` JSON is not too deep.

    Runs after the signature check: Slack signs the raw bytes, so a forgery is told only that
    (401), while a signed body that cannot be read is told what is wrong with it (400).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedInteraction("body is not UTF-8") from None
    for payload in parse_qs(text, keep_blank_values=True).get("payload", [])[:1]:
        if (problem := depth_problem(payload)) is not None:
            raise MalformedInteraction(f"payload: {problem}")


NOT_CONFIGURED = (
    "REMEDIUM_SLACK_SIGNING_SECRET is not configured on this ingress; set it to the Slack "
    "app's signing secret to accept button clicks"
)


def router(settings: Settings, interactions: SlackInteractions, metrics: IngressMetrics) -> APIRouter:
    """`POST /webhooks/slack/interactions`: size, signature, parsing, then an empty 200 at once.

    `interactions` holds the signing secret (None: unconfigured) and applies accepted clicks.
    """
    routes = APIRouter()
    limit = settings.max_webhook_bytes

    def reject(status: int, outcome: str, message: str) -> JSONResponse:
        return refuse(metrics, SOURCE, status, outcome, message, what="interaction")

    @routes.post("/webhooks/slack/interactions")
    async def slack_interactions(request: Request) -> Response:
        if not interactions.configured and not settings.insecure_webhooks:
            return reject(401, "not_configured", NOT_CONFIGURED)
        try:
            body = await read_bounded(request, limit)
        except BodyTooLarge:
            return reject(413, "too_large", f"body over {limit} bytes")
        try:
            interactions.authenticate(body, request.headers)
        except Unauthorized as exc:
            return reject(401, "unauthorized", str(exc))
        try:
            check_body(body)
            click = parse_click(body)
        except MalformedInteraction as exc:
            return reject(400, "malformed", str(exc))
        if click is None:
            metrics.delivered(SOURCE, "ignored")
        elif interactions.accept(click, interaction(body, request.headers)):
            metrics.delivered(SOURCE, "accepted")
        else:
            metrics.delivered(SOURCE, "duplicate")
        return Response(status_code=200)  # Slack's acknowledgement: an empty 200, at once

    return routes

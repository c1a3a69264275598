"""Slack approve/reject buttons (block_actions) turned into the incident's validated `decide` update.

Slack wants HTTP 200 within 3 seconds, so the request is verified, parsed and acknowledged at
once and the decision is applied in the background; its result (or the validator's refusal)
goes back to the clicking user through the payload's `response_url`. The signature covers the
raw body with a 5-minute timestamp window, checked before anything is parsed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.webhook.async_client import AsyncWebhookClient
from temporalio.client import Client

from remedium.errors import BodyTooLarge, MalformedInput
from remedium.errors import Unauthorized as Unauthorized  # re-exported: raised by `verify`
from remedium.incidents import DecisionRefused, IncidentNotRunning, decide
from remedium.ingress.common import IngressMetrics, read_bounded, refuse
from remedium.models import DecideRequest
from remedium.settings import Settings

log = logging.getLogger("remedium.ingress.slack")

APPROVE_ACTION = "remedium_approve"
REJECT_ACTION = "remedium_reject"
REPLAY_WINDOW_S = 300
DECIDE_TIMEOUT_S = 60.0
_DEDUPE_KEEP = 4096
SOURCE = "slack"


class MalformedInteraction(MalformedInput):
    """Signed by Slack but not an interaction we can read; the message says what is wrong."""


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SlackUser(_Lenient):
    id: str = Field(min_length=1)
    username: str = ""
    name: str = ""


class SlackAction(_Lenient):
    action_id: str
    value: str = ""
    action_ts: str = ""


class InteractionPayload(_Lenient):
    type: str
    user: SlackUser | None = None
    actions: list[SlackAction] = Field(default_factory=list)
    response_url: str = ""


class ButtonValue(_Lenient):
    """What the Slack reporter puts in each button's `value`."""

    workflow_id: str = Field(pattern=r"^incident-[A-Za-z0-9._:@-]+$", max_length=300)
    step: str | None = None


@dataclass(frozen=True)
class Click:
    decision: Literal["approve", "reject"]
    workflow_id: str
    step: str | None
    by: str
    response_url: str
    key: tuple[str, ...]


def verify(verifier: SignatureVerifier, body: bytes, headers: Mapping[str, str]) -> None:
    """Raise Unauthorized unless the body carries a current, matching Slack signature."""
    timestamp = headers.get("x-slack-request-timestamp")
    signature = headers.get("x-slack-signature")
    if not timestamp or not signature:
        raise Unauthorized("missing X-Slack-Signature or X-Slack-Request-Timestamp")
    if not timestamp.isdigit():
        raise Unauthorized("X-Slack-Request-Timestamp is not a Unix time")
    if abs(verifier.clock.now() - int(timestamp)) > REPLAY_WINDOW_S:
        raise Unauthorized("request timestamp is outside the 5-minute window (stale or replayed)")
    try:
        valid = verifier.is_valid(body, timestamp, signature)
    except UnicodeDecodeError:
        valid = False
    if not valid:
        raise Unauthorized("signature does not match")


def parse_click(body: bytes) -> Click | None:
    """The approve/reject click in a block_actions form body; None for any other interaction."""
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise MalformedInteraction("body is not UTF-8") from None
    if not form.get("payload"):
        raise MalformedInteraction('form field "payload" is missing')
    try:
        payload = InteractionPayload.model_validate_json(form["payload"][0])
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "payload"
        raise MalformedInteraction(f"payload {where}: {first['msg']}") from None
    if payload.type != "block_actions":
        return None
    ours = [a for a in payload.actions if a.action_id in (APPROVE_ACTION, REJECT_ACTION)]
    if not ours:
        return None
    action = ours[0]
    if payload.user is None:
        raise MalformedInteraction("payload.user is missing")
    try:
        value = ButtonValue.model_validate_json(action.value)
    except ValidationError as exc:
        raise MalformedInteraction(
            f'button value must be JSON {{"workflow_id": "incident-...", "step": ...}}: '
            f"{exc.errors(include_url=False)[0]['msg']}"
        ) from None
    user = payload.user
    return Click(
        decision="approve" if action.action_id == APPROVE_ACTION else "reject",
        workflow_id=value.workflow_id,
        step=value.step,
        by=user.username or user.name or user.id,
        response_url=payload.response_url,
        key=(action.action_ts, user.id, action.action_id, action.value),
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

    def accept(self, click: Click) -> bool:
        """Schedule the decision; False (nothing scheduled) for a repeated click."""
        if click.key in self._seen:
            return False
        self._seen[click.key] = None
        while len(self._seen) > _DEDUPE_KEEP:
            self._seen.popitem(last=False)
        task = asyncio.create_task(self._apply(click))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def drain(self) -> None:
        """Wait for decisions in flight (used on shutdown and by tests)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _apply(self, click: Click) -> None:
        request = DecideRequest(decision=click.decision, by=click.by, step=click.step, reason="via Slack")
        try:
            async with asyncio.timeout(self._decide_timeout):
                answer = await decide(await self._client(), click.workflow_id, request)
        except DecisionRefused as exc:
            log.info("slack %s of %s by %s refused: %s", click.decision, click.workflow_id, click.by, exc)
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
            # Without a step in the button the workflow decided the pending one; its answer names it.
            named = re.match(r"step (\S+) ", answer)
            step = click.step or (named.group(1) if named else "(pending)")
            await self._reply(click, f"{verb} step {step} of {click.workflow_id}", ephemeral=False)

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
            click = parse_click(body)
        except MalformedInteraction as exc:
            return reject(400, "malformed", str(exc))
        if click is None:
            metrics.delivered(SOURCE, "ignored")
        elif interactions.accept(click):
            metrics.delivered(SOURCE, "accepted")
        else:
            metrics.delivered(SOURCE, "duplicate")
        return Response(status_code=200)  # Slack's acknowledgement: an empty 200, at once

    return routes

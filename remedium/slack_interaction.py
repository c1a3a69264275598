"""A Slack approve/reject click: its signature check and what it says, shared by two checkers.

The ingress checks a click before anything reaches Temporal; the worker checks the same raw
request again (the `approval.verify_slack` activity), because the `decide` update that
carries it can be sent by anyone with Temporal access. Both use this one parser, so they can
never disagree about which user, incident, step and request a click names.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from slack_sdk.signature import SignatureVerifier

from remedium.errors import MalformedInput, Unauthorized

APPROVE_ACTION = "remedium_approve"
REJECT_ACTION = "remedium_reject"
REPLAY_WINDOW_S = 300

__all__ = [
    "APPROVE_ACTION",
    "REJECT_ACTION",
    "REPLAY_WINDOW_S",
    "ButtonValue",
    "Click",
    "MalformedInteraction",
    "Unauthorized",
    "parse_click",
    "verify",
]


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
    """What the Slack reporter puts in each button's `value`: the incident, step and request."""

    workflow_id: str = Field(pattern=r"^incident-[A-Za-z0-9._:@-]+$", max_length=300)
    step: str | None = None
    request: int | None = None


@dataclass(frozen=True)
class Click:
    decision: Literal["approve", "reject"]
    workflow_id: str
    step: str | None
    request: int | None
    user_id: str
    username: str
    response_url: str
    key: tuple[str, ...]

    @property
    def by(self) -> str:
        """The name the click claims: Slack usernames are chosen by their users, so only a claim."""
        return self.username or self.user_id


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
        # slack_sdk decodes the body before signing it; Slack signs the raw bytes, so check
        # those: a signed body that is not UTF-8 is then refused for what it is (400), not as forged.
        base = b"v0:" + timestamp.encode() + b":" + body
        digest = hmac.new(verifier.signing_secret.encode(), base, hashlib.sha256).hexdigest()
        valid = hmac.compare_digest(f"v0={digest}".encode(), signature.encode())
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
        request=value.request,
        user_id=user.id,
        username=user.username or user.name,
        response_url=payload.response_url,
        key=(action.action_ts, user.id, action.action_id, action.value),
    )

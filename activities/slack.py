"""Slack as a human channel: one thread per incident, a Block Kit reply per event, approval buttons.

Every message Remedium posts carries Slack message metadata (`remedium_incident`, with the
workflow id and the event key), and conversations.history/replies return it, so a retried
activity — or another worker — finds the incident's thread and its own earlier replies again
instead of posting twice. An approval request shows Approve / Reject buttons whose value names
the workflow and step (the ingress reads exactly that); the decision rewrites that message.
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Self

import aiohttp
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from temporalio import activity

from remedium.catalog import (
    Clients,
    Integration,
    IntegrationSettings,
    Reporter,
    register_integration,
    register_reporter,
)
from remedium.models import ReportEvent, ReportResult, SlackInteraction, SlackVerification
from remedium.names import VERIFY_SLACK_ACTIVITY
from remedium.report_render import (
    clip,
    event_facts,
    incident_link,
    rate_limited,
    rejected,
    retry_after_seconds,
    scrub,
    slack_escape,
    slack_inline,
    slack_mrkdwn,
    slack_plain,
    unavailable,
)
from remedium.slack_interaction import MalformedInteraction, Unauthorized, parse_click, verify

log = logging.getLogger("remedium.report.slack")

APPROVE_ACTION = "remedium_approve"
REJECT_ACTION = "remedium_reject"
EVENT_TYPE = "remedium_incident"
TIMEOUT_S = 10
HISTORY_PAGES = 10
PAGE_SIZE = 200
SECTION_LIMIT = 2900
TRANSIENT_ERRORS = frozenset(
    {
        "ratelimited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
        "team_added_to_org",
    }
)
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_CACHE_SIZE = 1024
OUTCOME_BADGE = {"resolved": ":white_check_mark:", "escalated": ":rotating_light:"}


class SlackSettings(IntegrationSettings):
    """The bot token and the channel for incident threads, and the signing secret.

    The ingress checks clicks with the signing secret (the same REMEDIUM_SLACK_SIGNING_SECRET);
    the worker needs it too, to verify again the click a `decide` update carries.
    """

    model_config = SettingsConfigDict(env_prefix="REMEDIUM_SLACK_")

    token: SecretStr | None = None
    channel: str | None = None
    api_url: str = "https://slack.com/api/"
    signing_secret: SecretStr | None = None


def slack_web_client(settings: SlackSettings) -> AsyncWebClient | None:
    """The Web API client (bot token), or None when no token is configured.

    Slack's own retry handlers are off: the activity's retry policy decides, honouring Retry-After.
    """
    if settings.token is None:
        return None
    base = settings.api_url if settings.api_url.endswith("/") else settings.api_url + "/"
    return AsyncWebClient(
        token=settings.token.get_secret_value(), base_url=base, timeout=TIMEOUT_S, retry_handlers=[]
    )


SLACK = register_integration(
    Integration(
        name="slack",
        settings=SlackSettings,
        connect=slack_web_client,
        describe=lambda settings: f"channel {settings.channel}",
    )
)


def _payload(message: dict[str, Any]) -> dict[str, Any]:
    metadata = message.get("metadata") or {}
    if metadata.get("event_type") != EVENT_TYPE:
        return {}
    payload = metadata.get("event_payload")
    return payload if isinstance(payload, dict) else {}


def _mrkdwn(text: str) -> dict[str, Any]:
    """A mrkdwn text object; `verbatim` stops Slack linking bare URLs and #names or parsing mentions.

    Incident text in it is already escaped (report_render.slack_escape); only the links
    Remedium writes itself (`<url|Open in Temporal>`) stay links.
    """
    return {"type": "mrkdwn", "text": clip(text, SECTION_LIMIT), "verbatim": True}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [_mrkdwn(text)]}


def approval_value(event: ReportEvent) -> str:
    """The button value the ingress parses: {"workflow_id": ..., "step": ..., "request": ...}.

    `request` binds a click to the approval request it was shown for, never a later one.
    """
    value: dict[str, Any] = {"workflow_id": event.workflow_id, "step": event.step}
    if event.request is not None:
        value["request"] = event.request
    return json.dumps(value, separators=(",", ":"))


class SlackApprovalActivities:
    """`approval.verify_slack`: the worker's own check of a Slack click a `decide` update carries.

    The update can be sent by anyone with Temporal access, so the user id it names counts only
    when the raw request it carries is signed with the signing secret and still fresh; the
    verdict comes back as data (never an error), so the workflow can audit why it refused.
    """

    def __init__(self, signing_secret: SecretStr | None, clock: Clock | None = None) -> None:
        secret = signing_secret.get_secret_value() if signing_secret is not None else ""
        self._verifier = SignatureVerifier(secret, clock or Clock()) if secret else None

    @classmethod
    def build(cls, clients: Clients) -> SlackApprovalActivities:
        return cls(SLACK.settings_of(clients).signing_secret)

    def activities(self) -> list[Callable[..., Any]]:
        return [self.verify_slack]

    @activity.defn(name=VERIFY_SLACK_ACTIVITY)
    async def verify_slack(self, interaction: SlackInteraction) -> SlackVerification:
        if self._verifier is None:
            return SlackVerification(
                ok=False,
                reason="the worker cannot verify Slack clicks: REMEDIUM_SLACK_SIGNING_SECRET is not set",
            )
        body = interaction.body.encode("utf-8")
        headers = {
            "x-slack-request-timestamp": interaction.timestamp,
            "x-slack-signature": interaction.signature,
        }
        try:
            verify(self._verifier, body, headers)
            click = parse_click(body)
        except (Unauthorized, MalformedInteraction) as exc:
            return SlackVerification(ok=False, reason=f"the Slack click does not verify: {exc}")
        if click is None:
            return SlackVerification(ok=False, reason="the Slack request is not an approve/reject click")
        return SlackVerification(
            ok=True,
            user_id=click.user_id,
            username=click.username,
            workflow_id=click.workflow_id,
            step=click.step,
            request=click.request,
            decision=click.decision,
        )


@register_reporter
class SlackReporter(Reporter):
    channel = "slack"

    def __init__(self, client: AsyncWebClient | None, channel: str | None, ui_base: str) -> None:
        self._client = client
        self._channel = channel or ""
        self._ui = ui_base
        self._threads: OrderedDict[str, str] = OrderedDict()  # workflow id -> parent ts

    @classmethod
    def build(cls, clients: Clients) -> Self:
        return cls(SLACK.client(clients), SLACK.settings_of(clients).channel, clients.temporal_ui_url)

    @classmethod
    def ready(cls, clients: Clients) -> bool:
        return SLACK.client(clients) is not None and bool(SLACK.settings_of(clients).channel)

    async def post(self, event: ReportEvent) -> ReportResult:
        if self._client is None or not self._channel:
            return ReportResult(
                channel="slack",
                ok=True,
                skipped=True,
                detail="Slack is not configured (REMEDIUM_SLACK_TOKEN, REMEDIUM_SLACK_CHANNEL)",
            )
        try:
            return await self._post(event)
        except SlackApiError as exc:
            raise self._failure(exc) from None
        except TimeoutError:
            raise unavailable("slack", f"no answer within {TIMEOUT_S}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise unavailable(
                "slack", self._scrub(f"cannot reach the API ({type(exc).__name__}: {exc})")
            ) from None

    # ------------------------------------------------------------- flow

    async def _post(self, event: ReportEvent) -> ReportResult:
        link = incident_link(event, self._ui)
        thread_ts, created = await self._thread(event, link)
        if created and event.kind == "opened":
            return self._done(thread_ts, "thread opened")
        replies = await self._replies(thread_ts)
        if any(_payload(m).get("key") == event.key for m in replies):
            return self._done(thread_ts, f"{event.kind} already posted")
        if event.kind == "approval_decided":
            detail = await self._record_decision(event, link, thread_ts, replies)
        elif event.kind == "approval_requested":
            await self._say(
                event, thread_ts, self._approval_blocks(event, link, buttons=True), role="approval"
            )
            detail = "approval requested"
        else:
            await self._say(event, thread_ts, self._event_blocks(event, link), role="event")
            detail = f"{event.kind} posted"
        if event.kind == "outcome":
            parent = next((m for m in replies if m.get("ts") == thread_ts), {})
            await self._mark_parent(event, link, thread_ts, _payload(parent))
        return self._done(thread_ts, detail)

    def _done(self, thread_ts: str, detail: str) -> ReportResult:
        return ReportResult(channel="slack", ok=True, detail=detail, ref=thread_ts)

    async def _thread(self, event: ReportEvent, link: str) -> tuple[str, bool]:
        """The incident's parent message: remembered, found in the channel history, or posted now."""
        known = self._threads.get(event.workflow_id)
        if known:
            return known, False
        found = await self._search_history(event)
        if found:
            return self._remember(event.workflow_id, found), False
        assert self._client is not None
        payload = {"workflow_id": event.workflow_id, "role": "thread"}
        if event.kind == "opened":
            payload["key"] = event.key  # the parent message is that event's post
        metadata = {"event_type": EVENT_TYPE, "event_payload": payload}
        response = await self._client.chat_postMessage(
            channel=self._channel,
            text=self._parent_text(event),
            blocks=self._parent_blocks(event, link, status=None),
            metadata=metadata,
            unfurl_links=False,
            unfurl_media=False,
        )
        if not _CHANNEL_ID.match(self._channel) and response.get("channel"):
            self._channel = str(response["channel"])  # a name was configured: use the id from now on
        return self._remember(event.workflow_id, str(response["ts"])), True

    async def _search_history(self, event: ReportEvent) -> str | None:
        if not _CHANNEL_ID.match(self._channel):
            return None  # history needs a channel id; with a name only this worker's memory helps
        assert self._client is not None
        oldest = "0"
        if event.alert.started_at is not None:
            oldest = f"{event.alert.started_at.timestamp() - 3600:.6f}"
        cursor = None
        for _ in range(HISTORY_PAGES):
            page = await self._client.conversations_history(
                channel=self._channel,
                include_all_metadata=True,
                limit=PAGE_SIZE,
                oldest=oldest,
                cursor=cursor,
            )
            for message in page.get("messages") or []:
                payload = _payload(message)
                if payload.get("role") == "thread" and payload.get("workflow_id") == event.workflow_id:
                    return str(message["ts"])
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not page.get("has_more") or not cursor:
                return None
        log.warning(
            "slack: no thread for %s in the last %d messages; opening one",
            event.workflow_id,
            HISTORY_PAGES * PAGE_SIZE,
        )
        return None

    async def _replies(self, thread_ts: str) -> list[dict[str, Any]]:
        assert self._client is not None
        messages: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await self._client.conversations_replies(
                channel=self._channel, ts=thread_ts, include_all_metadata=True, limit=PAGE_SIZE, cursor=cursor
            )
            messages += page.get("messages") or []
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not page.get("has_more") or not cursor:
                return messages

    def _remember(self, workflow_id: str, ts: str) -> str:
        self._threads[workflow_id] = ts
        while len(self._threads) > _CACHE_SIZE:
            self._threads.popitem(last=False)
        return ts

    async def _say(self, event: ReportEvent, thread_ts: str, blocks: list[dict[str, Any]], role: str) -> None:
        assert self._client is not None
        payload = {"workflow_id": event.workflow_id, "role": role, "key": event.key, "kind": event.kind}
        if event.step:
            payload["step"] = event.step
        await self._client.chat_postMessage(
            channel=self._channel,
            thread_ts=thread_ts,
            text=clip(slack_inline(event.title), 3000),
            blocks=blocks,
            metadata={"event_type": EVENT_TYPE, "event_payload": payload},
            unfurl_links=False,
            unfurl_media=False,
        )

    async def _record_decision(
        self, event: ReportEvent, link: str, thread_ts: str, replies: list[dict[str, Any]]
    ) -> str:
        """Rewrite the approval message for this step: who decided, no buttons left to click."""
        assert self._client is not None
        asks = [
            m
            for m in replies
            if _payload(m).get("role") == "approval" and _payload(m).get("step", None) == (event.step or None)
        ]
        if not asks:
            await self._say(event, thread_ts, self._event_blocks(event, link), role="event")
            return "decision posted (no approval message to update)"
        ask = next((m for m in reversed(asks) if not _payload(m).get("decided_key")), asks[-1])
        payload = {**_payload(ask), "decided_key": event.key, "decision": event.decision or ""}
        verdict = "Approved" if event.decision == "approve" else "Rejected"
        icon = ":white_check_mark:" if event.decision == "approve" else ":no_entry:"
        who = slack_escape(event.decided_by or "someone")
        blocks = self._approval_blocks(event, link, buttons=False, asked=payload)
        blocks.append(_section(f"{icon} *{verdict}* by {who}"))
        await self._client.chat_update(
            channel=self._channel,
            ts=str(ask["ts"]),
            text=f"{verdict} by {who}: step {slack_escape(event.step or '')}".strip(),
            blocks=blocks,
            metadata={"event_type": EVENT_TYPE, "event_payload": payload},
        )
        return f"approval message updated ({verdict.lower()})"

    async def _mark_parent(
        self, event: ReportEvent, link: str, thread_ts: str, payload: dict[str, Any]
    ) -> None:
        """Show the outcome on the thread's parent, keeping its metadata (the thread's identity)."""
        assert self._client is not None
        payload = {
            **payload,
            "workflow_id": event.workflow_id,
            "role": "thread",
            "outcome": event.outcome or "",
        }
        await self._client.chat_update(
            channel=self._channel,
            ts=thread_ts,
            text=self._parent_text(event),
            blocks=self._parent_blocks(event, link, status=event.outcome or "closed"),
            metadata={"event_type": EVENT_TYPE, "event_payload": payload},
        )

    # ------------------------------------------------------------- blocks

    @staticmethod
    def _parent_text(event: ReportEvent) -> str:
        return clip(f"Incident: {slack_escape(event.alert.title)} ({event.workflow_id})", 3000)

    def _parent_blocks(self, event: ReportEvent, link: str, status: str | None) -> list[dict[str, Any]]:
        alert = event.alert
        badge = OUTCOME_BADGE.get(status or "", ":large_blue_circle:" if status is None else ":white_circle:")
        state = status.replace("_", " ") if status else "remediation in progress"
        facts = [f"*Source:* {alert.source} `{slack_escape(alert.id)}`"]
        if alert.service:
            facts.append(f"*Service:* {slack_escape(alert.service)}")
        if alert.severity:
            facts.append(f"*Severity:* {slack_escape(alert.severity)}")
        blocks = [
            {"type": "header", "text": {"type": "plain_text", "text": clip(slack_plain(alert.title), 150)}},
            _section(f"{badge} *{state.capitalize()}*\n" + "   ".join(facts)),
        ]
        if status is None and event.kind == "opened" and event.markdown:
            blocks.append(_section(slack_mrkdwn(event.markdown)))
        blocks.append(_context(f"<{link}|Open in Temporal> · `{slack_escape(event.workflow_id)}`"))
        return blocks

    def _event_blocks(self, event: ReportEvent, link: str) -> list[dict[str, Any]]:
        blocks = [_section(f"*{slack_inline(event.title)}*")]
        if event.markdown:
            blocks.append(_section(slack_mrkdwn(event.markdown)))
        facts = event_facts(event)
        if facts:
            blocks.append(_section("\n".join(f"*{name}:* {slack_escape(value)}" for name, value in facts)))
        if event.dry_run and event.kind == "dry_run":
            blocks.append(_section("```" + slack_escape(clip(event.dry_run, SECTION_LIMIT - 10)) + "```"))
        if event.followups:
            blocks.append(
                _section("*Follow-ups:*\n" + "\n".join(f"• {slack_escape(f)}" for f in event.followups))
            )
        blocks.append(_context(f"{event.kind.replace('_', ' ')} · stage {event.stage} · <{link}|Temporal>"))
        return blocks

    def _approval_blocks(
        self, event: ReportEvent, link: str, buttons: bool, asked: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        step = event.step or (asked or {}).get("step") or "?"
        lines = [f":raised_hand: *Approval needed* for step `{slack_escape(step)}`"]
        if event.action:
            lines.append(f"*Action:* `{slack_escape(event.action)}`")
        if event.risk:
            lines.append(f"*Risk:* {slack_escape(event.risk)}")
        blocks = [_section("\n".join(lines))]
        if buttons and event.markdown:
            blocks.append(_section(slack_mrkdwn(event.markdown)))
        if event.dry_run:
            blocks.append(
                _section("*Dry run:*\n```" + slack_escape(clip(event.dry_run, SECTION_LIMIT - 20)) + "```")
            )
        if buttons:
            value = approval_value(event)
            blocks.append(
                {
                    "type": "actions",
                    "block_id": "remedium_approval",
                    "elements": [
                        {
                            "type": "button",
                            "action_id": APPROVE_ACTION,
                            "text": {"type": "plain_text", "text": "Approve"},
                            "style": "primary",
                            "value": value,
                        },
                        {
                            "type": "button",
                            "action_id": REJECT_ACTION,
                            "text": {"type": "plain_text", "text": "Reject"},
                            "style": "danger",
                            "value": value,
                        },
                    ],
                }
            )
        blocks.append(_context(f"<{link}|Open in Temporal> · `{slack_escape(event.workflow_id)}`"))
        return blocks

    # ------------------------------------------------------------- failures

    def _scrub(self, text: str) -> str:
        return scrub(text, [getattr(self._client, "token", None)])

    def _failure(self, exc: SlackApiError) -> Exception:
        response = exc.response
        status = int(getattr(response, "status_code", 0) or 0)
        data = getattr(response, "data", None)
        error = str(data.get("error", "")) if isinstance(data, dict) else ""
        method = str(getattr(response, "api_url", "")).rsplit("/", 1)[-1] or "api"
        headers: Any = getattr(response, "headers", None) or {}
        if status == 429 or error == "ratelimited":
            retry_after = headers.get("Retry-After") or headers.get("retry-after")
            return rate_limited("slack", retry_after_seconds(retry_after), method)
        if status >= 500:
            return unavailable("slack", f"{method} answered HTTP {status}{f': {error}' if error else ''}")
        if error in TRANSIENT_ERRORS:
            return unavailable("slack", f"{method}: {error}")
        detail = error or f"HTTP {status}"
        needed = data.get("needed") if isinstance(data, dict) else None
        if needed:
            detail += f" (needs scope {needed})"
        return rejected("slack", self._scrub(f"{method}: {detail}"))

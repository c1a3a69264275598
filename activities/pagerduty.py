"""PagerDuty as a human channel: notes on the upstream incident, then resolve or escalate it.

Only incidents that came from PagerDuty have somewhere to write; others are skipped with the
reason. Every note carries the event's marker and the incident's notes are read first, so a
retried activity never writes twice. Escalation follows the policy (`escalation.pagerduty`:
a level, users, or an escalation policy), writes its note naming the target first, and the
update itself is repeatable, so a retry finishes the job.
"""

from __future__ import annotations

import logging
from typing import Any, Self
from urllib.parse import quote

import httpx
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from remedium.catalog import (
    Clients,
    Integration,
    IntegrationSettings,
    Reporter,
    register_integration,
    register_reporter,
)
from remedium.models import ReportEvent, ReportResult
from remedium.models.policy import PagerDutyEscalation
from remedium.report_render import (
    incident_link,
    marker,
    plain_inline,
    plain_text,
    rate_limited,
    rejected,
    retry_after_seconds,
    scrub,
    unavailable,
)

log = logging.getLogger("remedium.report.pagerduty")

ACCEPT = "application/vnd.pagerduty+json;version=2"
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
SILENT_KINDS = frozenset({"dry_run"})  # the approval request repeats it; one note is enough
NOTE_LIMIT = 24000


class PagerDutySettings(IntegrationSettings):
    """The REST API token and the `From` user; the webhook secret belongs to the ingress."""

    model_config = SettingsConfigDict(env_prefix="REMEDIUM_PAGERDUTY_")

    token: SecretStr | None = None
    from_: str | None = Field(
        default=None, validation_alias=AliasChoices("REMEDIUM_PAGERDUTY_FROM"), description="`From` header"
    )
    api_url: str = "https://api.pagerduty.com"


def pagerduty_http_client(settings: PagerDutySettings) -> httpx.AsyncClient | None:
    """An authenticated client for the REST API v2, or None when no token is configured."""
    if settings.token is None:
        return None
    return httpx.AsyncClient(
        base_url=settings.api_url.rstrip("/"),
        headers={
            "Authorization": f"Token token={settings.token.get_secret_value()}",
            "Accept": ACCEPT,
            "Content-Type": "application/json",
        },
        timeout=TIMEOUT,
    )


PAGERDUTY = register_integration(
    Integration(
        name="pagerduty",
        settings=PagerDutySettings,
        connect=pagerduty_http_client,
        describe=lambda settings: settings.api_url,
    )
)


def incident_path(incident_id: str) -> str:
    """`/incidents/<id>` with the id quoted whole: a `/`, `?` or `#` in it can never reach another path.

    The ingress accepts only letters and digits; this holds for any id that gets here another way.
    """
    segment = quote(incident_id, safe="")
    if segment in (".", ".."):  # dot segments are the one thing quoting leaves walkable
        segment = segment.replace(".", "%2E")
    return f"/incidents/{segment}"


@register_reporter
class PagerDutyReporter(Reporter):
    channel = "pagerduty"

    def __init__(
        self,
        client: httpx.AsyncClient | None,
        sender: str | None,
        ui_base: str,
        escalation: PagerDutyEscalation | None = None,
    ) -> None:
        self._client = client
        self._from = sender
        self._ui = ui_base
        self._escalation = escalation or PagerDutyEscalation()

    @classmethod
    def build(cls, clients: Clients) -> Self:
        return cls(
            PAGERDUTY.client(clients),
            PAGERDUTY.settings_of(clients).from_,
            clients.temporal_ui_url,
            clients.policy.escalation.pagerduty,
        )

    def _result(self, ok: bool, detail: str, ref: str | None = None, skipped: bool = False) -> ReportResult:
        return ReportResult(channel="pagerduty", ok=ok, skipped=skipped, detail=detail, ref=ref)

    async def post(self, event: ReportEvent) -> ReportResult:
        if self._client is None:
            return self._result(True, "PagerDuty is not configured (REMEDIUM_PAGERDUTY_TOKEN)", skipped=True)
        if event.alert.source != "pagerduty":
            return self._result(
                True,
                f"the incident came from {event.alert.source}, not PagerDuty: no incident to write to",
                skipped=True,
            )
        if not self._from:
            return self._result(
                True,
                "REMEDIUM_PAGERDUTY_FROM is not set (PagerDuty requires a From user on writes)",
                skipped=True,
                ref=event.alert.id,
            )
        try:
            return await self._post(event)
        except httpx.TimeoutException as exc:
            raise unavailable("pagerduty", f"timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise unavailable(
                "pagerduty", self._scrub(f"cannot reach the API ({type(exc).__name__}: {exc})")
            ) from None

    async def _post(self, event: ReportEvent) -> ReportResult:
        incident_id = event.alert.id
        path = incident_path(incident_id)
        link = incident_link(event, self._ui)
        done: list[str] = []
        escalating = event.kind == "outcome" and event.escalate
        if event.kind not in SILENT_KINDS or escalating:
            notes = await self._call("GET", f"{path}/notes")
            existing = [str(n.get("content", "")) for n in notes.get("notes", [])]
            tag = marker(event)
            if any(tag in text for text in existing):
                done.append("note already present")
            else:
                content = plain_text(event, link)
                if escalating:
                    reason = plain_inline(event.title)
                    content = f"Remedium {self._escalation.describe()}.\nReason: {reason}\n\n" + content
                if len(content) > NOTE_LIMIT:
                    content = content[: NOTE_LIMIT - len(tag) - 2] + "…\n" + tag
                await self._call("POST", f"{path}/notes", {"note": {"content": content}})
                done.append("note added")
        if event.kind == "outcome" and (event.outcome == "resolved" or escalating):
            current = (await self._call("GET", path)).get("incident", {})
            status = current.get("status")
            if event.outcome == "resolved" and not escalating:
                if status == "resolved":
                    done.append("already resolved")
                else:
                    change: dict[str, Any] = {
                        "type": "incident_reference",
                        "status": "resolved",
                        "resolution": plain_inline(event.title)[:1000],
                    }
                    await self._call("PUT", path, {"incident": change})
                    done.append("resolved")
            elif escalating:
                if status == "resolved":
                    done.append("not escalated: already resolved upstream")
                else:
                    change = {"type": "incident_reference", **self._escalation.incident_change()}
                    await self._call("PUT", path, {"incident": change})
                    done.append("escalated: " + self._escalation.describe().replace("this incident ", ""))
        return self._result(True, ", ".join(done) or "nothing to write", ref=incident_id)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self._client is not None
        headers = {"From": self._from or ""} if method != "GET" else None
        response = await self._client.request(method, path, json=body, headers=headers)
        if response.is_success:
            payload = response.json() if response.content else {}
            return payload if isinstance(payload, dict) else {}
        what = f"{method} {path}"
        if response.status_code == 429:
            raise rate_limited("pagerduty", retry_after_seconds(response.headers.get("Retry-After")), what)
        message = self._scrub(self._error_message(response))
        if response.status_code >= 500:
            raise unavailable("pagerduty", f"{what} answered HTTP {response.status_code}: {message}")
        raise rejected("pagerduty", f"{what} answered HTTP {response.status_code}: {message}")

    @staticmethod
    def _error_message(response: httpx.Response) -> str:
        try:
            error = response.json().get("error", {})
        except (ValueError, AttributeError):
            return response.text[:300] or response.reason_phrase
        if not isinstance(error, dict):
            return str(error)[:300]
        details = "; ".join(str(e) for e in error.get("errors") or [])
        text = str(error.get("message") or response.reason_phrase)
        return f"{text} ({details})" if details else text

    def _scrub(self, text: str) -> str:
        token = None
        if self._client is not None:
            token = self._client.headers.get("Authorization", "").removeprefix("Token token=")
        return scrub(text, [token])

"""Jira as a human channel: one ticket per incident, a comment per event, closed when resolved.

The ticket is found again by a label derived from the workflow id (JQL), so a retried activity
or another worker never opens a second one; each comment ends with the event's marker and the
ticket's comments are read before adding one. Follow-ups become their own tickets, found again
by their own label and linked "Relates". The `jira` client blocks, so each post runs in a thread,
with the client's own retry loop disabled: Temporal's retry policy (and Retry-After) decide.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Self

import requests
from jira import JIRA, JIRAError
from pydantic import SecretStr
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
from remedium.report_render import (
    incident_link,
    jira_body,
    jira_link,
    jira_text,
    jira_wiki,
    marker,
    rate_limited,
    rejected,
    retry_after_seconds,
    scrub,
    source_link,
    unavailable,
)
from remedium.untrusted import one_line

log = logging.getLogger("remedium.report.jira")


class _LinkTypeByNameIsFine(logging.Filter):
    """`JIRA.create_issue_link` compares a link type given by name against resource objects, so
    it warns "not present in the list of link types" for every name, even one Jira has. The
    server's own 404 still reaches us when a type really is missing; the warning is noise at 2 a.m."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "issue link type is not present" not in record.getMessage()


logging.getLogger("jira").addFilter(_LinkTypeByNameIsFine())

TIMEOUT_S = 10.0
COMMENT_KINDS = frozenset(
    {
        "diagnosis",
        "dry_run",
        "approval_requested",
        "approval_decided",
        "action",
        "verification",
        "degraded",
        "outcome",
    }
)
ISSUE_TYPE_PREFERENCE = ("Incident", "Bug", "Task")
FOLLOWUP_TYPE_PREFERENCE = ("Task", "Bug", "Incident")
DONE_TRANSITIONS = ("done", "resolved", "closed", "resolve issue", "close issue", "resolve", "close")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_CACHE_SIZE = 1024


def incident_label(workflow_id: str) -> str:
    """`incident-pagerduty-PGR0VU2` -> `remedium-incident-pagerduty-PGR0VU2` (labels take no spaces)."""
    return ("remedium-" + _LABEL_UNSAFE.sub("-", workflow_id))[:200]


def followup_label(workflow_id: str, text: str) -> str:
    digest = hashlib.sha256(text.strip().encode()).hexdigest()[:10]
    return f"{incident_label(workflow_id)}-followup-{digest}"


class JiraConnector:
    """Connects on first use, then hands out the same client; a failed connect is retried next call."""

    def __init__(self, url: str, user: str, token: SecretStr) -> None:
        self.url = url
        self.user = user
        self._token = token
        self._lock = threading.Lock()
        self._client: JIRA | None = None

    @property
    def token(self) -> str:
        return self._token.get_secret_value()

    def __repr__(self) -> str:
        return f"JiraConnector(url={self.url!r}, user={self.user!r})"

    def __call__(self) -> JIRA:
        with self._lock:
            if self._client is None:
                self._client = JIRA(
                    server=self.url,
                    basic_auth=(self.user, self.token),
                    max_retries=0,
                    timeout=TIMEOUT_S,
                    get_server_info=True,
                )
            return self._client


class JiraSettings(IntegrationSettings):
    """Jira Cloud or Server: URL, user and API token (basic auth), and the project for tickets."""

    model_config = SettingsConfigDict(env_prefix="REMEDIUM_JIRA_")

    url: str | None = None
    user: str | None = None
    token: SecretStr | None = None
    project: str | None = None


def jira_connector(settings: JiraSettings) -> Callable[[], JIRA] | None:
    """A lazy connector (basic auth: user + API token), or None unless URL, user and token are set."""
    if not (settings.url and settings.user and settings.token):
        return None
    return JiraConnector(settings.url, settings.user, settings.token)


async def _lazy_nothing_to_close(connector: Callable[[], JIRA]) -> None:
    """The connector holds no socket until first use, and the jira client keeps none open."""


JIRA_SYSTEM = register_integration(
    Integration(
        name="jira",
        settings=JiraSettings,
        connect=jira_connector,
        close=_lazy_nothing_to_close,
        describe=lambda settings: f"{settings.url} project {settings.project}",
    )
)


@register_reporter
class JiraReporter(Reporter):
    channel = "jira"

    def __init__(self, connect: Callable[[], JIRA] | None, project: str | None, ui_base: str) -> None:
        self._connect = connect
        self._project = project
        self._ui = ui_base
        self._known: OrderedDict[str, str] = OrderedDict()  # label -> issue key (search may lag)
        self._types: dict[str, str] = {}

    @classmethod
    def build(cls, clients: Clients) -> Self:
        return cls(
            JIRA_SYSTEM.client(clients), JIRA_SYSTEM.settings_of(clients).project, clients.temporal_ui_url
        )

    @classmethod
    def ready(cls, clients: Clients) -> bool:
        return JIRA_SYSTEM.client(clients) is not None and bool(JIRA_SYSTEM.settings_of(clients).project)

    async def post(self, event: ReportEvent) -> ReportResult:
        if self._connect is None or not self._project:
            return ReportResult(
                channel="jira",
                ok=True,
                skipped=True,
                detail="Jira is not configured (REMEDIUM_JIRA_URL, _USER, _TOKEN, _PROJECT)",
            )
        return await asyncio.to_thread(self._post_guarded, event)

    # ------------------------------------------------------------ blocking

    def _post_guarded(self, event: ReportEvent) -> ReportResult:
        try:
            return self._post(event)
        except JIRAError as exc:
            raise self._failure(exc) from None
        except requests.Timeout as exc:
            raise unavailable("jira", f"timed out ({type(exc).__name__})") from None
        except requests.RequestException as exc:
            raise unavailable("jira", self._scrub(f"cannot reach the API ({type(exc).__name__})")) from None

    def _post(self, event: ReportEvent) -> ReportResult:
        assert self._connect is not None and self._project is not None
        jira = self._connect()
        link = incident_link(event, self._ui)
        done: list[str] = []
        label = incident_label(event.workflow_id)
        key = self._find(jira, label)
        if key is None:
            key = self._create_incident_ticket(jira, event, label, link)
            done.append(f"opened {key}")
        if event.kind in COMMENT_KINDS:
            done.append(self._comment(jira, key, event, link))
        if event.kind == "outcome" and event.outcome == "resolved":
            done.append(self._resolve(jira, key))
        for text in event.followups:
            done.append(self._followup(jira, key, event, text, link))
        return ReportResult(channel="jira", ok=True, detail=", ".join(done) or "up to date", ref=key)

    def _find(self, jira: JIRA, label: str) -> str | None:
        if label in self._known:
            return self._known[label]
        jql = f'project = "{self._project}" AND labels = "{label}" ORDER BY created ASC'
        found = jira.search_issues(jql, maxResults=10, fields="summary,labels")
        if not found:
            return None
        keys = sorted((issue.key for issue in found), key=lambda k: int(k.rsplit("-", 1)[-1]))
        return self._remember(label, keys[0])

    def _remember(self, label: str, key: str) -> str:
        self._known[label] = key
        while len(self._known) > _CACHE_SIZE:
            self._known.popitem(last=False)
        return key

    def _issue_type(self, jira: JIRA, preference: tuple[str, ...]) -> str:
        cached = self._types.get(preference[0])
        if cached:
            return cached
        project = jira.project(str(self._project))
        names = [t.name for t in getattr(project, "issueTypes", []) if not getattr(t, "subtask", False)]
        chosen = next((n for n in preference if n in names), names[0] if names else preference[-1])
        self._types[preference[0]] = chosen
        return chosen

    def _create_incident_ticket(self, jira: JIRA, event: ReportEvent, label: str, link: str) -> str:
        alert = event.alert
        lines = [
            f"Remedium is handling this incident: {jira_link(event.workflow_id, link)}",
            "",
            f"* *Alert:* {jira_text(one_line(alert.title))} (from {alert.source}, id {jira_text(alert.id)})",
        ]
        if alert.service:
            lines.append(f"* *Service:* {jira_text(one_line(alert.service))}")
        if alert.severity:
            lines.append(f"* *Severity:* {jira_text(one_line(alert.severity))}")
        source = source_link(alert)  # PagerDuty's own page is a link; an alert-supplied URL is text
        if source:
            lines.append(f"* *Source:* {jira_link(source, source)}")
        elif alert.url:
            lines.append(f"* *Source:* {jira_text(one_line(alert.url))}")
        if event.markdown:
            lines += ["", jira_wiki(event.markdown)]
        fields = {
            "project": {"key": self._project},
            "summary": f"[Remedium] {one_line(alert.title)}"[:250],  # a plain-text field
            "description": "\n".join(lines),
            "issuetype": {"name": self._issue_type(jira, ISSUE_TYPE_PREFERENCE)},
            "labels": ["remedium", label],
        }
        issue = jira.create_issue(fields=fields)
        return self._remember(label, issue.key)

    def _comment(self, jira: JIRA, key: str, event: ReportEvent, link: str) -> str:
        tag = marker(event)
        if any(tag in (comment.body or "") for comment in jira.comments(key)):
            return f"{event.kind} already on {key}"
        jira.add_comment(key, jira_body(event, link))
        return f"{event.kind} commented on {key}"

    def _resolve(self, jira: JIRA, key: str) -> str:
        issue = jira.issue(key, fields="status")
        category = getattr(getattr(issue.fields.status, "statusCategory", None), "key", "")
        if category == "done":
            return f"{key} already {issue.fields.status.name}"
        transitions = jira.transitions(key)
        by_name = {str(t["name"]).lower(): t for t in transitions}
        chosen = next((by_name[n] for n in DONE_TRANSITIONS if n in by_name), None)
        if chosen is None:
            chosen = next(
                (
                    t
                    for t in transitions
                    if (t.get("to") or {}).get("statusCategory", {}).get("key") == "done"
                ),
                None,
            )
        if chosen is None:
            names = ", ".join(str(t["name"]) for t in transitions) or "none"
            return f"{key} left open: no Done/Resolved/Closed transition (available: {names})"
        jira.transition_issue(key, str(chosen["id"]))
        return f"{key} moved to {chosen['to']['name'] if chosen.get('to') else chosen['name']}"

    def _followup(self, jira: JIRA, parent: str, event: ReportEvent, text: str, link: str) -> str:
        label = followup_label(event.workflow_id, text)
        key = self._find(jira, label)
        if key is None:
            fields = {
                "project": {"key": self._project},
                "summary": f"[Remedium follow-up] {one_line(text)}"[:250],
                "description": (
                    f"{jira_wiki(text)}\n\nRaised by incident {parent} ({jira_link('Temporal', link)})."
                ),
                "issuetype": {"name": self._issue_type(jira, FOLLOWUP_TYPE_PREFERENCE)},
                "labels": ["remedium", "remedium-followup", label],
            }
            key = self._remember(label, jira.create_issue(fields=fields).key)
        linked = jira.issue(parent, fields="issuelinks").fields.issuelinks
        for link_obj in linked or []:
            other = getattr(link_obj, "outwardIssue", None) or getattr(link_obj, "inwardIssue", None)
            if other is not None and other.key == key:
                return f"follow-up {key} already linked"
        jira.create_issue_link("Relates", parent, key)
        return f"follow-up {key} linked"

    # ------------------------------------------------------------ failures

    def _scrub(self, text: str) -> str:
        token = getattr(self._connect, "token", None)
        return scrub(text, [token if isinstance(token, str) else None])

    def _failure(self, exc: JIRAError) -> Exception:
        status = exc.status_code
        message = self._scrub(str(exc.text or "no error message"))[:500]
        if status == 429:
            headers: Any = getattr(exc.response, "headers", None) or {}
            return rate_limited("jira", retry_after_seconds(headers.get("Retry-After")))
        if status is None or status >= 500:
            return unavailable("jira", f"HTTP {status or 'error'}: {message}")
        return rejected("jira", f"HTTP {status}: {message}")

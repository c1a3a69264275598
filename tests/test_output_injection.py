"""Alert text never controls a terminal, pings a channel, or becomes a link.

The observed finding: an alert whose title carried ANSI escapes (`ESC[2J ESC[31m`), `<!channel>`
and disguised links in Slack, Markdown and Jira syntax cleared the screen in `remedium incident
show`, pinged the whole channel from the Slack fallback text, and became a live link in the
report. Each test drives the real component with that title: a real worker on real Temporal
reporting through slack_sdk, jira and httpx to the sandboxes (which record what they received),
GitHub's own Markdown renderer (cmark-gfm) for the report, and the installed `remedium`
command against a real dev server.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from activities.jira import JiraReporter, JiraSettings, incident_label, jira_connector
from remedium.demo.sandbox.jira import JiraSandbox
from remedium.demo.sandbox.pagerduty import PagerDutySandbox
from remedium.demo.sandbox.slack import SlackSandbox
from remedium.incidents import start_incident
from remedium.models import Alert, IncidentResult, ReportEvent
from remedium.settings import Settings
from remedium.untrusted import terminal_text
from tests.conftest import dev_address
from tests.support import TargetService, restart_runbook, settings_for, start, wait_for_stage, worker_for
from tests.support import write_config as write_policy_and_runbooks

EVIL = "http://evil.example"
OBSERVED_TITLE = (
    "\x1b[2J\x1b[31mweb-frontend down <!channel> <http://evil.example|Click to approve> "
    "[Approve](http://evil.example) [Approve|http://evil.example] \u202ekcilc\u202c\x07"
)
APPROVAL_REASON = "<!here> fine, see [runbook](http://evil.example/rb) \x1b]0;pwned\x07"
# What a terminal must never receive from alert text: ESC, BEL, CSI (8-bit), CR, and the bidi
# embeddings, overrides and isolates.
TERMINAL_FORBIDDEN = "\x1b\x07\x9b\r\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
UI = "http://temporal.example:8233"
CHANNEL = "C0INCIDENTS"
BIN = Path(sys.executable).parent


@pytest.fixture
def target() -> Iterator[TargetService]:
    service = TargetService(health_status=500, health_after_restart=200).start()
    try:
        yield service
    finally:
        service.stop()


# ------------------------------------------------------------------ what each reader would act on


def _controls(text: str) -> list[str]:
    return [c for c in text if c in TERMINAL_FORBIDDEN]


def _slack_sequences(text: str) -> list[str]:
    """What Slack would parse as `<...>`: a link, `<!channel>`, `<@U…>`, `<#C…>`."""
    return re.findall(r"<([^<>]*)>", text)


def _mrkdwn_objects(value: Any) -> Iterator[dict[str, Any]]:
    """Every Block Kit text object in a blocks payload."""
    if isinstance(value, dict):
        if value.get("type") in ("mrkdwn", "plain_text") and isinstance(value.get("text"), str):
            yield value
        for item in value.values():
            yield from _mrkdwn_objects(item)
    elif isinstance(value, list):
        for item in value:
            yield from _mrkdwn_objects(item)


def _jira_links(text: str) -> list[str]:
    """The insides of unescaped `[...]`: what Jira wiki markup renders as a link (or a mention).

    {noformat} blocks are left out: Jira renders their content as it is, markup and all.
    """
    rendered = re.sub(r"\{noformat\}.*?\{noformat\}", "", text, flags=re.DOTALL)
    return re.findall(r"(?<!\\)\[((?:\\.|[^\\\]])*)\]", rendered)


def _html_links(markdown: str) -> list[str]:
    """What GitHub would render as links or images (raw HTML allowed, as a permissive renderer would)."""
    html = cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)
    return re.findall(r"<(?:a|img)\b[^>]*>", html)


def _settings(
    tmp: Path, target: TargetService, slack: SlackSandbox, jira: JiraSandbox, pd: PagerDutySandbox
) -> Settings:
    rb_dir, policy = write_policy_and_runbooks(tmp, [restart_runbook()], allow=[target.url])
    return Settings(
        runbooks_dir=rb_dir,
        policy_file=policy,
        task_queue=f"tq-{uuid.uuid4().hex[:8]}",
        slack_token=SecretStr(slack.token),
        slack_channel=CHANNEL,
        slack_api_url=slack.api_url,
        jira_url=jira.url,
        jira_user=jira.user,
        jira_token=SecretStr(jira.token),
        jira_project="OPS",
        pagerduty_token=SecretStr(pd.token),
        pagerduty_from="remedium@example.com",
        pagerduty_api_url=pd.url,
        temporal_ui_url=UI,
    )


# ------------------------------------------------------------------ the channels, end to end


async def test_observed_title_pings_nobody_and_links_nowhere_in_slack_jira_pagerduty_and_the_report(
    ts_env: WorkflowEnvironment,
    tmp_path: Path,
    target: TargetService,
    slack_sandbox: SlackSandbox,
    jira_sandbox: JiraSandbox,
    pagerduty_sandbox: PagerDutySandbox,
) -> None:
    settings = _settings(tmp_path, target, slack_sandbox, jira_sandbox, pagerduty_sandbox)
    incident = f"Q{uuid.uuid4().hex[:12].upper()}"
    pagerduty_sandbox.add_incident(incident, "web-frontend down")
    alert = Alert(
        source="pagerduty",
        id=incident,
        title=OBSERVED_TITLE,
        service="web-frontend",
        severity="P2",
        annotations={"base_url": target.url},
    )
    async with worker_for(ts_env.client, settings):
        handle = await start(ts_env.client, settings, alert)
        await wait_for_stage(handle, "awaiting_approval")
        await handle.signal("approve", {"step": "restart-pool", "by": "alice", "reason": APPROVAL_REASON})
        result: IncidentResult = await handle.result()
    assert result.outcome == "resolved"
    assert result.report is not None

    # Slack: every chat.postMessage / chat.update the sandbox received, fallback `text` and blocks.
    sent = [r.json for r in slack_sandbox.requests_to("POST", r"chat\.(postMessage|update)$")]
    assert len(sent) >= 4, "parent, stage replies, approval and its update"
    for body in sent:
        texts = [str(body.get("text") or "")] + [o["text"] for o in _mrkdwn_objects(body.get("blocks") or [])]
        for text in texts:
            assert "<!channel>" not in text and "<!here>" not in text, text
            assert all(seq.startswith(UI) for seq in _slack_sequences(text)), (
                f"only Remedium's own Temporal links are Slack links: {_slack_sequences(text)}"
            )
            assert EVIL not in text, f"a live URL from the alert reached Slack: {text!r}"
            assert not _controls(text), f"control characters reached Slack: {text!r}"
        for obj in _mrkdwn_objects(body.get("blocks") or []):
            if obj["type"] == "mrkdwn":
                assert obj.get("verbatim") is True, "Slack must not auto-link or auto-mention in blocks"
    posted = [r.json for r in slack_sandbox.requests_to("POST", r"chat\.postMessage$")]
    assert posted and all(b.get("unfurl_links") is False and b.get("unfurl_media") is False for b in posted)
    (parent,) = slack_sandbox.top_level(CHANNEL)
    assert parent["text"].startswith(
        "Incident: [2J[31mweb-frontend down &lt;!channel&gt; "
        "&lt;http[:]//evil.example|Click to approve&gt; [Approve](http[:]//evil.example)"
    ), "the title is still shown, as inert text"

    # Jira: the ticket, every comment, every follow-up: no `[...|http…]` link from the alert.
    (key,) = jira_sandbox.find(incident_label(alert.workflow_id))
    ticket = jira_sandbox.tickets[key]
    bodies = [ticket["description"], *jira_sandbox.comments(key)]
    bodies += [t["description"] for k, t in jira_sandbox.tickets.items() if k != key]
    assert len(bodies) >= 4
    for body in bodies:
        for link in _jira_links(body):
            assert link.startswith("remedium:") or link.split("|")[-1].startswith(UI), (
                f"only Remedium's Temporal links (and its event markers) are Jira links: [{link}]"
            )
        assert EVIL not in body, f"a live URL from the alert reached Jira: {body!r}"
        assert not _controls(body)
    assert "\\[Approve\\|http\\[:\\]//evil.example\\]" in ticket["description"], "shown, escaped"

    # PagerDuty: notes and the resolution are plain text with no live URL from the alert.
    notes = pagerduty_sandbox.note_texts(alert.id)
    resolution = str(pagerduty_sandbox.incidents[alert.id].get("resolution") or "")
    for text in [*notes, resolution]:
        assert EVIL not in text and not _controls(text), text
    assert any("[Approve|http[:]//evil.example]" in n for n in notes)

    # The report is Markdown: GitHub's renderer finds no link or image in it at all.
    markdown = result.report.markdown
    assert _html_links(markdown) == [], _html_links(markdown)
    assert "evil.example" in markdown and not _controls(markdown), "the alert is quoted, inert"
    assert "\\<!here\\>" in markdown, "the approver's reason is quoted, escaped"


async def test_alertmanager_url_is_text_and_pagerduty_html_url_a_link_in_the_jira_ticket(
    jira_sandbox: JiraSandbox,
) -> None:
    """A source URL is a link only when PagerDuty's signed webhook gave it (its `html_url`)."""
    connect = jira_connector(
        JiraSettings(url=jira_sandbox.url, user=jira_sandbox.user, token=SecretStr(jira_sandbox.token))
    )
    assert connect is not None
    cases = {
        "alertmanager": ("5f1a2b3c4d5e6f70", "http://evil.example/graph?g0.expr=up"),
        "pagerduty": ("PGR0VU3", "https://acme.pagerduty.com/incidents/PGR0VU3"),
    }
    for source, (alert_id, url) in cases.items():
        alert = Alert(source=source, id=alert_id, title=OBSERVED_TITLE, service="web", url=url)
        event = ReportEvent(
            workflow_id=alert.workflow_id,
            event_id="001-opened",
            kind="opened",
            stage="triggered",
            alert=alert,
            title=f"Remedium took incident: {alert.title}",
            markdown=f"Alert from {source}: **{alert.title}**",
        )
        await JiraReporter(connect, "OPS", UI).post(event)
        (key,) = jira_sandbox.find(incident_label(alert.workflow_id))
        description = jira_sandbox.tickets[key]["description"]
        links = [link.split("|")[-1] for link in _jira_links(description)]
        if source == "alertmanager":
            assert all(link.startswith(UI) for link in links), links
            assert "http\\[:\\]//evil.example/graph" in description and EVIL not in description
        else:
            assert url in links, "PagerDuty's own page stays a link"


# ------------------------------------------------------------------ the terminal


async def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [str(BIN / "remedium"), *args], capture_output=True, text=True, env=env, timeout=60
    )


async def test_incident_show_prints_no_escape_bell_or_bidi_characters(
    dev_env: WorkflowEnvironment, tmp_path: Path, target: TargetService
) -> None:
    rb_dir, policy = write_policy_and_runbooks(tmp_path, [restart_runbook()], allow=[target.url])
    settings = settings_for(tmp_path, rb_dir, policy)
    env = {
        **os.environ,
        "REMEDIUM_TEMPORAL_ADDRESS": dev_address(dev_env),
        "REMEDIUM_TASK_QUEUE": settings.task_queue,
        "REMEDIUM_RUNBOOKS_DIR": str(settings.runbooks_dir),
        "REMEDIUM_POLICY_FILE": str(settings.policy_file),
    }
    incident = f"Q{uuid.uuid4().hex[:12].upper()}"
    alert = Alert(
        source="pagerduty",
        id=incident,
        title=OBSERVED_TITLE,
        service="web-frontend",
        severity="P2",
        annotations={"base_url": target.url, "description": "see [Approve](http://evil.example) \x1b[2J"},
        url=f"https://acme.pagerduty.com/incidents/{incident}",
    )
    async with worker_for(dev_env.client, settings):
        assert await start_incident(dev_env.client, settings.task_queue, alert)  # as the ingress does
        handle = dev_env.client.get_workflow_handle(alert.workflow_id)
        await wait_for_stage(handle, "awaiting_approval")
        pending = await _run("incident", "show", alert.workflow_id, env=env)
        approved = await _run(
            "approve", alert.workflow_id, "--step", "restart-pool", "--as", "alice",
            "--reason", APPROVAL_REASON, env=env,
        )  # fmt: skip
        await asyncio.wait_for(handle.result(), 60)
        closed = await _run("incident", "show", alert.workflow_id, env=env)
        listed = await _run("incident", "list", env=env)
        description = await handle.describe()

    for run in (pending, approved, closed, listed):
        assert run.returncode == 0, run.stderr
        assert not _controls(run.stdout + run.stderr), f"{run.args}: {_controls(run.stdout + run.stderr)}"
    assert f"{alert.workflow_id}: [2J[31mweb-frontend down <!channel>" in pending.stdout, "title shown, inert"
    assert "PENDING APPROVAL: step restart-pool" in pending.stdout
    assert "## Incident report:" in closed.stdout, "the report is printed once the incident is over"
    audit_lines = [ln for ln in closed.stdout.splitlines() if " approved " in ln and "alice" in ln]
    assert audit_lines and "]0;pwned" in audit_lines[0], "the approver's reason is on its audit line, inert"

    # The Temporal UI renders the incident's summary and details as Markdown: only PagerDuty's
    # own page is a link there.
    summary = await description.static_summary() or ""
    details = await description.static_details() or ""
    assert _html_links(summary) == []
    assert _html_links(details) == [f'<a href="https://acme.pagerduty.com/incidents/{incident}">']
    assert not _controls(summary + details)


def test_terminal_text_drops_c0_c1_and_bidi_but_keeps_newline_and_tab() -> None:
    raw = "a\x1b[2Jb\x07c\x9b31md\re\u202ef\u2066g\u2069\th\ni\x00\x7f"
    assert terminal_text(raw) == "a[2Jbc31mdef" + "g\th\ni"
    assert terminal_text("one\ntwo\tthree", multiline=False) == "one ⏎ two three"
    assert json.dumps(terminal_text(OBSERVED_TITLE)).count("\\u") == 0

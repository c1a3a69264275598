"""What the three human channels share: one event rendered per channel's markup, and one way to fail.

Slack speaks mrkdwn, Jira (REST v2) wiki markup, PagerDuty notes plain text; the workflow
writes markdown, so each channel gets a conversion here. Every post carries a marker line
`[remedium:<event key>]`, which is how a retried activity recognises its own earlier post.
Failures become Temporal ApplicationErrors that say whether a retry can help (5xx, timeouts,
rate limits, honouring Retry-After) or not (bad token, unknown project), scrubbed of secrets.

Everything in an event but its link fields is incident text: the alert's title and
annotations reach titles, bodies, facts, dry runs and follow-ups, so none of it may ping,
link or embed (see `remedium.untrusted`). The conversions therefore read only the markdown a
workflow writes (headings, bullets, quotes, tables, code, bold, backslash escapes) and never
turn `[text](url)` into a link: every literal piece is escaped for its channel (Slack `&<>`,
Jira `[]|{}!*_+^~\\`) with its URLs defanged and its control characters dropped. The only
links are the ones a renderer adds itself: the incident's Temporal UI page (`incident_link`),
and on Jira the PagerDuty incident's own `html_url`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from temporalio.exceptions import ApplicationError

from remedium.errors import ErrorType
from remedium.models import Alert, AlertBrief, ReportEvent
from remedium.untrusted import defang_urls, one_line, strip_controls

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_BULLET = re.compile(r"^(\s*)[-*]\s+(.*)$")
_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_INLINE = re.compile(
    r"\\(?P<esc>[!-/:-@\[-`{-~])"  # a markdown backslash escape: the character itself
    r"|(?P<fence>`+)(?P<code>.+?)(?<!`)(?P=fence)(?!`)"  # a code span, any fence length
    r"|(?P<bold>\*\*)"
)
_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")
_JIRA_SPECIAL = re.compile(r"([\[\]|{}!*_+^~])")
_JIRA_MACRO = re.compile(r"(?i)\{(?=(?:code|noformat|quote|panel|html|color)\b)")
_SAFE_URL = re.compile(r"^https?://[^\s\[\]|{}<>\"'`\\]+$")
MAX_RETRY_AFTER_S = 3600.0


# ------------------------------------------------------------------ shared facts


def marker(event: ReportEvent) -> str:
    return f"[remedium:{event.key}]"


def incident_link(event: ReportEvent, ui_base: str) -> str:
    """The incident's page in the Temporal UI."""
    if event.ui_url:
        return event.ui_url
    return f"{ui_base.rstrip('/')}/namespaces/default/workflows/{event.workflow_id}"


def source_link(alert: Alert | AlertBrief) -> str | None:
    """The alert's own page, when it may be a link: PagerDuty's `html_url`, never an Alertmanager URL.

    A PagerDuty webhook is signed and its `html_url` is PagerDuty's page for the incident; an
    Alertmanager alert's URL (generatorURL) is whatever the alert says, so it is shown as text.
    """
    if alert.source == "pagerduty" and alert.url and _SAFE_URL.match(alert.url):
        return alert.url
    return None


def event_facts(event: ReportEvent) -> list[tuple[str, str]]:
    """The structured fields of an event worth showing, in reading order."""
    facts = [
        ("Runbook", event.runbook),
        ("Step", event.step),
        ("Action", event.action),
        ("Risk", event.risk),
        ("Decision", f"{event.decision} by {event.decided_by or 'unknown'}" if event.decision else None),
        ("Outcome", event.outcome),
    ]
    return [(name, value) for name, value in facts if value]


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# ------------------------------------------------------------------ literal text per channel


def plain(text: str) -> str:
    """Incident text for a plain-text reader (PagerDuty notes): no controls, no live URLs."""
    return defang_urls(strip_controls(text))


def slack_escape(text: str) -> str:
    """Incident text for any Slack mrkdwn field (blocks and the `text` fallback alike).

    Slack's three control characters are entity-escaped, so `<!channel>`, `<!here>`, `<@U…>`,
    `<#C…>` and `<url|text>` show as typed instead of pinging or linking; URLs are defanged
    and control characters dropped, as for every channel.
    """
    return plain(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_plain(text: str) -> str:
    """Incident text for a Slack `plain_text` object (a header): one line, escaped like mrkdwn.

    Slack decodes `&amp;`, `&lt;` and `&gt;` in every text object, plain_text included, so the
    header shows the title as typed and nothing in it is ever a control sequence.
    """
    return slack_escape(one_line(text))


def jira_text(text: str) -> str:
    """Incident text for Jira wiki markup: no link, image, macro, mention or effect can form.

    Backslash, Jira's escape character, becomes a full-width backslash: kept as `\\`, it would
    escape the escape of the next character (`\\[` is a line break and then a live `[`).
    """
    return _JIRA_SPECIAL.sub(r"\\\1", plain(text).replace("\\", "\N{FULLWIDTH REVERSE SOLIDUS}"))


def _jira_verbatim(text: str) -> str:
    """A line inside {noformat}: markup is off there, but the block must not be closed early."""
    return _JIRA_MACRO.sub("{ ", plain(text))


def jira_link(text: str, url: str) -> str:
    """A link Remedium vouches for (the Temporal UI, PagerDuty's page): label escaped, URL checked."""
    if not _SAFE_URL.match(url):
        return f"{jira_text(text)} ({jira_text(url)})"
    return f"[{jira_text(text)}|{url}]"


# ------------------------------------------------------------------ markup


class _Markup:
    """How one channel writes the markdown the workflow produces: literals, code, bold, blocks."""

    def __init__(
        self,
        text: Callable[[str], str],
        code: Callable[[str], str],
        bold: str,
        verbatim: Callable[[str], str],
    ) -> None:
        self.text = text
        self.code = code
        self.bold = bold
        self.verbatim = verbatim

    def inline(self, markdown: str) -> str:
        """One line of markdown: code spans and bold kept as markup, everything else a literal."""
        pieces: list[tuple[str, str]] = []
        pos = 0
        for m in _INLINE.finditer(markdown):
            if m.start() > pos:
                pieces.append(("text", markdown[pos : m.start()]))
            if m["esc"] is not None:
                pieces.append(("text", m["esc"]))
            elif m["fence"]:
                body = m["code"]
                if len(body) > 1 and body.startswith(" ") and body.endswith(" "):
                    body = body[1:-1]
                pieces.append(("code", body))
            else:
                pieces.append(("bold", "**"))
            pos = m.end()
        if pos < len(markdown):
            pieces.append(("text", markdown[pos:]))
        bolds = [i for i, (kind, _) in enumerate(pieces) if kind == "bold"]
        if len(bolds) % 2:
            pieces[bolds[-1]] = ("text", "**")
        out: list[str] = []
        literal: list[str] = []  # adjacent literals are escaped together, so a URL split by
        for kind, value in pieces:  # an escape (`http\://`) is still one URL to defang
            if kind == "text":
                literal.append(value)
                continue
            if literal:
                out.append(self.text("".join(literal)))
                literal = []
            out.append(self.code(value) if kind == "code" else self.bold)
        if literal:
            out.append(self.text("".join(literal)))
        return "".join(out)

    def cells(self, row: str) -> list[str]:
        """A markdown table row's cells, each converted (`\\|` inside a cell is a literal pipe)."""
        body = row.strip()
        body = body.removeprefix("|")
        if body.endswith("|") and not body.endswith("\\|"):
            body = body[:-1]
        return [self.inline(cell.strip()) for cell in _UNESCAPED_PIPE.split(body)]


def _blocks(markdown: str) -> list[tuple[str, str | list[str]]]:
    """The markdown's lines, typed: ("code", lines) of a fenced block, ("header" | "row" | "line", line)."""
    lines = markdown.splitlines()
    out: list[tuple[str, str | list[str]]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```"):
            end = next(
                (j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```")), len(lines)
            )
            out.append(("code", lines[i + 1 : end]))
            i = end + 1
            continue
        if line.lstrip().startswith("|"):
            if _TABLE_RULE.match(line):
                i += 1
                continue  # the header's underline: every channel marks the header its own way
            header = i + 1 < len(lines) and bool(_TABLE_RULE.match(lines[i + 1]))
            out.append(("header" if header else "row", line))
        else:
            out.append(("line", line))
        i += 1
    return out


def _convert(
    markdown: str,
    markup: _Markup,
    heading: Callable[[int, str], str],
    bullet: Callable[[int, str], str],
    quote: Callable[[str], str],
    code_block: Callable[[list[str]], list[str]],
    row: Callable[[list[str], bool], str],
) -> str:
    out: list[str] = []
    for kind, value in _blocks(markdown):
        if kind == "code":
            assert isinstance(value, list)
            out += code_block([markup.verbatim(line) for line in value])
            continue
        assert isinstance(value, str)
        if kind in ("header", "row"):
            out.append(row(markup.cells(value), kind == "header"))
        elif m := _HEADING.match(value):
            out.append(heading(len(m[1]), markup.inline(m[2])))
        elif m := _BULLET.match(value):
            out.append(bullet(len(m[1]) // 2, markup.inline(m[2])))
        elif value.startswith(">"):
            out.append(quote(markup.inline(value.lstrip("> "))))
        else:
            out.append(markup.inline(value))
    return "\n".join(out)


def _slack_code(text: str) -> str:
    return "`" + slack_escape(one_line(text).replace("`", "'")) + "`"


def _slack_verbatim(line: str) -> str:
    return slack_escape(line).replace("```", "'''")  # a fence inside would end the block early


def _jira_code(text: str) -> str:
    body = jira_text(one_line(text))
    return "{{" + body + "}}" if body.strip() else body


SLACK = _Markup(text=slack_escape, code=_slack_code, bold="*", verbatim=_slack_verbatim)
JIRA = _Markup(text=jira_text, code=_jira_code, bold="*", verbatim=_jira_verbatim)
PLAIN = _Markup(text=plain, code=lambda text: plain(one_line(text)), bold="", verbatim=plain)


def slack_inline(markdown: str) -> str:
    """One line of workflow markdown (an event title) as Slack mrkdwn."""
    return SLACK.inline(one_line(markdown))


def jira_inline(markdown: str) -> str:
    """One line of workflow markdown (an event title) as Jira wiki markup."""
    return JIRA.inline(one_line(markdown))


def plain_inline(markdown: str) -> str:
    """One line of workflow markdown (an event title) as plain text."""
    return PLAIN.inline(one_line(markdown))


def slack_mrkdwn(markdown: str) -> str:
    """Markdown as Slack mrkdwn: *bold*, `code`, bullets, code blocks; no link, mention or URL."""
    return _convert(
        markdown,
        SLACK,
        heading=lambda _level, text: f"*{text}*",
        bullet=lambda depth, text: "  " * depth + f"• {text}",
        quote=lambda text: f"> {text}",
        code_block=lambda lines: ["```", *lines, "```"],
        row=lambda cells, header: " | ".join(f"*{c}*" if header and c else c for c in cells),
    )


def jira_wiki(markdown: str) -> str:
    """Markdown as Jira wiki markup (what REST v2 comment and description bodies render), link-free."""
    return _convert(
        markdown,
        JIRA,
        heading=lambda level, text: f"h{level}. {text}",
        bullet=lambda depth, text: "*" * (depth + 1) + f" {text}",
        quote=lambda text: f"bq. {text}",
        code_block=lambda lines: ["{noformat}", *lines, "{noformat}"],
        row=lambda cells, header: (
            ("||" if header else "|")
            + ("||" if header else "|").join(c or " " for c in cells)
            + ("||" if header else "|")
        ),
    )


def markdown_plain(markdown: str) -> str:
    """Markdown as plain text: markup dropped, literals kept, URLs defanged."""
    return _convert(
        markdown,
        PLAIN,
        heading=lambda _level, text: text,
        bullet=lambda depth, text: "  " * depth + f"- {text}",
        quote=lambda text: f"> {text}",
        code_block=lambda lines: lines,
        row=lambda cells, _header: " | ".join(cells),
    )


def plain_text(event: ReportEvent, link: str) -> str:
    """A PagerDuty note: plain text, the marker last."""
    lines = [plain_inline(event.title)]
    if event.markdown:
        lines += ["", markdown_plain(event.markdown)]
    facts = event_facts(event)
    if facts:
        lines += [""] + [f"{name}: {plain(one_line(value))}" for name, value in facts]
    if event.dry_run and event.kind in ("dry_run", "approval_requested"):
        lines += ["", "Dry run:", plain(event.dry_run)]
    if event.followups:
        lines += ["", "Follow-ups:"] + [f"- {plain(one_line(item))}" for item in event.followups]
    lines += ["", f"Incident: {link}", marker(event)]
    return "\n".join(lines)


def jira_body(event: ReportEvent, link: str) -> str:
    parts = [f"*{jira_inline(event.title)}*"]
    if event.markdown:
        parts.append(jira_wiki(event.markdown))
    facts = event_facts(event)
    if facts:
        parts.append("\n".join(f"* *{name}:* {jira_text(one_line(value))}" for name, value in facts))
    if event.dry_run and event.kind in ("dry_run", "approval_requested"):
        parts.append("Dry run:\n{noformat}\n" + _jira_verbatim(event.dry_run) + "\n{noformat}")
    parts.append(jira_link("Incident in Temporal", link))
    parts.append("{color:#97a0af}" + marker(event) + "{color}")
    return clip("\n\n".join(parts), 32000)


# ------------------------------------------------------------------ failures


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def rate_limited(channel: str, retry_after: float | None, what: str = "") -> ApplicationError:
    when = f"retry after {retry_after:g}s" if retry_after is not None else "no Retry-After given"
    return ApplicationError(
        f"{channel}: rate limited (HTTP 429){f' on {what}' if what else ''}; {when}",
        type=ErrorType.REPORT_RATE_LIMITED,
        next_retry_delay=timedelta(seconds=retry_after) if retry_after is not None else None,
    )


def unavailable(channel: str, detail: str) -> ApplicationError:
    """Something a later attempt may get past: 5xx, timeout, connection refused."""
    return ApplicationError(f"{channel}: unavailable: {detail}", type=ErrorType.REPORT_UNAVAILABLE)


def rejected(channel: str, detail: str) -> ApplicationError:
    """The API refused the request for a reason retrying will not fix (auth, not found, invalid)."""
    return ApplicationError(
        f"{channel}: rejected: {detail}", type=ErrorType.REPORT_REJECTED, non_retryable=True
    )

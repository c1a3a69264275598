"""Text that came from an incident, made harmless for each place Remedium shows it.

An alert's title, labels and annotations, log lines, fact values, approvers' names and reasons,
and everything a runbook template renders from them are written by whoever can send an
alert: they must never steer a terminal, ping a chat channel or become a link. Each reader
has its own hazards, handled here once and used by every writer:

- terminals: C0/C1 control characters (ESC sequences clear the screen or recolour it, BEL
  rings, CR overwrites a line) and the bidi overrides and isolates (U+202A-U+202E,
  U+2066-U+2069, and the LRM/RLM/ALM marks) that reorder what is shown. They are removed;
  newline and tab stay where a text may span lines, and become ` ⏎ ` / a space where it
  must stay on one (an audit line that could start a fake second audit line).
- links: a bare URL auto-links in Slack, Jira, PagerDuty and GitHub-flavoured Markdown, so
  incident text has its URLs defanged the way security advisories write them:
  `http://evil.example` becomes `http[:]//evil.example`, `www.` becomes `www[.]` and `mailto:`
  `mailto[:]`. A reader still sees where it pointed; nothing is clickable. Remedium's own links
  (the Temporal UI, PagerDuty's `html_url`) never go through here: each renderer adds them
  from fields Remedium controls.
- Markdown: the report is a Markdown document; incident text in it is backslash-escaped
  where it could open a link or image (`[`, `]`), raw HTML or an autolink (`<`, `>`), an
  entity (`&`, which could spell a bidi override), a code span, emphasis or a table cell, or
  it is put in a code span whose fence no backtick run inside can close. `(`, `)`, `!`, `_`
  and `#` stay as they are: without a `[` they form nothing, and the raw report stays readable.

Pure functions only: the workflow sandbox imports this module (through `remedium.summary`).
"""

from __future__ import annotations

import re

_C0_C1 = "\x00-\x08\x0b-\x1f\x7f-\x9f"  # every C0 control but tab and newline, DEL, every C1
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # marks, embeddings, overrides, isolates
_UNSAFE = re.compile(f"[{_C0_C1}{_BIDI}]")
_LINE_BREAKS = re.compile(r"\r\n|[\n\r\u2028\u2029\x0b\x0c\x85]")

_SCHEME = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,31}):(?=//)")
_WWW = re.compile(r"(?i)\b(www)\.")
_MAILTO = re.compile(r"(?i)\b(mailto):")

_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]<>|~&])")  # links, images, HTML, entities, cells, emphasis
_BACKTICKS = re.compile(r"`+")


def strip_controls(text: str) -> str:
    """`text` without control characters and bidi controls; newlines (CR LF as LF) and tabs kept."""
    return _UNSAFE.sub("", text.replace("\r\n", "\n"))


def one_line(text: str) -> str:
    """`text` on one line: line breaks become ` ⏎ `, tabs a space, other controls are removed."""
    return _UNSAFE.sub("", _LINE_BREAKS.sub(" ⏎ ", text).replace("\t", " "))


def terminal_text(text: str, *, multiline: bool = True) -> str:
    """What a terminal may print of `text`: no escape sequences, no bell, no bidi reordering.

    `multiline=False` for a field that must stay one line (a title, an audit message).
    """
    return strip_controls(text) if multiline else one_line(text)


def defang_urls(text: str) -> str:
    """URLs that no renderer auto-links: `http[:]//host`, `www[.]host`, `mailto[:]x`."""
    return _MAILTO.sub(r"\1[:]", _WWW.sub(r"\1[.]", _SCHEME.sub(r"\1[:]", text)))


def markdown_text(text: str) -> str:
    """Incident text as literal inline Markdown: one line, defanged, every markup character escaped."""
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", defang_urls(one_line(text)).lstrip())
    if escaped[:1] in ("#", "-", "+", "="):  # on a line of its own: a paragraph, not a heading or list
        escaped = "\\" + escaped
    return escaped


def markdown_code(text: str) -> str:
    """Incident text as one inline code span (no Markdown, no autolinks inside), whatever it holds."""
    body = one_line(text) or " "
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(body)), default=0) + 1)
    if body.startswith("`") or body.endswith("`"):
        body = f" {body} "  # CommonMark strips one space each side, so the content stays exact
    return f"{fence}{body}{fence}"

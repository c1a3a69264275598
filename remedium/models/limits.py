"""Input limits: what an incident may store of its alert, and which ids and names it accepts.

An alert is copied into many places Temporal keeps: the workflow's start event, the input of
every diagnostic, decision, verification and report activity, the first audit entry, the
`status` query. Temporal refuses a payload over 2 MB and a gRPC message over 4 MB, and ends a
run whose history passes 50 MB, so an alert of a few hundred kB that the ingress accepted could
later be lost with no escalation and no report. Everything an alert carries is therefore cut
here, at the ingress, to a size that stays far below those limits however often it is copied:

- the title to TITLE_MAX_BYTES, each label value to LABEL_VALUE_MAX_BYTES, each annotation
  value to ANNOTATION_VALUE_MAX_BYTES, each with a visible marker
  (`…[truncated 523,412 bytes]`) in the stored value;
- at most MAX_LABELS labels and MAX_ANNOTATIONS annotations, names of at most NAME_MAX_BYTES,
  and all of them together at most ENTRIES_MAX_BYTES as JSON (the names the engine reads,
  such as `alertname`, `service` and `summary`, are kept first);
- a URL over URL_MAX_BYTES is dropped: a cut link points nowhere.

What was cut is listed in `Alert.truncated`, which the workflow puts in the audit trail.
Sizes are UTF-8 bytes of the value, the way Temporal counts them; the whole-alert budget is
counted on the JSON form, so escapes (a NUL is six bytes of JSON) cannot smuggle size past it.

Ids and the values that become search attributes or workflow ids are not cut but refused
(HTTP 400 naming the field): a cut id would be another incident, and a cut service name would
file the incident under a service that does not exist. `id_problem` and `keyword_problem` say
what is wrong, or None. Pure functions only: nothing here does I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from remedium.models.alert import Alert, ExternalUpdate

TITLE_MAX_BYTES = 1024
LABEL_VALUE_MAX_BYTES = 1024
ANNOTATION_VALUE_MAX_BYTES = 4096
NAME_MAX_BYTES = 128
MAX_LABELS = 64
MAX_ANNOTATIONS = 32
ENTRIES_MAX_BYTES = 24 * 1024  # labels and annotations together, as JSON
URL_MAX_BYTES = 2048
UPDATE_BY_MAX_BYTES = 256
UPDATE_NOTE_MAX_BYTES = 4096
TRUNCATED_MAX_ENTRIES = 20  # the list of what was cut is bounded too

# Search attributes (Keyword) may hold 2 KB per value on a default Temporal server; these stay
# well below it whatever the characters (255 characters are at most 1020 bytes of UTF-8).
SERVICE_MAX_CHARS = 255  # PagerDuty's own limit on a service name
SEVERITY_MAX_CHARS = 64

# PagerDuty object ids are letters and digits (PGR0VU2, Q0RIJJZL24RC6W); Alertmanager
# fingerprints are 16 hex digits (be0b3a6d0e07ce1d). Both become workflow ids and URL paths.
ID_MAX_CHARS = 64
PAGERDUTY_ID = re.compile(r"[A-Za-z0-9]{1,64}")
FINGERPRINT = re.compile(r"[0-9a-fA-F]{1,64}")
PAGERDUTY_ID_RULE = f"not a PagerDuty incident id (letters and digits, at most {ID_MAX_CHARS})"
FINGERPRINT_RULE = f"not an Alertmanager fingerprint (hex digits, at most {ID_MAX_CHARS})"

# Deeper JSON is refused before it is parsed. PagerDuty V3 events nest about 5 deep,
# Alertmanager's webhook 4, Slack's block_actions payload about 10 (rich-text blocks).
MAX_JSON_DEPTH = 32

# Names the engine and the shipped runbooks read: kept first when entries must go.
LABELS_FIRST = ("alertname", "severity", "service", "app", "job", "namespace", "pod", "deployment")
ANNOTATIONS_FIRST = ("summary", "description", "runbook_url", "base_url")


def marker(cut: int) -> str:
    """What replaces the end of a cut value: says it was cut and by how much."""
    return f"…[truncated {cut:,} bytes]"


def utf8_size(text: str) -> int:
    return len(text.encode("utf-8", errors="surrogatepass"))


def bound_text(text: str, limit: int) -> tuple[str, int]:
    """`text` cut to at most `limit` UTF-8 bytes with a marker at the end, and how many bytes went.

    Cut on a character boundary; an already bounded text comes back unchanged (idempotent).
    """
    raw = text.encode("utf-8", errors="surrogatepass")
    if len(raw) <= limit:
        return text, 0
    keep = max(limit - len(marker(len(raw)).encode()), 0)
    head = raw[:keep].decode("utf-8", errors="ignore")  # drops a character cut in half
    cut = len(raw) - utf8_size(head)
    return head + marker(cut), cut


def id_problem(value: str, pattern: re.Pattern[str], rule: str) -> str | None:
    """Why `value` cannot be an incident id (it becomes a workflow id and a URL path), or None."""
    return None if pattern.fullmatch(value) else rule


def keyword_problem(value: str, max_chars: int, what: str) -> str | None:
    """Why `value` cannot be stored as a search attribute, or None."""
    if len(value) > max_chars:
        return f"longer than {max_chars} characters ({len(value):,}); it becomes the {what} search attribute"
    return None


def _json_size(key: str, value: str) -> int:
    return len(json.dumps(key, ensure_ascii=False).encode()) + len(
        json.dumps(value, ensure_ascii=False).encode()
    )


def _ordered(entries: Mapping[str, str], first: Iterable[str]) -> list[tuple[str, str]]:
    preferred = [(name, entries[name]) for name in first if name in entries]
    chosen = {name for name, _ in preferred}
    return preferred + [(k, v) for k, v in entries.items() if k not in chosen]


def _bound_entries(
    what: str, entries: Mapping[str, str], first: Iterable[str], value_max: int, max_count: int, budget: int
) -> tuple[dict[str, str], int, list[str]]:
    """Cut each value, then keep what fits in count and budget; the kept entries and the notes."""
    kept: dict[str, str] = {}
    notes: list[str] = []
    cut_values: list[str] = []
    long_names = over_count = over_budget = 0
    used = 0
    for name, value in _ordered(entries, first):
        if utf8_size(name) > NAME_MAX_BYTES:
            long_names += 1
            continue
        if len(kept) >= max_count:
            over_count += 1
            continue
        stored, cut = bound_text(value, value_max)
        size = _json_size(name, stored)
        if used + size > budget:
            over_budget += 1
            continue
        kept[name] = stored
        used += size
        if cut:
            cut_values.append(f"{what}.{name[:64]}: {cut:,} bytes cut (at most {value_max:,})")
    notes.extend(cut_values)
    if long_names:
        notes.append(f"{what}: {long_names:,} with a name over {NAME_MAX_BYTES} bytes dropped")
    if over_count:
        notes.append(f"{what}: {over_count:,} of {len(entries):,} dropped (at most {max_count} kept)")
    if over_budget:
        notes.append(
            f"{what}: {over_budget:,} dropped to keep labels and annotations "
            f"within {ENTRIES_MAX_BYTES:,} bytes"
        )
    return kept, used, notes


def bound_alert(alert: Alert) -> Alert:
    """The alert as the incident stores it: every part within its limit, `truncated` saying what went.

    Idempotent: a bounded alert comes back equal, its `truncated` list kept.
    """
    notes: list[str] = []
    title, cut = bound_text(alert.title, TITLE_MAX_BYTES)
    if cut:
        notes.append(f"title: {cut:,} bytes cut (at most {TITLE_MAX_BYTES:,})")
    labels, used, label_notes = _bound_entries(
        "labels", alert.labels, LABELS_FIRST, LABEL_VALUE_MAX_BYTES, MAX_LABELS, ENTRIES_MAX_BYTES
    )
    annotations, _, annotation_notes = _bound_entries(
        "annotations",
        alert.annotations,
        ANNOTATIONS_FIRST,
        ANNOTATION_VALUE_MAX_BYTES,
        MAX_ANNOTATIONS,
        ENTRIES_MAX_BYTES - used,
    )
    notes += label_notes + annotation_notes
    url = alert.url
    if url is not None and utf8_size(url) > URL_MAX_BYTES:
        notes.append(f"url: dropped ({utf8_size(url):,} bytes, at most {URL_MAX_BYTES:,})")
        url = None
    if not notes:
        return alert
    truncated = list(alert.truncated) + notes
    if len(truncated) > TRUNCATED_MAX_ENTRIES:
        more = len(truncated) - (TRUNCATED_MAX_ENTRIES - 1)
        truncated = [*truncated[: TRUNCATED_MAX_ENTRIES - 1], f"and {more:,} more value(s) cut"]
    return alert.model_copy(
        update={
            "title": title,
            "labels": labels,
            "annotations": annotations,
            "url": url,
            "truncated": truncated,
        }
    )


def bound_update(update: ExternalUpdate) -> ExternalUpdate:
    """A lifecycle event within limits: who (the audit's actor) and the note, each with a marker."""
    by, _ = bound_text(update.by, UPDATE_BY_MAX_BYTES)
    note, _ = bound_text(update.note, UPDATE_NOTE_MAX_BYTES)
    if (by, note) == (update.by, update.note):
        return update
    return update.model_copy(update={"by": by, "note": note})


# A JSON string, or an unterminated one running to the end (so no quote is scanned twice).
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(body: bytes, stop_above: int | None = None) -> int:
    """How deep the arrays and objects of a JSON text nest, read without parsing it.

    Python's parser recurses once per level and fails past about a thousand; this scan is
    linear and never recurses, so it can refuse a deep body before the parser sees it. With
    `stop_above` it returns as soon as the depth passes that.
    """
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    break
        else:
            depth -= 1
    return deepest


def depth_problem(body: bytes | str, limit: int = MAX_JSON_DEPTH) -> str | None:
    """`JSON nested deeper than N` for a text over the limit, else None."""
    raw = body.encode("utf-8", errors="surrogatepass") if isinstance(body, str) else body
    return f"JSON nested deeper than {limit}" if json_depth(raw, stop_above=limit) > limit else None

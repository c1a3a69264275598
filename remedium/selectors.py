"""Kubernetes label selectors (`a=b,c!=d,e in (x,y),!f,g`), for guardrails that run outside the API server."""

from __future__ import annotations

import re

from remedium.errors import SelectorError

_REQUIREMENT = re.compile(
    r"^\s*(?:(?P<not>!)\s*(?P<nkey>[\w./-]+)"
    r"|(?P<key>[\w./-]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[\w.-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?)\s*$"
)


def _split(selector: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def _parse(selector: str) -> list[re.Match[str]]:
    requirements = []
    for part in _split(selector):
        m = _REQUIREMENT.match(part)
        if m is None:
            raise SelectorError(f"invalid label selector requirement {part.strip()!r}")
        requirements.append(m)
    return requirements


def _holds(m: re.Match[str], labels: dict[str, str]) -> bool:
    if m["not"]:
        return m["nkey"] not in labels
    key, present = m["key"], m["key"] in labels
    if m["op"] in ("=", "=="):
        return labels.get(key) == m["value"]
    if m["op"] == "!=":
        return not (present and labels[key] == m["value"])
    if m["setop"]:
        values = {v.strip() for v in m["values"].split(",") if v.strip()}
        if m["setop"] == "in":
            return labels.get(key) in values
        return not (present and labels[key] in values)
    return present


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics: every requirement must hold."""
    return all(_holds(m, labels) for m in _parse(selector))


def check_selector(selector: str) -> str:
    """Validate a selector's syntax (for the policy loader); returns it unchanged."""
    _parse(selector)
    return selector

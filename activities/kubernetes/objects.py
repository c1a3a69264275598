"""Small readers over apiserver JSON, and the annotations that make remediation steps idempotent.

A step records its idempotency key (`<incident>/<step>`) on the object it changes, in the
same write as the change where the API allows it, plus a little JSON state for rebuilding
its checkpoint; a retried or replayed step that finds its own key there does nothing.
"""

from __future__ import annotations

import copy
import difflib
import json
from typing import Any

import yaml

LAST_STEP = "remedium.io/last-step"
LAST_STEP_STATE = "remedium.io/last-step-state"
RERUN_OF = "remedium.io/rerun-of"


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    value = obj.get("metadata")
    return value if isinstance(value, dict) else {}


def annotations_of(obj: dict[str, Any]) -> dict[str, str]:
    return dict(meta(obj).get("annotations") or {})


def labels_of(obj: dict[str, Any]) -> dict[str, str]:
    return dict(meta(obj).get("labels") or {})


def marker(key: str, state: dict[str, Any] | None = None) -> dict[str, str]:
    """The annotations a step writes: its key and (optionally) compact JSON state."""
    values = {LAST_STEP: key}
    if state is not None:
        values[LAST_STEP_STATE] = json.dumps(state, sort_keys=True, separators=(",", ":"))
    return values


def recorded(obj: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The state a step with this key recorded on the object, or None if that step never ran here."""
    values = annotations_of(obj)
    if values.get(LAST_STEP) != key:
        return None
    try:
        state = json.loads(values.get(LAST_STEP_STATE) or "{}")
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


def selector_string(selector: dict[str, Any] | None) -> str:
    """A LabelSelector (matchLabels + matchExpressions) in the query syntax `labelSelector=` takes."""
    selector = selector or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def without(obj: dict[str, Any], *paths: str) -> dict[str, Any]:
    """A deep copy with the dotted paths removed (missing ones ignored)."""
    result = copy.deepcopy(obj)
    for path in paths:
        *parents, last = path.split(".")
        node: Any = result
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return result


def dump(value: Any) -> str:
    if value is None or value == {}:
        return ""
    return yaml.safe_dump(value, sort_keys=True, default_flow_style=False)


def yaml_diff(before: Any, after: Any, what: str) -> str:
    """Unified diff of two YAML renderings; empty when they are equal."""
    lines = difflib.unified_diff(
        dump(before).splitlines(keepends=True),
        dump(after).splitlines(keepends=True),
        fromfile=f"{what} (current)",
        tofile=f"{what} (after)",
    )
    return "".join(lines)

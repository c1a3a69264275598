"""`labelSelector` and `fieldSelector` on list requests, with the apiserver's per-kind field whitelist."""

from __future__ import annotations

import re
from typing import Any

from remedium.demo.sandbox.kubernetes.errors import bad_request
from remedium.errors import SelectorError
from remedium.selectors import selector_matches

_COMMON = ("metadata.name", "metadata.namespace")
FIELDS = {
    "Pod": (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "Event": (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "Job": ("status.successful",),
    "ReplicaSet": ("status.replicas",),
}
_TERM = re.compile(r"^\s*(?P<field>[\w.]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^,]*?)\s*$")


def parse_fields(kind: str, selector: str) -> list[tuple[str, bool, str]]:
    terms = []
    for part in filter(str.strip, selector.split(",")):
        m = _TERM.match(part)
        if m is None:
            raise bad_request(f"invalid field selector: {selector!r}: invalid selector: '{part}'")
        if m["field"] not in _COMMON + FIELDS.get(kind, ()):
            raise bad_request(f"field label not supported: {m['field']}")
        terms.append((m["field"], m["op"] != "!=", m["value"]))
    return terms


def _field(obj: dict[str, Any], path: str) -> str:
    if path == "source":
        return str((obj.get("source") or {}).get("component", ""))
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if path == "status.successful":
        node = (obj.get("status") or {}).get("succeeded", 0)
    return "" if node is None else str(node)


def matches(obj: dict[str, Any], labels: str, fields: list[tuple[str, bool, str]]) -> bool:
    if labels:
        try:
            if not selector_matches(labels, (obj.get("metadata") or {}).get("labels") or {}):
                return False
        except SelectorError as exc:
            raise bad_request(f"unable to parse requirement: {exc}") from None
    return all((_field(obj, field) == value) == equal for field, equal, value in fields)

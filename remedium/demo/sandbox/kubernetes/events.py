"""core/v1 Events as the controllers and the kubelet record them, aggregated by (object, reason, message)."""

from __future__ import annotations

import secrets
from typing import Any

from remedium.demo.sandbox.kubernetes import kinds
from remedium.demo.sandbox.kubernetes.store import Store, now

EVENT = kinds.BY_PATH[("", "v1", "events")]


def record(
    store: Store,
    involved: dict[str, Any],
    reason: str,
    message: str,
    type_: str = "Normal",
    component: str = "kubelet",
    field_path: str = "",
) -> None:
    meta = involved["metadata"]
    namespace = meta["namespace"]
    stamp = now()
    for event in store.objects(EVENT, namespace):
        ref = event["involvedObject"]
        if ref.get("uid") == meta["uid"] and event["reason"] == reason and event["message"] == message:
            event["count"] = int(event.get("count", 1)) + 1
            event["lastTimestamp"] = stamp
            store.write(event)
            return
    ref = {
        "kind": involved["kind"],
        "namespace": namespace,
        "name": meta["name"],
        "uid": meta["uid"],
        "apiVersion": involved["apiVersion"],
        "resourceVersion": meta.get("resourceVersion", ""),
    }
    if field_path:
        ref["fieldPath"] = field_path
    source: dict[str, Any] = {"component": component}
    if component == "kubelet":
        source["host"] = "sandbox-node-1"
    store.create(
        EVENT,
        namespace,
        {
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}"},
            "involvedObject": ref,
            "reason": reason,
            "message": message,
            "source": source,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "type": type_,
            "eventTime": None,
            "reportingComponent": component,
            "reportingInstance": "sandbox-node-1" if component == "kubelet" else "",
        },
        seed=True,
    )

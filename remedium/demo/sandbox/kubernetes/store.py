"""The object store and the apiserver's write path: resourceVersion, uid, generation, dry-run, conflicts.

Every verb returns a deep copy, so a caller can never mutate stored state by accident; the
controller, which runs under the same lock, writes through `write`/`remove`, which skip
validation just as controllers' status writes skip the user-facing rules.
"""

from __future__ import annotations

import copy
import random
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from remedium.demo.sandbox.kubernetes import kinds, selection
from remedium.demo.sandbox.kubernetes.errors import (
    ApiError,
    FieldError,
    already_exists,
    bad_request,
    conflict,
    invalid,
    not_found,
)
from remedium.demo.sandbox.kubernetes.kinds import Kind
from remedium.demo.sandbox.kubernetes.patches import apply_patch

_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"
_RESET_STATUS_ON_CREATE = {"Deployment", "ReplicaSet", "Job", "CronJob"}


def now(offset: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(length: int = 5) -> str:
    return "".join(random.choice(_SUFFIX) for _ in range(length))


def selector_string(selector: dict[str, Any] | None) -> str:
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), ",".join(sorted(expr.get("values") or []))
        parts.append(
            {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": str(key)}.get(
                str(op), f"!{key}"
            )
        )
    return ",".join(parts)


class Store:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._rv = 100
        self.namespaces: set[str] = {"default", "kube-system", "kube-public"}

    # ------------------------------------------------------------ internals

    @staticmethod
    def _key(kind: Kind, namespace: str, name: str) -> tuple[str, str, str]:
        return (f"{kind.plural}.{kind.group}", namespace, name)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def find(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object itself (controller use, under the lock)."""
        return self._objects.get(self._key(kind, namespace, name))

    def objects(self, kind: Kind, namespace: str | None = None) -> list[dict[str, Any]]:
        prefix = f"{kind.plural}.{kind.group}"
        found = [
            obj
            for (k, ns, _), obj in self._objects.items()
            if k == prefix and (namespace is None or ns == namespace)
        ]
        return sorted(found, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))

    def by_uid(self, uid: str) -> dict[str, Any] | None:
        return next((o for o in self._objects.values() if o["metadata"].get("uid") == uid), None)

    def all_objects(self) -> list[dict[str, Any]]:
        return list(self._objects.values())

    def write(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a controller-made change (status, annotations) with a new resourceVersion."""
        kind = kinds.lookup(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        meta["resourceVersion"] = self._next_rv()
        self._objects[self._key(kind, meta["namespace"], meta["name"])] = obj
        return obj

    def remove(self, obj: dict[str, Any]) -> None:
        kind = kinds.lookup(obj["apiVersion"], obj["kind"])
        self._objects.pop(self._key(kind, obj["metadata"]["namespace"], obj["metadata"]["name"]), None)
        self._rv += 1

    def _require(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        obj = self.find(kind, namespace, name)
        if obj is None:
            raise not_found(kind.group, kind.plural, name)
        return obj

    # --------------------------------------------------------------- verbs

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self._require(kind, namespace, name))

    def list_objects(
        self, kind: Kind, namespace: str | None, label_selector: str = "", field_selector: str = ""
    ) -> dict[str, Any]:
        fields = selection.parse_fields(kind.kind, field_selector)
        with self.lock:
            items = []
            for obj in self.objects(kind, namespace):
                if selection.matches(obj, label_selector, fields):
                    item = copy.deepcopy(obj)
                    item.pop("apiVersion", None)  # list items come without apiVersion/kind
                    item.pop("kind", None)
                    items.append(item)
            return {
                "kind": f"{kind.kind}List",
                "apiVersion": kind.api_version,
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }

    def create(
        self, kind: Kind, namespace: str, body: Any, dry_run: bool = False, seed: bool = False
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request(f"the body of the request could not be decoded as a {kind.kind}")
        obj = copy.deepcopy(body)
        if obj.get("apiVersion") not in (None, kind.api_version):
            raise bad_request(
                f"the API version in the data ({obj['apiVersion']}) does not match the expected API version "
                f"({kind.api_version})"
            )
        if obj.get("kind") not in (None, kind.kind):
            raise bad_request(
                f"the kind in the data ({obj['kind']}) does not match the expected kind ({kind.kind})"
            )
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if meta.get("namespace") not in (None, "", namespace):
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        with self.lock:
            name = meta.get("name")
            if not name and meta.get("generateName"):
                name = f"{meta['generateName']}{random_suffix()}"
            if not name:
                raise invalid(
                    kind.group,
                    kind.kind,
                    "",
                    [FieldError.required("metadata.name", "name or generateName is required")],
                )
            existing = self.find(kind, namespace, name)
            if existing is not None and not seed:
                raise already_exists(kind.group, kind.plural, name)
            result: dict[str, Any] = {"apiVersion": kind.api_version, "kind": kind.kind, **obj}
            result["apiVersion"], result["kind"] = kind.api_version, kind.kind
            meta = result["metadata"]
            meta.update(name=name, namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=now())
            for field in (
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "managedFields",
            ):
                meta.pop(field, None)
            if existing is not None:  # seeding over an object keeps its identity
                meta.update(
                    uid=existing["metadata"]["uid"],
                    creationTimestamp=existing["metadata"]["creationTimestamp"],
                )
            if kind.generation:
                meta["generation"] = 1
            if kind.kind in _RESET_STATUS_ON_CREATE and not (seed and result.get("status")):
                result["status"] = {}
            kinds.apply_defaults(kind, result)
            generated = kinds.generate_job_selector(result) if kind.kind == "Job" else False
            kinds.validate(kind, result, None, generated)
            if dry_run:
                return copy.deepcopy(result)
            self.namespaces.add(namespace)
            return copy.deepcopy(self.write(result))

    def replace(
        self, kind: Kind, namespace: str, name: str, body: Any, dry_run: bool = False, subresource: str = ""
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request(f"the body of the request could not be decoded as a {kind.kind}")
        with self.lock:
            old = self._require(kind, namespace, name)
            return self._update(kind, old, copy.deepcopy(body), dry_run, subresource)

    def patch(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        content_type: str,
        patch: Any,
        dry_run: bool = False,
        subresource: str = "",
    ) -> dict[str, Any]:
        with self.lock:
            old = self._require(kind, namespace, name)
            patched = apply_patch(content_type, old, patch)
            if not isinstance(patched, dict):
                raise bad_request("the patch turned the object into a non-object")
            meta: dict[str, Any] = patched["metadata"] if isinstance(patched.get("metadata"), dict) else {}
            if meta.get("name") not in (None, name):
                raise bad_request(f"metadata.name: Invalid value: {meta.get('name')!r}: field is immutable")
            return self._update(kind, old, patched, dry_run, subresource)

    def _update(
        self, kind: Kind, old: dict[str, Any], new: dict[str, Any], dry_run: bool, subresource: str
    ) -> dict[str, Any]:
        name, namespace = old["metadata"]["name"], old["metadata"]["namespace"]
        meta = new.get("metadata")
        if meta is None:
            meta = new["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if meta.get("name") not in (None, "", name):
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        if meta.get("namespace") not in (None, "", namespace):
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        rv = meta.get("resourceVersion")
        if rv not in (None, "") and rv != old["metadata"]["resourceVersion"]:
            raise conflict(kind.group, kind.plural, name)
        if subresource == "status":
            result = copy.deepcopy(old)
            result["status"] = copy.deepcopy(new.get("status") or {})
        else:
            result = new
            if "status" in old:
                result["status"] = copy.deepcopy(old["status"])
            else:
                result.pop("status", None)
        result["apiVersion"], result["kind"] = kind.api_version, kind.kind
        kept = ("name", "namespace", "uid", "creationTimestamp", "generation", "deletionTimestamp")
        for field in (*kept, "deletionGracePeriodSeconds"):
            if field in old["metadata"]:
                result["metadata"][field] = old["metadata"][field]
            else:
                result["metadata"].pop(field, None)
        result["metadata"].pop("managedFields", None)
        kinds.apply_defaults(kind, result)
        if subresource != "status":
            kinds.validate(kind, result, old)
        if kind.generation and _spec_changed(kind, old, result):
            result["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        result["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if dry_run:
            return copy.deepcopy(result)
        if result["metadata"].get("deletionTimestamp") and not result["metadata"].get("finalizers"):
            self.remove(result)
            return copy.deepcopy(result)
        return copy.deepcopy(self.write(result))

    def delete(
        self, kind: Kind, namespace: str, name: str, options: dict[str, Any], dry_run: bool = False
    ) -> dict[str, Any]:
        with self.lock:
            obj = self._require(kind, namespace, name)
            meta = obj["metadata"]
            pre = options.get("preconditions") or {}
            for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                if pre.get(field) and pre[field] != meta.get(field):
                    raise conflict(
                        kind.group,
                        kind.plural,
                        name,
                        f"Precondition failed: {label} in precondition: {pre[field]}, "
                        f"{label} in object meta: {meta.get(field)}",
                    )
            policy = options.get("propagationPolicy")
            if policy is None and options.get("orphanDependents") is not None:
                policy = "Orphan" if options["orphanDependents"] else "Background"
            if policy is None:
                policy = "Orphan" if kind.kind == "Job" else "Background"  # batch/v1 Jobs orphan by default
            if policy not in ("Orphan", "Background", "Foreground"):
                raise invalid(
                    "meta.k8s.io",
                    "DeleteOptions",
                    "",
                    [
                        FieldError.not_supported(
                            "propagationPolicy", policy, ["Foreground", "Background", "Orphan"]
                        )
                    ],
                )
            result = copy.deepcopy(obj)
            if meta.get("deletionTimestamp"):
                return result
            grace = options.get("gracePeriodSeconds")
            if kind.kind == "Pod":
                if grace is None:
                    grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
                finished = (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed")
                if int(grace) > 0 and not finished and (obj.get("spec") or {}).get("nodeName"):
                    result["metadata"]["deletionTimestamp"] = now(float(grace))
                    result["metadata"]["deletionGracePeriodSeconds"] = int(grace)
                    return result if dry_run else copy.deepcopy(self.write(result))
                if not dry_run:
                    self.remove(obj)
                return result
            if dry_run:
                return _success(kind, obj)
            if policy == "Orphan":
                self._orphan(meta["uid"])
            if policy == "Foreground":
                finalizers = meta.setdefault("finalizers", [])
                if "foregroundDeletion" not in finalizers:
                    finalizers.append("foregroundDeletion")
            if meta.get("finalizers"):
                meta["deletionTimestamp"] = now()
                meta["deletionGracePeriodSeconds"] = 0
                return copy.deepcopy(self.write(obj))
            self.remove(obj)
            return _success(kind, obj)

    def _orphan(self, owner_uid: str) -> None:
        for other in self.all_objects():
            refs = other["metadata"].get("ownerReferences") or []
            kept = [r for r in refs if r.get("uid") != owner_uid]
            if len(kept) != len(refs):
                if kept:
                    other["metadata"]["ownerReferences"] = kept
                else:
                    other["metadata"].pop("ownerReferences", None)
                self.write(other)

    # --------------------------------------------------------------- scale

    def get_scale(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            return scale_of(self._require(kind, namespace, name))

    def update_scale(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        scale: Any,
        dry_run: bool = False,
        content_type: str = "",
    ) -> dict[str, Any]:
        with self.lock:
            obj = self._require(kind, namespace, name)
            if content_type:
                scale = apply_patch(content_type, scale_of(obj), scale)
            if not isinstance(scale, dict):
                raise bad_request("the body of the request could not be decoded as a Scale")
            rv = (scale.get("metadata") or {}).get("resourceVersion")
            if rv not in (None, "") and rv != obj["metadata"]["resourceVersion"]:
                raise conflict(kind.group, kind.plural, name)
            replicas = (scale.get("spec") or {}).get("replicas", 0)
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise invalid(
                    "autoscaling",
                    "Scale",
                    name,
                    [FieldError.invalid("spec.replicas", replicas, "must be greater than or equal to 0")],
                )
            updated = copy.deepcopy(obj)
            updated["spec"]["replicas"] = replicas
            return scale_of(self._update(kind, obj, updated, dry_run, ""))


def scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": selector_string((obj.get("spec") or {}).get("selector")),
        },
    }


def _spec_changed(kind: Kind, old: dict[str, Any], new: dict[str, Any]) -> bool:
    if old.get("spec") != new.get("spec"):
        return True
    # annotations are copied to ReplicaSets, so a Deployment's annotation change is a new generation
    return kind.kind == "Deployment" and old["metadata"].get("annotations") != new["metadata"].get(
        "annotations"
    )


def _success(kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
    details: dict[str, Any] = {"name": obj["metadata"]["name"]}
    if kind.group:
        details["group"] = kind.group
    details.update(kind=kind.plural, uid=obj["metadata"]["uid"])
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


def check_dry_run(values: list[str]) -> bool:
    for value in values:
        if value != "All":
            raise ApiError(400, f'Invalid dryRun value: "{value}". Supported values: "All"', "BadRequest")
    return bool(values)

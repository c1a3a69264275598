"""The resource types the sandbox serves, with the apiserver's defaulting and validation for each.

Defaults matter because clients compare what they sent with what they read back (the
rollback path compares pod templates), and validation matters because real mistakes must
fail here as they would on a cluster: a Job with a copied selector, a Deployment whose
selector does not match its template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from remedium.demo.sandbox.kubernetes.errors import FieldError, invalid

CONTROLLER_UID = "controller-uid"
BATCH_CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "job-name"
BATCH_JOB_NAME = "batch.kubernetes.io/job-name"
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SUBDOMAIN_TEXT = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    subresources: tuple[str, ...] = ()
    generation: bool = True
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def verbs(self) -> list[str]:
        return ["create", "delete", "deletecollection", "get", "list", "patch", "update"]


KINDS = (
    Kind("apps", "v1", "deployments", "Deployment", ("scale", "status"), short_names=("deploy",)),
    Kind("apps", "v1", "replicasets", "ReplicaSet", ("scale", "status"), short_names=("rs",)),
    # Stored and served (get, patch, scale) but not reconciled: for the RBAC proof of the actions
    # that read, annotate or scale them (tests/test_deploy.py).
    Kind("apps", "v1", "statefulsets", "StatefulSet", ("scale", "status"), short_names=("sts",)),
    Kind("apps", "v1", "daemonsets", "DaemonSet", ("status",), short_names=("ds",)),
    Kind("", "v1", "pods", "Pod", ("log", "status"), generation=False, short_names=("po",)),
    Kind("", "v1", "configmaps", "ConfigMap", (), generation=False, short_names=("cm",)),
    Kind("", "v1", "events", "Event", (), generation=False, short_names=("ev",)),
    Kind("batch", "v1", "jobs", "Job", ("status",)),
    Kind("batch", "v1", "cronjobs", "CronJob", ("status",), short_names=("cj",)),
)
BY_PATH = {(k.group, k.version, k.plural): k for k in KINDS}
BY_KIND = {(k.api_version, k.kind): k for k in KINDS}


def lookup(api_version: str, kind: str) -> Kind:
    try:
        return BY_KIND[(api_version, kind)]
    except KeyError:
        raise ValueError(f"the sandbox does not serve {api_version} {kind}") from None


# ----------------------------------------------------------------- defaults


def _default_container(container: dict[str, Any]) -> None:
    image = str(container.get("image", ""))
    tag = image.rsplit("/", 1)[-1]
    latest = "@" not in tag and (":" not in tag or tag.endswith(":latest"))
    container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    container.setdefault("resources", {})
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")


def default_pod_spec(spec: dict[str, Any], restart_policy: str = "Always") -> None:
    spec.setdefault("restartPolicy", restart_policy)
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for field in ("containers", "initContainers"):
        for container in spec.get(field) or []:
            if isinstance(container, dict):
                _default_container(container)


def _default_template(template: Any) -> None:
    if isinstance(template, dict):
        spec = template.setdefault("spec", {})
        if isinstance(spec, dict):
            default_pod_spec(spec)


def apply_defaults(kind: Kind, obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if kind.kind == "Deployment" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxUnavailable", "25%")
            rolling.setdefault("maxSurge", "25%")
        _default_template(spec.get("template"))
    elif kind.kind == "ReplicaSet" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        _default_template(spec.get("template"))
    elif kind.kind == "Pod" and isinstance(spec, dict):
        default_pod_spec(spec)
        obj.setdefault("status", {"phase": "Pending", "qosClass": "BestEffort"})
    elif kind.kind == "Job" and isinstance(spec, dict):
        _default_job_spec(spec)
    elif kind.kind == "CronJob" and isinstance(spec, dict):
        spec.setdefault("concurrencyPolicy", "Allow")
        spec.setdefault("suspend", False)
        spec.setdefault("successfulJobsHistoryLimit", 3)
        spec.setdefault("failedJobsHistoryLimit", 1)
        job_spec = (spec.get("jobTemplate") or {}).get("spec")
        if isinstance(job_spec, dict):
            _default_job_spec(job_spec)


def _default_job_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("parallelism", 1)
    spec.setdefault("completions", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        # no restartPolicy default that validation would accept: a Pod's default (Always) is refused
        default_pod_spec(template["spec"])


def generate_job_selector(obj: dict[str, Any]) -> bool:
    """What the Job strategy does on create unless `manualSelector: true`: labels keyed by the uid."""
    spec = obj.get("spec")
    if not isinstance(spec, dict) or spec.get("manualSelector") is True:
        return False
    if spec.get("selector") is not None:
        return False  # left for validation to refuse: "`selector` not auto-generated"
    uid, name = obj["metadata"]["uid"], obj["metadata"]["name"]
    template = spec.setdefault("template", {})
    labels = template.setdefault("metadata", {}).setdefault("labels", {})
    for key, value in (
        (CONTROLLER_UID, uid),
        (BATCH_CONTROLLER_UID, uid),
        (JOB_NAME, name),
        (BATCH_JOB_NAME, name),
    ):
        labels.setdefault(key, value)  # copied labels are kept, and then fail validation
    spec["selector"] = {"matchLabels": {BATCH_CONTROLLER_UID: uid}}
    return True


# ----------------------------------------------------------------- validation


def _selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        present = key in labels
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def _containers(template: dict[str, Any], path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    containers = (template.get("spec") or {}).get("containers")
    if not containers:
        return [FieldError.required(f"{path}.spec.containers")]
    for i, container in enumerate(containers):
        if not isinstance(container, dict):
            errors.append(FieldError.invalid(f"{path}.spec.containers[{i}]", container, "must be an object"))
            continue
        if not container.get("name"):
            errors.append(FieldError.required(f"{path}.spec.containers[{i}].name"))
        if not container.get("image"):
            errors.append(FieldError.required(f"{path}.spec.containers[{i}].image"))
    return errors


def _workload(obj: dict[str, Any], spec: dict[str, Any], job: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    selector = spec.get("selector")
    template = spec.get("template")
    if not isinstance(template, dict):
        return [FieldError.required("spec.template")]
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not isinstance(selector, dict) or not (
        selector.get("matchLabels") or selector.get("matchExpressions")
    ):
        errors.append(FieldError.required("spec.selector"))
    elif not _selector_matches(selector, labels):
        errors.append(
            FieldError.invalid(
                "spec.template.metadata.labels", labels, "`selector` does not match template `labels`"
            )
        )
    if job:
        policy = (template.get("spec") or {}).get("restartPolicy")
        if policy not in ("OnFailure", "Never"):
            errors.append(
                FieldError.not_supported("spec.template.spec.restartPolicy", policy, ["OnFailure", "Never"])
            )
    errors.extend(_containers(template, "spec.template"))
    for field in ("replicas", "parallelism", "completions", "backoffLimit"):
        value = spec.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            errors.append(FieldError.invalid(f"spec.{field}", value, "must be greater than or equal to 0"))
    return errors


def validate(kind: Kind, obj: dict[str, Any], old: dict[str, Any] | None, generated: bool = False) -> None:
    """Raise 422 Invalid with every problem found, as the apiserver's validation does."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    errors: list[FieldError] = []
    if name and (len(name) > 253 or not _SUBDOMAIN.match(name)):
        errors.append(FieldError.invalid("metadata.name", name, _SUBDOMAIN_TEXT))
    for field in ("labels", "annotations"):
        values = meta.get(field)
        if values is not None and (
            not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values())
        ):
            errors.append(FieldError.invalid(f"metadata.{field}", values, "values must be strings"))
    spec = obj.get("spec")
    if kind.kind in ("Deployment", "ReplicaSet", "Job"):
        if not isinstance(spec, dict):
            errors.append(FieldError.required("spec"))
        else:
            errors.extend(_workload(obj, spec, job=kind.kind == "Job"))
            if kind.kind == "Job":
                errors.extend(_job_rules(spec, old, generated))
            elif old is not None and spec.get("selector") != (old.get("spec") or {}).get("selector"):
                errors.append(FieldError.invalid("spec.selector", spec.get("selector"), "field is immutable"))
    elif kind.kind == "Pod":
        if not isinstance(spec, dict):
            errors.append(FieldError.required("spec"))
        else:
            errors.extend(_containers({"spec": spec}, ""))
            errors = [FieldError(e.field.lstrip("."), e.reason, e.text) for e in errors]
    elif kind.kind == "CronJob":
        if not isinstance(spec, dict) or not spec.get("schedule"):
            errors.append(FieldError.required("spec.schedule"))
        if not isinstance(spec, dict) or not isinstance((spec.get("jobTemplate") or {}).get("spec"), dict):
            errors.append(FieldError.required("spec.jobTemplate.spec.template"))
    elif kind.kind == "ConfigMap":
        data = obj.get("data")
        if data is not None and (
            not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values())
        ):
            errors.append(FieldError.invalid("data", data, "values must be strings"))
    if errors:
        raise invalid(kind.group, kind.kind, name, errors)


def _job_rules(spec: dict[str, Any], old: dict[str, Any] | None, generated: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    if old is None and spec.get("manualSelector") is not True and not generated:
        errors.append(
            FieldError.invalid(
                "spec.selector",
                spec.get("selector"),
                "`selector` not auto-generated",
            )
        )
    if old is not None:
        old_spec = old.get("spec") or {}
        for field in ("template", "selector", "completions", "completionMode"):
            if spec.get(field) != old_spec.get(field):
                errors.append(FieldError.invalid(f"spec.{field}", spec.get(field), "field is immutable"))
    return errors

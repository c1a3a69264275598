"""Job manifests for re-running a failed Job and triggering a CronJob, and a Job's verdict.

A re-run copies the Job minus what the apiserver generated (selector, the controller-uid and
job-name labels, status, server metadata), because a copied selector is rejected. A manual
CronJob run is built as `kubectl create job --from=cronjob/<name>` builds it.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any, Literal

from activities.kubernetes.objects import LAST_STEP, RERUN_OF, meta

GENERATED_LABELS = (
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "job-name",
    "batch.kubernetes.io/job-name",
)
SERVER_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration", "batch.kubernetes.io/job-tracking")
INSTANTIATE = "cronjob.kubernetes.io/instantiate"
MAX_NAME = 63  # Job names end up in the job-name label, a 63-character label value

JobState = Literal["succeeded", "failed", "running", "suspended"]


def short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def derived_name(base: str, infix: str, key: str) -> str:
    """`<base>-<infix>-<hash of key>`, with base shortened so the name stays a valid Job name."""
    suffix = f"-{infix}-{short_hash(key)}"
    return base[: MAX_NAME - len(suffix)].rstrip("-.") + suffix


def _strip(values: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (values or {}).items() if k not in GENERATED_LABELS}


def rerun_manifest(job: dict[str, Any], name: str, key: str) -> dict[str, Any]:
    source = meta(job)
    spec = copy.deepcopy(job.get("spec") or {})
    spec.pop("selector", None)
    spec.pop("manualSelector", None)
    template = spec.setdefault("template", {})
    template_meta = template.setdefault("metadata", {})
    template_meta["labels"] = _strip(template_meta.get("labels"))
    if not template_meta["labels"]:
        template_meta.pop("labels")
    notes = {k: v for k, v in (source.get("annotations") or {}).items() if k not in SERVER_ANNOTATIONS}
    notes.update({RERUN_OF: str(source.get("name")), LAST_STEP: key})
    metadata: dict[str, Any] = {"name": name, "annotations": notes}
    job_labels = _strip(source.get("labels"))
    if job_labels:
        metadata["labels"] = job_labels
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


def cronjob_manifest(cronjob: dict[str, Any], name: str) -> dict[str, Any]:
    template = (cronjob.get("spec") or {}).get("jobTemplate") or {}
    template_meta = template.get("metadata") or {}
    notes = {INSTANTIATE: "manual", **(template_meta.get("annotations") or {})}
    metadata: dict[str, Any] = {
        "annotations": notes,
        "labels": dict(template_meta.get("labels") or {}),
        "name": name,
        "ownerReferences": [
            {
                "apiVersion": "batch/v1",
                "controller": True,
                "kind": "CronJob",
                "name": meta(cronjob).get("name"),
                "uid": meta(cronjob).get("uid"),
            }
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": copy.deepcopy(template.get("spec") or {}),
    }


def condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for item in (job.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind and item.get("status") == "True":
            return dict(item)
    return None


def job_state(job: dict[str, Any]) -> tuple[JobState, str]:
    failed = condition(job, "Failed")
    if failed is not None:
        return "failed", f"{failed.get('reason') or 'Failed'}: {failed.get('message') or ''}".rstrip(": ")
    complete = condition(job, "Complete")
    if complete is not None:
        return "succeeded", "the Job completed"
    if (job.get("spec") or {}).get("suspend"):
        return "suspended", "the Job is suspended"
    status = job.get("status") or {}
    return "running", f"{status.get('active') or 0} active, {status.get('failed') or 0} failed pods so far"

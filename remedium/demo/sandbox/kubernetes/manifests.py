"""Manifest builders for seeding the sandbox (tests, the demo): the minimal objects a user would apply."""

from __future__ import annotations

from typing import Any


def deployment(
    namespace: str,
    name: str,
    replicas: int = 2,
    image: str = "registry.local/app:1.0",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    labels = labels or {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {"containers": [{"name": name, "image": image, "ports": [{"containerPort": 8080}]}]},
            },
        },
    }


def configmap(namespace: str, name: str, data: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": dict(data or {}),
    }


def _job_spec(name: str, image: str, labels: dict[str, str], backoff_limit: int) -> dict[str, Any]:
    return {
        "backoffLimit": backoff_limit,
        "template": {
            "metadata": {"labels": dict(labels)},
            "spec": {"containers": [{"name": name, "image": image}], "restartPolicy": "Never"},
        },
    }


def job(
    namespace: str,
    name: str,
    image: str = "registry.local/job:1.0",
    labels: dict[str, str] | None = None,
    backoff_limit: int = 2,
) -> dict[str, Any]:
    labels = labels or {"app": name}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": _job_spec(name, image, labels, backoff_limit),
    }


def cronjob(
    namespace: str,
    name: str,
    schedule: str = "0 2 * * *",
    image: str = "registry.local/job:1.0",
    labels: dict[str, str] | None = None,
    backoff_limit: int = 2,
) -> dict[str, Any]:
    labels = labels or {"app": name}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "schedule": schedule,
            "jobTemplate": {
                "metadata": {"labels": dict(labels)},
                "spec": _job_spec(name, image, labels, backoff_limit),
            },
        },
    }

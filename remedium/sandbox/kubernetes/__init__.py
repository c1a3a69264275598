"""A Kubernetes API server for tests and the demo, driven through the real `kubernetes` client."""

from remedium.sandbox.kubernetes.manifests import configmap, cronjob, deployment, job
from remedium.sandbox.kubernetes.sandbox import KubernetesSandbox
from remedium.sandbox.kubernetes.server import RecordedRequest

__all__ = ["KubernetesSandbox", "RecordedRequest", "configmap", "cronjob", "deployment", "job"]

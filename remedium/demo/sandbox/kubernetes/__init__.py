"""A Kubernetes API server for tests and the demo, driven through the real `kubernetes` client."""

from remedium.demo.sandbox.kubernetes.manifests import configmap, cronjob, deployment, job
from remedium.demo.sandbox.kubernetes.sandbox import KubernetesSandbox
from remedium.demo.sandbox.kubernetes.server import Access, RecordedRequest

__all__ = ["Access", "KubernetesSandbox", "RecordedRequest", "configmap", "cronjob", "deployment", "job"]

"""Fixtures for kubernetes tests: a started sandbox cluster and real `kubernetes` API clients bound to it."""

from __future__ import annotations

from collections.abc import Iterator

import kubernetes.client
import pytest

from remedium.demo.sandbox.kubernetes import KubernetesSandbox


@pytest.fixture
def kube_sandbox() -> Iterator[KubernetesSandbox]:
    """A fresh sandbox per test (fast tick so rollouts settle in well under a second)."""
    sandbox = KubernetesSandbox(tick=0.05).start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def kube_apps(kube_sandbox: KubernetesSandbox) -> kubernetes.client.AppsV1Api:
    return kubernetes.client.AppsV1Api(kube_sandbox.api_client())


@pytest.fixture
def kube_core(kube_sandbox: KubernetesSandbox) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(kube_sandbox.api_client())


@pytest.fixture
def kube_batch(kube_sandbox: KubernetesSandbox) -> kubernetes.client.BatchV1Api:
    return kubernetes.client.BatchV1Api(kube_sandbox.api_client())

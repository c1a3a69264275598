"""How Kubernetes actions reach the apiserver: the worker's settings, its client, and safe calls.

The cluster is found the way kubectl finds it (a kubeconfig and context when set, else the
in-cluster service account), so an operator's KUBECONFIG works unchanged. Every call returns
the apiserver's raw JSON (or text for logs), runs off the event loop and heartbeats while it
waits. Failures become Temporal `ApplicationError`s: what a retry cannot fix (404 target gone,
403 RBAC, 422/400 invalid, 401) is non-retryable and carries the apiserver's own Status
message; conflicts, 429, 5xx and connection errors are retryable so the workflow's backoff
applies.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

from remedium.catalog import Integration, IntegrationSettings, register_integration
from remedium.errors import ErrorType

log = logging.getLogger("remedium.kubernetes")

HEARTBEAT_EVERY_S = 2.0
REQUEST_TIMEOUT = (5.0, 30.0)  # connect, read: a hung apiserver must not hang the activity

NOT_CONFIGURED = (
    "Kubernetes is not configured: set KUBECONFIG (or REMEDIUM_KUBECONFIG, optionally "
    "REMEDIUM_KUBE_CONTEXT) for the worker, or run it in-cluster with a service account"
)

_NON_RETRYABLE = {
    400: ErrorType.KUBERNETES_BAD_REQUEST,
    401: ErrorType.KUBERNETES_UNAUTHORIZED,
    403: ErrorType.KUBERNETES_FORBIDDEN,
    404: ErrorType.KUBERNETES_NOT_FOUND,
    405: ErrorType.KUBERNETES_BAD_REQUEST,
    410: ErrorType.KUBERNETES_NOT_FOUND,
    422: ErrorType.KUBERNETES_INVALID,
}


class KubernetesSettings(IntegrationSettings):
    """A kubeconfig file (KUBECONFIG as kubectl reads it) and context, else in-cluster config."""

    model_config = SettingsConfigDict(env_prefix="REMEDIUM_KUBE_", extra="ignore", populate_by_name=True)

    kubeconfig: Path | None = Field(
        default=None, validation_alias=AliasChoices("REMEDIUM_KUBECONFIG", "KUBECONFIG")
    )
    context: str | None = Field(default=None, validation_alias=AliasChoices("REMEDIUM_KUBE_CONTEXT"))


def kubernetes_api_client(settings: KubernetesSettings) -> kubernetes.client.ApiClient | None:
    """Kubeconfig (file + context) when set, else in-cluster service account, else None.

    A kubeconfig that is named but unusable is an error (the operator asked for it);
    an absent in-cluster environment just means Kubernetes is not configured.
    """
    if settings.kubeconfig is not None or settings.context is not None:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(settings.kubeconfig) if settings.kubeconfig is not None else None,
            context=settings.context,
            client_configuration=configuration,
            persist_config=False,
        )
        log.info("kubernetes: kubeconfig %s, API server %s", settings.kubeconfig, configuration.host)
        return kubernetes.client.ApiClient(configuration)
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except ConfigException:
        return None
    log.info("kubernetes: in-cluster service account, API server %s", configuration.host)
    return kubernetes.client.ApiClient(configuration)


def _describe(settings: KubernetesSettings) -> str:
    if settings.kubeconfig is None and settings.context is None:
        return "in-cluster service account"
    context = f" (context {settings.context})" if settings.context else ""
    return f"kubeconfig {settings.kubeconfig or '~/.kube/config'}{context}"


KUBERNETES = register_integration(
    Integration(
        name="kubernetes", settings=KubernetesSettings, connect=kubernetes_api_client, describe=_describe
    )
)


def heartbeat(detail: str) -> None:
    if activity.in_activity():
        activity.heartbeat(detail)


def status_body(exc: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def api_error(exc: ApiException, what: str) -> ApplicationError:
    body = status_body(exc)
    code = int(exc.status or 0)
    message = str(body.get("message") or exc.reason or "").strip()
    reason = str(body.get("reason") or "")
    details = {"status": code, "reason": reason, "message": message}
    text = f"{what}: {code} {reason or exc.reason}: {message}"
    if code in _NON_RETRYABLE:
        return ApplicationError(text, details, type=_NON_RETRYABLE[code], non_retryable=True)
    kind = ErrorType.KUBERNETES_CONFLICT if code == 409 else ErrorType.KUBERNETES_UNAVAILABLE
    return ApplicationError(text, details, type=kind, non_retryable=False)


def reason_of(error: ApplicationError) -> tuple[int, str]:
    """(HTTP status, Status reason) of an error raised by `Kube.call`; (0, "") for others."""
    details = error.details[0] if error.details else None
    if isinstance(details, dict):
        return int(details.get("status") or 0), str(details.get("reason") or "")
    return 0, ""


class Kube:
    """Typed API groups over one ApiClient; `call` runs any of their methods the safe way."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api = api
        self.apps = kubernetes.client.AppsV1Api(api)
        self.core = kubernetes.client.CoreV1Api(api)
        self.batch = kubernetes.client.BatchV1Api(api)

    async def call(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `method(*args, **kwargs)` in a thread and return the parsed body (dict) or text."""

        def blocking() -> Any:
            response = method(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
            data: bytes = response.data
            text = data.decode("utf-8", errors="replace")
            if "json" in (response.headers.get("Content-Type") or ""):
                return json.loads(text) if text else {}
            return text

        task = asyncio.ensure_future(asyncio.to_thread(blocking))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY_S)
                if done:
                    return task.result()
                heartbeat(f"waiting for the apiserver: {what}")
        except ApiException as exc:
            raise api_error(exc, what) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApplicationError(
                f"{what}: Kubernetes API unreachable: {exc}",
                {"status": 0, "reason": "Unreachable", "message": str(exc)},
                type=ErrorType.KUBERNETES_UNREACHABLE,
                non_retryable=False,
            ) from None

"""One way to call the apiserver from an activity: off the event loop, heartbeating, errors mapped.

Every call returns the apiserver's raw JSON (or text for logs). Failures become Temporal
`ApplicationError`s: what a retry cannot fix (404 target gone, 403 RBAC, 422/400 invalid,
401) is non-retryable and carries the apiserver's own Status message; conflicts, 429,
5xx and connection errors are retryable so the workflow's backoff applies.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import kubernetes.client
import urllib3
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

HEARTBEAT_EVERY_S = 2.0
REQUEST_TIMEOUT = (5.0, 30.0)  # connect, read: a hung apiserver must not hang the activity

NOT_CONFIGURED = (
    "Kubernetes is not configured: set KUBECONFIG (or REMEDIUM_KUBECONFIG, optionally "
    "REMEDIUM_KUBE_CONTEXT) for the worker, or run it in-cluster with a service account"
)

_NON_RETRYABLE = {
    400: "KubernetesBadRequest",
    401: "KubernetesUnauthorized",
    403: "KubernetesForbidden",
    404: "KubernetesNotFound",
    405: "KubernetesBadRequest",
    410: "KubernetesNotFound",
    422: "KubernetesInvalid",
}


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
    kind = "KubernetesConflict" if code == 409 else "KubernetesUnavailable"
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
                type="KubernetesUnreachable",
                non_retryable=False,
            ) from None

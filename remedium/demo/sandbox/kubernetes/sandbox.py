"""`KubernetesSandbox`: the whole fake cluster (apiserver + controllers + kubelet) behind one object.

Tests and `remedium up --demo` start it, seed workloads with `apply`, choose how pods
behave per revision, and point the real `kubernetes` client at `url` (or at the kubeconfig
it writes). Nothing here needs a container runtime, so it starts in milliseconds.
"""

from __future__ import annotations

import copy
import errno
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import kubernetes.client
import yaml

from remedium.demo.sandbox.kubernetes import kinds
from remedium.demo.sandbox.kubernetes.controller import Controller
from remedium.demo.sandbox.kubernetes.errors import ApiError
from remedium.demo.sandbox.kubernetes.scenario import Scenario
from remedium.demo.sandbox.kubernetes.server import ApiServer, RecordedRequest
from remedium.demo.sandbox.kubernetes.store import Store


class KubernetesSandbox:
    def __init__(self, token: str = "sandbox-token", tick: float = 0.15) -> None:
        self.token = token
        self.store = Store()
        self.scenario = Scenario()
        self.controller = Controller(self.store, self.scenario, tick)
        self.server = ApiServer(self.store, self.controller, token)
        self._clients: list[Any] = []
        self._port = 0

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        self.server.bind(0)
        self._port = self.server.port
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
        self.server.unbind()
        for client in self._clients:
            client.close()
        self._clients.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def take_down(self) -> None:
        """The apiserver goes away (connections refused) and the cluster stands still until `bring_up`."""
        self.controller.pause()
        self.server.unbind()

    def bring_up(self) -> None:
        deadline = time.monotonic() + 5.0
        while True:
            try:
                self.server.bind(self._port)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.controller.resume()

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("the Kubernetes sandbox is not started")
        return f"http://127.0.0.1:{self._port}"

    # --------------------------------------------------------------- clients

    def configuration(self) -> kubernetes.client.Configuration:
        config = kubernetes.client.Configuration(
            host=self.url,
            api_key={"authorization": self.token},
            api_key_prefix={"authorization": "Bearer"},
        )
        config.retries = 0  # a down apiserver must surface as an error, not as urllib3 retrying
        return config

    def api_client(self) -> kubernetes.client.ApiClient:
        client = kubernetes.client.ApiClient(self.configuration())
        self._clients.append(client)
        return client

    def write_kubeconfig(self, path: Path, context: str = "remedium-sandbox") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": f"{context}-user", "user": {"token": self.token}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": f"{context}-user"}}],
            "current-context": context,
            "preferences": {},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # ------------------------------------------------------------------ state

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object as the apiserver would; a `status` given is kept (to seed history)."""
        kind = kinds.lookup(str(obj.get("apiVersion")), str(obj.get("kind")))
        namespace = (obj.get("metadata") or {}).get("namespace") or "default"
        name = str((obj.get("metadata") or {}).get("name") or "")
        with self.store.lock:
            existing = self.store.find(kind, namespace, name) if name else None
            if existing is None:
                return self.store.create(kind, namespace, obj, seed=True)
            body = copy.deepcopy(obj)
            body["metadata"].pop("resourceVersion", None)
            result = self.store.replace(kind, namespace, name, body)
            if obj.get("status"):
                result = self.store.replace(
                    kind, namespace, name, {**body, "status": obj["status"]}, subresource="status"
                )
            return result

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.store.get(kinds.lookup(api_version, kind), namespace, name)
        except ApiError:
            return None

    def list_objects(
        self, api_version: str, kind: str, namespace: str | None = None, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        listing = self.store.list_objects(kinds.lookup(api_version, kind), namespace, label_selector)
        return list(listing["items"])

    def events(self, namespace: str, involved_name: str | None = None) -> list[dict[str, Any]]:
        selector = f"involvedObject.name={involved_name}" if involved_name else ""
        return list(self.store.list_objects(kinds.lookup("v1", "Event"), namespace, "", selector)["items"])

    # --------------------------------------------------------------- scenario

    def set_pod_behaviour(
        self, namespace: str, deployment: str, behaviour: str, revision: int | None = None
    ) -> None:
        self.scenario.set_behaviour(namespace, deployment, behaviour, revision)

    def set_pod_logs(
        self, namespace: str, deployment: str, lines: list[str], revision: int | None = None
    ) -> None:
        """Log lines for the pods of a Deployment (or of a Job, by its name) for each container run."""
        self.scenario.set_logs(namespace, deployment, lines, revision)

    def set_job_outcome(self, namespace: str, job_name_prefix: str, outcome: str) -> None:
        self.scenario.set_outcome(namespace, job_name_prefix, outcome)

    def fail_next(
        self, method: str, path_pattern: str, status: int, count: int = 1, message: str = ""
    ) -> None:
        """The next `count` requests with this method (`*` for any) whose path matches (re.search) fail."""
        self.server.fail_next(method, path_pattern, status, count, message)

    def forbid(self, verb: str, resource: str, namespace: str | None = None) -> None:
        """RBAC says no: e.g. `forbid("patch", "deployments", "payments")`, `forbid("get", "pods/log")`."""
        self.server.denied.add((verb, resource, namespace or "*"))

    def step(self) -> None:
        """Run one controller tick now (the background loop keeps running too)."""
        self.controller.step()

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.server.requests

    def requests_to(self, method: str, path_pattern: str) -> list[RecordedRequest]:
        import re

        return [
            r for r in list(self.server.requests) if r.method == method and re.search(path_pattern, r.path)
        ]

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.05, self.controller.tick / 2))

"""The HTTP face of the sandbox: Kubernetes API paths, bearer auth, discovery, faults and the request log."""

from __future__ import annotations

import json
import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from remedium.demo.sandbox.kubernetes import kinds
from remedium.demo.sandbox.kubernetes.controller import Controller
from remedium.demo.sandbox.kubernetes.errors import (
    ApiError,
    bad_request,
    conflict,
    forbidden,
    not_found,
    status_for,
    unauthorized,
)
from remedium.demo.sandbox.kubernetes.kinds import Kind
from remedium.demo.sandbox.kubernetes.store import Store, check_dry_run

SERVICE_ACCOUNT = "system:serviceaccount:remedium:remedium"
VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-remedium-sandbox",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_OPEN_PATHS = {"/version", "/healthz", "/livez", "/readyz"}


@dataclass(frozen=True)
class Access:
    """A request as RBAC sees it, so a test can hold a Role's rules against what the client really sent."""

    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    api_group: str  # "" for the core group
    resource: str  # plural, e.g. "deployments"
    subresource: str  # "" or e.g. "scale", "log"
    namespace: str  # "" when cluster-scoped


@dataclass
class RecordedRequest:
    """One request as the client sent it; `body` is the decoded JSON (or text, or None when empty)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any
    status: int = 0
    access: Access | None = None  # None for non-resource paths (/version, discovery)


@dataclass
class Route:
    kind: Kind
    namespace: str | None
    name: str
    subresource: str


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    remaining: int
    message: str


class ApiServer:
    def __init__(self, store: Store, controller: Controller, token: str) -> None:
        self.store = store
        self.controller = controller
        self.token = token
        self.requests: list[RecordedRequest] = []
        self.denied: set[tuple[str, str, str]] = set()  # (verb, resource[/sub], namespace or "*")
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self.port = 0

    # ------------------------------------------------------------ lifecycle

    def bind(self, port: int = 0) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "remedium-k8s-sandbox"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with api._lock:
                    api._connections.add(self.connection)

            def finish(self) -> None:
                with api._lock:
                    api._connections.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, content_type, payload, headers = api.handle(
                    self.command, self.path, dict(self.headers.items()), raw
                )
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        self._server = server
        self.port = int(server.server_address[1])
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="k8s-sandbox-http", daemon=True
        ).start()

    def unbind(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            connections, self._connections = set(self._connections), set()
        for conn in connections:  # keep-alive connections would otherwise keep being served
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def up(self) -> bool:
        return self._server is not None

    # --------------------------------------------------------------- faults

    def fail_next(self, method: str, path_pattern: str, status: int, count: int, message: str) -> None:
        with self._lock:
            self._faults.append(_Fault(method.upper(), re.compile(path_pattern), status, count, message))

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.method in (method, "*") and fault.pattern.search(path):
                    fault.remaining -= 1
                    return fault
        return None

    # -------------------------------------------------------------- requests

    def handle(
        self, method: str, target: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, str, bytes, dict[str, str]]:
        split = urlsplit(target)
        path = split.path.rstrip("/") or "/"
        params = parse_qs(split.query, keep_blank_values=True)
        lower = {k.lower(): v for k, v in headers.items()}
        content_type = lower.get("content-type", "")
        text = raw.decode("utf-8", errors="replace")
        try:
            body: Any = json.loads(text) if text else None
        except ValueError:
            body = text
        record = RecordedRequest(
            method,
            path,
            {k: v[-1] for k, v in params.items()},
            content_type,
            body,
            access=_access(method, path, params),
        )
        with self._lock:
            self.requests.append(record)
        try:
            route = self._route(path)
            fault = self._take_fault(method, path)
            if fault is not None:
                raise status_for(
                    fault.status,
                    fault.message or self._fault_text(fault.status, method, route),
                    _details(route),
                )
            if path not in _OPEN_PATHS and lower.get("authorization", "") != f"Bearer {self.token}":
                raise unauthorized()
            if raw and body == text and not content_type.startswith("application/apply-patch"):
                raise bad_request(f"the body of the request could not be decoded: {text[:80]!r} is not JSON")
            status, result = self._dispatch(method, path, route, params, content_type, body)
        except ApiError as exc:
            record.status = exc.code
            return exc.code, "application/json", json.dumps(exc.status()).encode(), exc.headers
        record.status = status
        if isinstance(result, str):
            return status, "text/plain", result.encode(), {}
        return status, "application/json", json.dumps(result).encode(), {}

    def _fault_text(self, status: int, method: str, route: Route | None) -> str:
        if route is None:
            return ""
        if status == 403:
            return forbidden(
                route.kind.group,
                route.kind.plural,
                route.name,
                _verb(method, route),
                route.namespace or "",
                SERVICE_ACCOUNT,
            ).message
        if status == 409 and route.name:
            return conflict(route.kind.group, route.kind.plural, route.name).message
        return ""

    def _route(self, path: str) -> Route | None:
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            return None
        kind = kinds.BY_PATH.get((group, version, rest[0]))
        if kind is None:
            return None
        return Route(kind, namespace, rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else "")

    def _dispatch(
        self,
        method: str,
        path: str,
        route: Route | None,
        params: dict[str, list[str]],
        content_type: str,
        body: Any,
    ) -> tuple[int, Any]:
        if route is None:
            return 200, self._discovery(method, path)
        kind, ns, name, sub = route.kind, route.namespace, route.name, route.subresource
        verb = _verb(method, route)
        self._authorize(verb, route)
        if sub and sub not in kind.subresources:
            raise ApiError(404, "the server could not find the requested resource")
        dry_run = check_dry_run(params.get("dryRun", []))
        if not name:
            if method == "GET":
                if params.get("watch", [""])[-1] in ("true", "1"):
                    raise bad_request("watch is not supported by the remedium sandbox; list and poll instead")
                return 200, self.store.list_objects(
                    kind, ns, _one(params, "labelSelector"), _one(params, "fieldSelector")
                )
            if ns is None:
                raise ApiError(405, "the server does not allow this method on the requested resource")
            if method == "POST":
                return 201, self.store.create(kind, ns, body, dry_run)
            if method == "DELETE":
                return 200, self._delete_collection(kind, ns, params, body, dry_run)
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if ns is None:
            raise ApiError(404, "the server could not find the requested resource")
        if sub == "log":
            if method != "GET":
                raise ApiError(405, "the server does not allow this method on the requested resource")
            return 200, self._logs(ns, name, params)
        if sub == "scale":
            if method == "GET":
                return 200, self.store.get_scale(kind, ns, name)
            if method == "PUT":
                return 200, self.store.update_scale(kind, ns, name, body, dry_run)
            if method == "PATCH":
                return 200, self.store.update_scale(kind, ns, name, body, dry_run, content_type or "unset")
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if method == "GET":
            return 200, self.store.get(kind, ns, name)
        if method == "PUT":
            return 200, self.store.replace(kind, ns, name, body, dry_run, sub)
        if method == "PATCH":
            return 200, self.store.patch(kind, ns, name, content_type, body, dry_run, sub)
        if method == "DELETE" and not sub:
            options = _delete_options(params, body)
            dry_run = check_dry_run(list(options.get("dryRun") or [])) or dry_run
            return 200, self.store.delete(kind, ns, name, options, dry_run)
        raise ApiError(405, "the server does not allow this method on the requested resource")

    def _authorize(self, verb: str, route: Route) -> None:
        resource = route.kind.plural + (f"/{route.subresource}" if route.subresource else "")
        for ns in (route.namespace or "", "*"):
            if (verb, resource, ns) in self.denied or ("*", resource, ns) in self.denied:
                raise forbidden(
                    route.kind.group, resource, route.name, verb, route.namespace or "", SERVICE_ACCOUNT
                )

    def _delete_collection(
        self, kind: Kind, ns: str, params: dict[str, list[str]], body: Any, dry_run: bool
    ) -> dict[str, Any]:
        listing = self.store.list_objects(
            kind, ns, _one(params, "labelSelector"), _one(params, "fieldSelector")
        )
        options = _delete_options(params, body)
        for item in listing["items"]:
            self.store.delete(kind, ns, item["metadata"]["name"], options, dry_run)
        return listing

    def _logs(self, ns: str, name: str, params: dict[str, list[str]]) -> str:
        pod_kind = kinds.BY_PATH[("", "v1", "pods")]
        with self.store.lock:
            pod = self.store.find(pod_kind, ns, name)
            if pod is None:
                raise not_found("", "pods", name)
            return self.controller.kubelet.logs(
                pod,
                _one(params, "container"),
                _one(params, "previous") in ("true", "1"),
                _int(params, "tailLines"),
                _one(params, "timestamps") in ("true", "1"),
                _int(params, "sinceSeconds"),
            )

    def _discovery(self, method: str, path: str) -> dict[str, Any]:
        if method != "GET":
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if path == "/version":
            return VERSION
        if path in ("/healthz", "/livez", "/readyz"):
            return {"status": "ok"}
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}
                ],
            }
        groups = sorted({(k.group, k.version) for k in kinds.KINDS if k.group})
        if path == "/apis":
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": group,
                        "versions": [{"groupVersion": f"{group}/{version}", "version": version}],
                        "preferredVersion": {"groupVersion": f"{group}/{version}", "version": version},
                    }
                    for group, version in groups
                ],
            }
        parts = path.strip("/").split("/")
        if parts[0] == "apis" and len(parts) == 2 and any(g == parts[1] for g, _ in groups):
            version = next(v for g, v in groups if g == parts[1])
            gv = {"groupVersion": f"{parts[1]}/{version}", "version": version}
            return {
                "kind": "APIGroup",
                "apiVersion": "v1",
                "name": parts[1],
                "versions": [gv],
                "preferredVersion": gv,
            }
        group_version = "/".join(parts[1:])
        served = [k for k in kinds.KINDS if k.api_version == group_version]
        if served and (parts[0] == "api") == (not served[0].group):
            resources: list[dict[str, Any]] = []
            for k in served:
                resources.append(
                    {
                        "name": k.plural,
                        "singularName": k.kind.lower(),
                        "namespaced": True,
                        "kind": k.kind,
                        "verbs": k.verbs,
                        "shortNames": list(k.short_names),
                    }
                )
                for sub in k.subresources:
                    sub_kind = "Scale" if sub == "scale" else ("Pod" if sub == "log" else k.kind)
                    verbs = ["get"] if sub == "log" else ["get", "patch", "update"]
                    resources.append(
                        {
                            "name": f"{k.plural}/{sub}",
                            "singularName": "",
                            "namespaced": True,
                            "kind": sub_kind,
                            "verbs": verbs,
                        }
                    )
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": group_version,
                "resources": resources,
            }
        raise ApiError(404, "the server could not find the requested resource", details={})


def _access(method: str, path: str, params: dict[str, list[str]]) -> Access | None:
    """The RBAC request attributes of a resource path, served kind or not (an unserved one is still asked)."""
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) >= 3:
        group, rest = "", parts[2:]
    elif parts[0] == "apis" and len(parts) >= 4:
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespace = ""
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) != 2:
        namespace, rest = rest[1], rest[2:]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if method == "GET":
        watching = _one(params, "watch") in ("true", "1")
        verb = "watch" if watching else ("get" if name else "list")
    elif method == "DELETE" and not name:
        verb = "deletecollection"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
            method, method.lower()
        )
    return Access(verb, group, rest[0], subresource, namespace)


def _verb(method: str, route: Route | None) -> str:
    if route is None:
        return method.lower()
    if method == "GET":
        return "get" if route.name else "list"
    if method == "DELETE" and not route.name:
        return "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
        method, method.lower()
    )


def _details(route: Route | None) -> dict[str, Any] | None:
    if route is None or not route.name:
        return None
    details: dict[str, Any] = {"name": route.name}
    if route.kind.group:
        details["group"] = route.kind.group
    details["kind"] = route.kind.plural
    return details


def _one(params: dict[str, list[str]], key: str) -> str:
    values = params.get(key)
    return values[-1] if values else ""


def _int(params: dict[str, list[str]], key: str) -> int | None:
    value = _one(params, key)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f'{key}: Invalid value: "{value}": must be an integer') from None


def _delete_options(params: dict[str, list[str]], body: Any) -> dict[str, Any]:
    options: dict[str, Any] = dict(body) if isinstance(body, dict) else {}
    if _one(params, "propagationPolicy"):
        options["propagationPolicy"] = _one(params, "propagationPolicy")
    if _one(params, "gracePeriodSeconds"):
        options["gracePeriodSeconds"] = _int(params, "gracePeriodSeconds")
    if _one(params, "orphanDependents"):
        options["orphanDependents"] = _one(params, "orphanDependents") == "true"
    return options

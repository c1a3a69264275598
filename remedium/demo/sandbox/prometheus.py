"""A Prometheus HTTP API stand-in for the demo, where no Prometheus binary is installed.

Tests use the real Prometheus (Debian package). The demo must run on a bare machine, so
this serves `/api/v1/query` and `/api/v1/query_range` with Prometheus's response shapes
for the one expression form our runbooks' metric diagnostics use — a vector selector,
`name{label="v", other=~"re"}` — over gauges the scenario sets. Anything else is
answered as Prometheus answers a query it cannot parse: 400 `bad_data`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

LOOKBACK_S = 300.0
_SELECTOR = re.compile(r"^\s*(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(?P<matchers>[^}]*)\})?\s*$")
_MATCHER = re.compile(
    r'^\s*(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>(?:[^"\\]|\\.)*)"\s*$'
)


class BadData(ValueError):
    pass


@dataclass
class Series:
    labels: dict[str, str]
    samples: list[tuple[float, float]] = field(default_factory=list)

    def at(self, t: float) -> float | None:
        latest = None
        for ts, value in self.samples:
            if ts <= t and t - ts <= LOOKBACK_S:
                latest = value
        return latest


def _parse(query: str) -> tuple[str, list[tuple[str, str, str]]]:
    if not query.strip():
        raise BadData('invalid parameter "query": 1:1: parse error: no expression found in input')
    m = _SELECTOR.match(query)
    if m is None:
        raise BadData(
            f'invalid parameter "query": 1:1: parse error: unsupported expression {query!r} '
            "(this sandbox evaluates vector selectors only)"
        )
    matchers = []
    for part in filter(str.strip, (m["matchers"] or "").split(",")):
        mm = _MATCHER.match(part)
        if mm is None:
            raise BadData(f'invalid parameter "query": parse error: bad label matcher {part.strip()!r}')
        matchers.append((mm["label"], mm["op"], mm["value"]))
    return m["name"], matchers


def _matches(labels: dict[str, str], matchers: list[tuple[str, str, str]]) -> bool:
    for label, op, value in matchers:
        actual = labels.get(label, "")
        if op == "=" and actual != value:
            return False
        if op == "!=" and actual == value:
            return False
        if op == "=~" and not re.fullmatch(value, actual):
            return False
        if op == "!~" and re.fullmatch(value, actual):
            return False
    return True


def _ts(t: float) -> float | int:
    """Prometheus's JSON timestamps: seconds with millisecond precision, integers when whole."""
    t = round(t, 3)
    return int(t) if t == int(t) else t


def _fmt(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


class PrometheusSandbox:
    def __init__(self) -> None:
        self._series: list[Series] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.queries: list[str] = []

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def set(self, name: str, labels: dict[str, str], value: float, at: float | None = None) -> None:
        """Record a sample of gauge `name{labels}` (now, unless `at` says otherwise)."""
        full = {"__name__": name, **labels}
        with self._lock:
            series = next((s for s in self._series if s.labels == full), None)
            if series is None:
                series = Series(full)
                self._series.append(series)
            series.samples.append((time.time() if at is None else at, float(value)))
            series.samples.sort()

    def instant(self, query: str, t: float) -> list[dict[str, Any]]:
        name, matchers = _parse(query)
        with self._lock:
            found = [s for s in self._series if s.labels["__name__"] == name and _matches(s.labels, matchers)]
            return [
                {"metric": s.labels, "value": [_ts(t), _fmt(v)]} for s in found if (v := s.at(t)) is not None
            ]

    def range(self, query: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        if step <= 0:
            raise BadData(
                'invalid parameter "step": zero or negative query resolution step widths are not accepted'
            )
        name, matchers = _parse(query)
        result = []
        with self._lock:
            for s in self._series:
                if s.labels["__name__"] != name or not _matches(s.labels, matchers):
                    continue
                values, t = [], start
                while t <= end:
                    v = s.at(t)
                    if v is not None:
                        values.append([_ts(t), _fmt(v)])
                    t += step
                if values:
                    result.append({"metric": s.labels, "values": values})
        return result

    def start(self) -> PrometheusSandbox:
        sandbox = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, payload: Any) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _params(self) -> dict[str, str]:
                url = urlsplit(self.path)
                params = {k: v[-1] for k, v in parse_qs(url.query).items()}
                if self.command == "POST":
                    length = int(self.headers.get("Content-Length") or 0)
                    form = parse_qs(self.rfile.read(length).decode())
                    params.update({k: v[-1] for k, v in form.items()})
                return params

            def _handle(self) -> None:
                path = urlsplit(self.path).path
                if path in ("/-/ready", "/-/healthy"):
                    self.send_response(200)
                    self.end_headers()
                    return
                if path == "/api/v1/status/buildinfo":
                    self._reply(200, {"status": "success", "data": {"version": "sandbox"}})
                    return
                params = self._params()
                query = params.get("query", "")
                sandbox.queries.append(query)
                try:
                    if path == "/api/v1/query":
                        t = float(params.get("time") or time.time())
                        data = {"resultType": "vector", "result": sandbox.instant(query, t)}
                    elif path == "/api/v1/query_range":
                        try:
                            start, end = float(params["start"]), float(params["end"])
                            step = float(params["step"].rstrip("s"))
                        except (KeyError, ValueError):
                            raise BadData('invalid parameter "start", "end" or "step"') from None
                        data = {"resultType": "matrix", "result": sandbox.range(query, start, end, step)}
                    else:
                        self._reply(404, {"status": "error", "errorType": "not_found", "error": "not found"})
                        return
                except BadData as exc:
                    self._reply(400, {"status": "error", "errorType": "bad_data", "error": str(exc)})
                    return
                self._reply(200, {"status": "success", "data": data})

            do_GET = _handle
            do_POST = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="prometheus-sandbox", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

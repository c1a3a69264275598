"""The shared machinery of the Slack, Jira and PagerDuty sandboxes: a loopback HTTP server in a thread.

Each sandbox answers like its real API; this part records every request and lets a test
(or the demo) inject the failures real services produce: an error status for the next N
matching requests (optionally after the write took effect, as when a reply is lost on the
way back), a 429 carrying Retry-After, or a stall longer than the client's timeout.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    """One request the sandbox received, as the client sent it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int = 0

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass
class Reply:
    status: int
    payload: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # sent as is (text/plain) instead of JSON

    def encode(self) -> tuple[bytes, str]:
        if self.raw is not None:
            return self.raw, "text/plain; charset=utf-8"
        if self.payload is None:
            return b"", "application/json"
        return json.dumps(self.payload).encode(), "application/json; charset=utf-8"


@dataclass
class _Fault:
    pattern: re.Pattern[str]
    remaining: int
    status: int = 0
    retry_after: float | None = None
    after_effect: bool = False
    stall_s: float = 0.0


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-answer (a timeout, an outage test) is normal, not a traceback."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class HttpDouble:
    """Subclasses implement `handle` (and `error_reply` for their API's error shape)."""

    name = "sandbox"

    def __init__(self) -> None:
        self.received: list[Request] = []
        self.lock = threading.RLock()
        self._faults: list[_Fault] = []
        self._server: ThreadingHTTPServer | None = None
        self._released = threading.Event()

    # ---------------------------------------------------------------- public

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{self.name} sandbox is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail_next(
        self,
        path_pattern: str,
        status: int,
        count: int = 1,
        retry_after: float | None = None,
        after_effect: bool = False,
    ) -> None:
        """Answer the next `count` requests whose path matches (re.search) with `status`.

        With `after_effect` the request is carried out first and only the reply is replaced,
        as when a write lands but its answer is lost.
        """
        with self.lock:
            self._faults.append(_Fault(re.compile(path_pattern), count, status, retry_after, after_effect))

    def stall_next(self, path_pattern: str, seconds: float, count: int = 1) -> None:
        """Hold the next `count` matching requests for `seconds` before answering (client timeouts)."""
        with self.lock:
            self._faults.append(_Fault(re.compile(path_pattern), count, stall_s=seconds))

    def requests_to(self, method: str, path_pattern: str) -> list[Request]:
        with self.lock:
            return [r for r in self.received if r.method == method and re.search(path_pattern, r.path)]

    def start(self, port: int = 0) -> Self:
        """Serve on `port` (0: a free one); a stopped sandbox starts again on its old port, with
        its state, as a restarted service would (for outages: stop, wait, start(port))."""
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                if self.server is not double._server:  # stopped since this connection opened:
                    self.close_connection = True  # a dead server's sockets answer nothing
                    return
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    method=self.command,
                    path=split.path,
                    query={k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()},
                    headers=dict(self.headers.items()),
                    body=self.rfile.read(length) if length else b"",
                )
                reply = double._dispatch(request)
                body, content_type = reply.encode()
                self.send_response(reply.status)
                if reply.status != 204:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self._released.clear()
        self._server = _QuietServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.name}-sandbox",
            daemon=True,
        ).start()
        return self

    def stop(self) -> None:
        self._released.set()  # let stalled requests finish
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -------------------------------------------------------------- subclass

    def handle(self, request: Request) -> Reply:
        raise NotImplementedError

    def error_reply(self, status: int, retry_after: float | None) -> Reply:
        headers = {"Retry-After": _seconds(retry_after)} if retry_after is not None else {}
        return Reply(status, {"error": f"injected {status}"}, headers)

    # -------------------------------------------------------------- internal

    def _take_fault(self, path: str) -> _Fault | None:
        with self.lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.pattern.search(path):
                    fault.remaining -= 1
                    return fault
            return None

    def _dispatch(self, request: Request) -> Reply:
        with self.lock:
            self.received.append(request)
        fault = self._take_fault(request.path)
        if fault is not None and fault.stall_s:
            self._released.wait(fault.stall_s)
            fault = None
        if fault is not None and not fault.after_effect:
            reply = self.error_reply(fault.status, fault.retry_after)
        else:
            with self.lock:
                reply = self.handle(request)
            if fault is not None:
                reply = self.error_reply(fault.status, fault.retry_after)
        request.status = reply.status
        return reply


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)

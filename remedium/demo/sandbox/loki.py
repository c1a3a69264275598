"""A Grafana Loki stand-in: the push and log-query HTTP API for the LogQL our runbooks use.

There is no real Loki to run here (Debian's `loki` is an unrelated program), so tests and
the demo push logs through `/loki/api/v1/push` as Promtail's JSON client does and query
them through `/loki/api/v1/query_range`, answered in Loki's shapes: `streams` results with
nanosecond string timestamps and a `stats` object, and plain-text 400 errors. LogQL is the
subset runbooks need: a stream selector with `=`, `!=`, `=~`, `!~` and line filters `|=`,
`!=`, `|~`, `!~`; anything else (parsers, metric queries) is refused the way Loki refuses
what it cannot parse.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from remedium.demo.sandbox.http_double import HttpDouble, Reply, Request

API = "/loki/api/v1"
DEFAULT_LIMIT = 100
MAX_LIMIT = 5000
HOUR_NS = 3600 * 10**9

_TOKEN = re.compile(
    r"""\s*(?:(?P<op>=~|!~|!=|\|=|\|~|=|\||\{|\}|,)|(?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)|(?P<other>\S))"""
)


class LogQLError(ValueError):
    """What Loki answers with HTTP 400 and a plain-text body."""


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        full = re.fullmatch(self.value, actual) is not None
        return full if self.op == "=~" else not full


@dataclass(frozen=True)
class LineFilter:
    op: str
    value: str

    def keeps(self, line: str) -> bool:
        if self.op == "|=":
            return self.value in line
        if self.op == "!=":
            return self.value not in line
        found = re.search(self.value, line) is not None
        return found if self.op == "|~" else not found


@dataclass(frozen=True)
class LogQuery:
    matchers: tuple[Matcher, ...]
    filters: tuple[LineFilter, ...]

    def selects(self, labels: dict[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def keeps(self, line: str) -> bool:
        return all(f.keeps(line) for f in self.filters)


def _tokens(query: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(query):
        found = _TOKEN.match(query, pos)
        if found is None or found.end() == pos:
            break
        kind = found.lastgroup or "other"
        out.append((kind, found.group(kind), found.start(kind) + 1))
        pos = found.end()
    return out


def _unquote(token: str) -> str:
    if token.startswith("`"):
        return token[1:-1]
    return str(json.loads(token))


def _unexpected(kind: str, text: str, col: int) -> LogQLError:
    shown = {"str": "STRING", "ident": "IDENTIFIER"}.get(kind, text)
    return LogQLError(f"parse error at line 1, col {col}: syntax error: unexpected {shown}")


def parse_logql(query: str) -> LogQuery:
    """The supported subset of LogQL, or LogQLError with Loki's wording."""
    tokens = _tokens(query)
    if not tokens:
        raise LogQLError("parse error at line 0, col 0: syntax error: unexpected $end")
    kind, text, col = tokens[0]
    if text != "{":
        if kind == "ident":
            raise LogQLError(
                f"parse error at line 1, col {col}: metric queries and functions such as "
                f"{text!r} are not supported by the Remedium Loki sandbox"
            )
        raise _unexpected(kind, text, col)
    i = 1
    matchers: list[Matcher] = []
    while True:
        if i >= len(tokens):
            raise LogQLError(f"parse error at line 1, col {len(query) + 1}: syntax error: unexpected $end")
        kind, text, col = tokens[i]
        if text == "}" and not matchers:
            raise LogQLError("parse error : queries require at least one regexp or equality matcher")
        if kind != "ident":
            raise _unexpected(kind, text, col)
        if i + 2 >= len(tokens):
            raise LogQLError(f"parse error at line 1, col {len(query) + 1}: syntax error: unexpected $end")
        op_kind, op, op_col = tokens[i + 1]
        value_kind, value, value_col = tokens[i + 2]
        if op not in ("=", "!=", "=~", "!~"):
            raise _unexpected(op_kind, op, op_col)
        if value_kind != "str":
            raise _unexpected(value_kind, value, value_col)
        literal = _unquote(value)
        if op in ("=~", "!~"):
            try:
                re.compile(literal)
            except re.error as exc:
                raise LogQLError(
                    f"parse error at line 1, col {value_col}: error parsing regexp: {exc}"
                ) from None
        matchers.append(Matcher(text, op, literal))
        i += 3
        if i < len(tokens) and tokens[i][1] == ",":
            i += 1
            continue
        if i < len(tokens) and tokens[i][1] == "}":
            i += 1
            break
        if i >= len(tokens):
            raise LogQLError(f"parse error at line 1, col {len(query) + 1}: syntax error: unexpected $end")
        raise _unexpected(*tokens[i])
    if all(m.op in ("!=", "!~") or (m.op == "=~" and re.fullmatch(m.value, "")) for m in matchers):
        raise LogQLError(
            "parse error : queries require at least one regexp or equality matcher that does not "
            'have an empty-compatible value. For instance, app=~".*" does not meet this '
            'requirement, but app=~".+" will'
        )
    filters: list[LineFilter] = []
    while i < len(tokens):
        kind, op, col = tokens[i]
        if op == "|":
            after = tokens[i + 1] if i + 1 < len(tokens) else ("op", "$end", len(query) + 1)
            raise LogQLError(
                f"parse error at line 1, col {after[2]}: the Remedium Loki sandbox supports only line "
                f"filters (|=, !=, |~, !~), not the {after[1]!r} stage"
            )
        if op not in ("|=", "!=", "|~", "!~"):
            raise _unexpected(kind, op, col)
        if i + 1 >= len(tokens) or tokens[i + 1][0] != "str":
            if i + 1 >= len(tokens):
                raise LogQLError(
                    f"parse error at line 1, col {len(query) + 1}: syntax error: unexpected $end"
                )
            raise _unexpected(*tokens[i + 1])
        literal = _unquote(tokens[i + 1][1])
        if op in ("|~", "!~"):
            try:
                re.compile(literal)
            except re.error as exc:
                raise LogQLError(
                    f"parse error at line 1, col {tokens[i + 1][2]}: error parsing regexp: {exc}"
                ) from None
        filters.append(LineFilter(op, literal))
        i += 2
    return LogQuery(tuple(matchers), tuple(filters))


def _timestamp_ns(raw: str | None, default: int) -> int:
    """Loki takes nanosecond (or second) epochs and RFC3339."""
    if raw is None or raw == "":
        return default
    try:
        number = float(raw)
    except ValueError:
        try:
            return int(datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp() * 10**9)
        except ValueError:
            raise LogQLError(f'invalid parameter: cannot parse "{raw}" to a valid timestamp') from None
    return int(number) if number > 10**12 else int(number * 10**9)


def _duration_ns(raw: str) -> int:
    found = re.fullmatch(r"(\d+)(ms|s|m|h|d)", raw.strip())
    if found is None:
        raise LogQLError(f'invalid parameter: cannot parse "{raw}" to a valid duration')
    scale = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": HOUR_NS, "d": 24 * HOUR_NS}[found.group(2)]
    return int(found.group(1)) * scale


class LokiSandbox(HttpDouble):
    name = "loki"

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[tuple[dict[str, str], int, str]] = []  # (labels, ts ns, line)

    # ------------------------------------------------------------ direct use

    def push(self, labels: dict[str, str], lines: list[tuple[int, str]]) -> None:
        """Store entries as the push API would (for seeding without HTTP)."""
        with self.lock:
            for ts, line in lines:
                self.entries.append((dict(labels), int(ts), line))

    # -------------------------------------------------------------- serving

    def error_reply(self, status: int, retry_after: float | None) -> Reply:
        headers = {"Retry-After": str(int(retry_after or 1))} if retry_after is not None else {}
        return Reply(status, raw=f"injected {status}\n".encode(), headers=headers)

    def handle(self, request: Request) -> Reply:
        try:
            return self._route(request)
        except LogQLError as exc:
            return Reply(400, raw=(str(exc) + "\n").encode())

    def _route(self, request: Request) -> Reply:
        path = request.path
        if path == "/ready" and request.method == "GET":
            return Reply(200, raw=b"ready\n")
        if path == f"{API}/push" and request.method == "POST":
            return self._push(request)
        if path in (f"{API}/query_range", f"{API}/query") and request.method in ("GET", "POST"):
            return self._query(request, instant=path.endswith("/query"))
        if path == f"{API}/labels" and request.method == "GET":
            with self.lock:
                names = sorted({k for labels, _, _ in self.entries for k in labels})
            return Reply(200, {"status": "success", "data": names})
        found = re.fullmatch(rf"{API}/label/([^/]+)/values", path)
        if found and request.method == "GET":
            with self.lock:
                values = sorted(
                    {labels[found.group(1)] for labels, _, _ in self.entries if found.group(1) in labels}
                )
            return Reply(200, {"status": "success", "data": values})
        return Reply(404, raw=b"404 page not found\n")

    def _push(self, request: Request) -> Reply:
        content_type = (request.header("Content-Type") or "").split(";")[0].strip()
        if content_type != "application/json":
            return Reply(
                415,
                raw=f"unsupported Content-Type {content_type!r}: the sandbox takes JSON pushes\n".encode(),
            )
        try:
            payload = json.loads(request.body)
            streams = payload["streams"]
            stored = []
            for stream in streams:
                labels = {str(k): str(v) for k, v in stream["stream"].items()}
                if not labels:
                    raise LogQLError("error at least one label pair is required per stream")
                for value in stream["values"]:
                    stored.append((labels, int(value[0]), str(value[1])))
        except LogQLError:
            raise
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise LogQLError(f"loghttp.PushRequest: {exc}") from None
        with self.lock:
            self.entries.extend(stored)
        return Reply(204)

    def _query(self, request: Request, instant: bool) -> Reply:
        params = dict(request.query)
        if request.method == "POST" and request.body:
            from urllib.parse import parse_qsl

            params.update(dict(parse_qsl(request.body.decode(), keep_blank_values=True)))
        query = params.get("query")
        if not query:
            raise LogQLError("parse error at line 0, col 0: syntax error: unexpected $end")
        parsed = parse_logql(query)
        now = time.time_ns()
        limit = int(params.get("limit") or DEFAULT_LIMIT)
        if limit <= 0 or limit > MAX_LIMIT:
            raise LogQLError(
                f"max entries limit per query exceeded, limit > max_entries_limit ({limit} > {MAX_LIMIT})"
            )
        direction = params.get("direction") or "backward"
        if direction not in ("backward", "forward"):
            raise LogQLError(f"invalid direction '{direction}'")
        if instant:
            end = _timestamp_ns(params.get("time"), now)
            start = end - HOUR_NS
        else:
            end = _timestamp_ns(params.get("end"), now)
            since = params.get("since")
            start = end - _duration_ns(since) if since else _timestamp_ns(params.get("start"), end - HOUR_NS)
        if end < start:
            raise LogQLError("invalid parameter: the query time range exceeds the limit or end < start")
        with self.lock:
            selected = [
                (labels, ts, line)
                for labels, ts, line in self.entries
                if start <= ts <= end and parsed.selects(labels) and parsed.keeps(line)
            ]
        selected.sort(key=lambda e: e[1], reverse=direction == "backward")
        selected = selected[:limit]
        streams: dict[str, dict[str, Any]] = {}
        for labels, ts, line in selected:
            key = json.dumps(labels, sort_keys=True)
            stream = streams.setdefault(key, {"stream": labels, "values": []})
            stream["values"].append([str(ts), line])
        total = sum(len(s["values"]) for s in streams.values())
        stats = {"summary": {"totalEntriesReturned": total, "execTime": 0.0001}}
        return Reply(
            200,
            {
                "status": "success",
                "data": {"resultType": "streams", "result": list(streams.values()), "stats": stats},
            },
        )

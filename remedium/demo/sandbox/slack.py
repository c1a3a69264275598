"""A Slack Web API stand-in for the methods Remedium's reporter calls, answering as Slack does.

Slack reports almost every failure as HTTP 200 `{"ok": false, "error": "<code>"}`; only rate
limiting (429 + Retry-After) and server faults use the status line. Messages keep their
`metadata` (returned by conversations.history/replies with include_all_metadata), which is how
the reporter finds an incident's thread again after a retry. Also a sink for `response_url`
posts, so the approval ingress can be exercised against it.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any
from urllib.parse import parse_qs

from remedium.demo.sandbox.http_double import HttpDouble, Reply, Request, _seconds

TEAM_ID = "T0SANDBOX"
BOT_USER = "U0REMEDIUM"
BOT_ID = "B0REMEDIUM"
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_TEXT = 40000


def _flag(value: Any) -> bool:
    return str(value).lower() in ("1", "true")


class SlackSandbox(HttpDouble):
    name = "slack"

    def __init__(self, token: str = "xoxb-sandbox-token", channels: dict[str, str] | None = None) -> None:
        super().__init__()
        self.token = token
        self.channels = dict(channels or {"C0INCIDENTS": "incidents"})  # id -> name
        self.messages: list[dict[str, Any]] = []  # every message, posting order, with "channel"
        self.responses: list[dict[str, Any]] = []  # bodies posted to response_url paths
        self._ts = itertools.count(1)

    # ------------------------------------------------------------ accessors

    @property
    def api_url(self) -> str:
        """What slack_sdk's `base_url` should be."""
        return f"{self.url}/api/"

    def response_url(self, name: str = "1") -> str:
        return f"{self.url}/actions/{TEAM_ID}/{name}/sandbox"

    def top_level(self, channel: str) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.messages if m["channel"] == channel and not self._is_reply(m)]

    def thread(self, ts: str) -> list[dict[str, Any]]:
        """The parent and its replies, oldest first."""
        with self.lock:
            return [m for m in self.messages if m["ts"] == ts or m.get("thread_ts") == ts]

    # -------------------------------------------------------------- serving

    def error_reply(self, status: int, retry_after: float | None) -> Reply:
        headers = {"Retry-After": _seconds(retry_after)} if retry_after is not None else {}
        if status == 429:
            return Reply(429, {"ok": False, "error": "ratelimited"}, headers)
        return Reply(status, {"ok": False, "error": "internal_error"}, headers)

    def handle(self, request: Request) -> Reply:
        if request.path.startswith("/actions/") and request.method == "POST":
            self.responses.append(request.json or {})
            return Reply(200, raw=b"ok")
        if not request.path.startswith("/api/"):
            return Reply(404, raw=b"Not Found")
        method = request.path.removeprefix("/api/")
        auth = request.header("Authorization") or ""
        if not auth:
            return self._fail("not_authed")
        if auth != f"Bearer {self.token}":
            return self._fail("invalid_auth")
        args = self._args(request)
        handler = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "conversations.history": self._history,
            "conversations.replies": self._replies,
        }.get(method)
        if handler is None:
            return self._fail("unknown_method")
        return handler(args)

    @staticmethod
    def _args(request: Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        content_type = request.header("Content-Type") or ""
        if request.body and "json" in content_type:
            args.update(json.loads(request.body))
        elif request.body:
            args.update({k: v[-1] for k, v in parse_qs(request.body.decode()).items()})
        return args

    @staticmethod
    def _ok(**fields: Any) -> Reply:
        return Reply(200, {"ok": True, **fields})

    @staticmethod
    def _fail(error: str, **fields: Any) -> Reply:
        return Reply(200, {"ok": False, "error": error, **fields})

    def _channel_id(self, value: Any, names_allowed: bool) -> str | None:
        text = str(value or "")
        if text in self.channels:
            return text
        if names_allowed:
            name = text.removeprefix("#")
            return next((cid for cid, cname in self.channels.items() if cname == name), None)
        return None

    @staticmethod
    def _is_reply(message: dict[str, Any]) -> bool:
        return bool(message.get("thread_ts")) and message["thread_ts"] != message["ts"]

    def _find(self, channel: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in self.messages if m["channel"] == channel and m["ts"] == ts), None)

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _auth_test(self, args: dict[str, Any]) -> Reply:
        return self._ok(
            url="https://remedium-sandbox.slack.com/",
            team="Remedium Sandbox",
            user="remedium",
            team_id=TEAM_ID,
            user_id=BOT_USER,
            bot_id=BOT_ID,
            is_enterprise_install=False,
        )

    @staticmethod
    def _blocks_problem(blocks: Any) -> str | None:
        if not isinstance(blocks, list):
            return "blocks must be an array"
        if len(blocks) > MAX_BLOCKS:
            return f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]"
        for i, block in enumerate(blocks):
            if not isinstance(block, dict) or "type" not in block:
                return f"missing required field: type [json-pointer:/blocks/{i}]"
            text = block.get("text")
            if isinstance(text, dict) and len(str(text.get("text", ""))) > MAX_SECTION_TEXT:
                return f"must be less than {MAX_SECTION_TEXT + 1} characters [json-pointer:/blocks/{i}/text]"
            for j, element in enumerate(block.get("elements") or []):
                if element.get("type") == "button":
                    if (
                        len(str(element.get("value", ""))) > 2000
                        or len(str(element.get("action_id", ""))) > 255
                    ):
                        return f"invalid button [json-pointer:/blocks/{i}/elements/{j}]"
        return None

    @staticmethod
    def _metadata(raw: Any) -> tuple[dict[str, Any] | None, str | None]:
        if raw is None:
            return None, None
        try:
            value = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            return None, "invalid_metadata_format"
        if not isinstance(value, dict) or not isinstance(value.get("event_type"), str):
            return None, "invalid_metadata_format"
        if not isinstance(value.get("event_payload", {}), dict):
            return None, "invalid_metadata_format"
        return {"event_type": value["event_type"], "event_payload": value.get("event_payload", {})}, None

    def _content(self, args: dict[str, Any]) -> tuple[dict[str, Any], Reply | None]:
        blocks = args.get("blocks")
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        text = args.get("text")
        if blocks is not None:
            problem = self._blocks_problem(blocks)
            if problem:
                return {}, self._fail("invalid_blocks", errors=[problem])
        if len(str(text or "")) > MAX_TEXT:
            return {}, self._fail("msg_too_long")
        metadata, metadata_error = self._metadata(args.get("metadata"))
        if metadata_error:
            return {}, self._fail(metadata_error)
        content: dict[str, Any] = {"text": text or ""}
        if blocks is not None:
            content["blocks"] = blocks
        if metadata is not None:
            content["metadata"] = metadata
        return content, None

    def _post_message(self, args: dict[str, Any]) -> Reply:
        channel = self._channel_id(args.get("channel"), names_allowed=True)
        if channel is None:
            return self._fail("channel_not_found")
        if not args.get("text") and not args.get("blocks"):
            return self._fail("no_text")
        content, problem = self._content(args)
        if problem is not None:
            return problem
        message: dict[str, Any] = {
            "type": "message",
            "subtype": "bot_message",
            "user": BOT_USER,
            "bot_id": BOT_ID,
            "ts": self._next_ts(),
            **content,
        }
        thread_ts = args.get("thread_ts")
        if thread_ts:
            parent = self._find(channel, str(thread_ts))
            if parent is None:
                return self._fail("thread_not_found")
            message["thread_ts"] = parent.get("thread_ts") or parent["ts"]
            root = self._find(channel, message["thread_ts"]) or parent
            root["thread_ts"] = root["ts"]
            root["reply_count"] = root.get("reply_count", 0) + 1
            root["latest_reply"] = message["ts"]
        self.messages.append({"channel": channel, **message})
        return self._ok(channel=channel, ts=message["ts"], message=self._public(message, True))

    def _update(self, args: dict[str, Any]) -> Reply:
        channel = self._channel_id(args.get("channel"), names_allowed=False)
        if channel is None:
            return self._fail("channel_not_found")
        message = self._find(channel, str(args.get("ts") or ""))
        if message is None:
            return self._fail("message_not_found")
        if message.get("user") != BOT_USER:
            return self._fail("cant_update_message")
        if not args.get("text") and args.get("blocks") is None:
            return self._fail("no_text")
        content, problem = self._content(args)
        if problem is not None:
            return problem
        if "blocks" not in content:
            content["blocks"] = []
        message.update(content)
        message["edited"] = {"user": BOT_USER, "ts": self._next_ts()}
        public = self._public(message, True)
        return self._ok(channel=channel, ts=message["ts"], text=message["text"], message=public)

    @staticmethod
    def _public(message: dict[str, Any], with_metadata: bool) -> dict[str, Any]:
        shown = {k: v for k, v in message.items() if k != "channel"}
        if not with_metadata:
            shown.pop("metadata", None)
        return shown

    @staticmethod
    def _page(items: list[dict[str, Any]], args: dict[str, Any], with_metadata: bool) -> Reply:
        try:
            limit = min(max(int(args.get("limit") or 100), 1), 999)
            start = int(args.get("cursor") or 0)
        except ValueError:
            return Reply(200, {"ok": False, "error": "invalid_cursor"})
        page = items[start : start + limit]
        more = start + limit < len(items)
        return Reply(
            200,
            {
                "ok": True,
                "messages": [SlackSandbox._public(m, with_metadata) for m in page],
                "has_more": more,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""},
            },
        )

    def _history(self, args: dict[str, Any]) -> Reply:
        channel = self._channel_id(args.get("channel"), names_allowed=False)
        if channel is None:
            return self._fail("channel_not_found")
        oldest = float(args.get("oldest") or 0)
        latest = float(args.get("latest") or "inf")
        found = [m for m in self.top_level(channel) if oldest <= float(m["ts"]) <= latest]
        found.reverse()  # newest first, as Slack returns them
        reply = self._page(found, args, _flag(args.get("include_all_metadata")))
        if isinstance(reply.payload, dict) and reply.payload.get("ok"):
            reply.payload["pin_count"] = 0
        return reply

    def _replies(self, args: dict[str, Any]) -> Reply:
        channel = self._channel_id(args.get("channel"), names_allowed=False)
        if channel is None:
            return self._fail("channel_not_found")
        parent = self._find(channel, str(args.get("ts") or ""))
        if parent is None:
            return self._fail("thread_not_found")
        root_ts = parent.get("thread_ts") or parent["ts"]
        found = [m for m in self.thread(root_ts) if m["channel"] == channel]
        return self._page(found, args, _flag(args.get("include_all_metadata")))

"""The Temporal codec-server protocol over our payload codec, so the Temporal UI shows plaintext.

The UI (and `temporal --codec-endpoint`) POSTs `{"payloads": [...]}` (the `Payloads` message
in protobuf JSON: metadata values and data base64) to `<endpoint>/encode` or `<endpoint>/decode`
with an `X-Namespace` header, and shows what comes back; only the last path segment names the
operation, so the server can sit under any prefix of a reverse proxy.

Whoever can call `/decode` reads every alert, log and fact, so each call must carry the token:
`Authorization: Bearer <REMEDIUM_CODEC_SERVER_TOKEN>` (CLI, scripts, a proxy that adds it), or the
session cookie `GET /login` sets once the token is typed there. The UI sends that cookie when
its "Include cross-origin credentials" codec option is on and it runs on the same site (host)
as this server. CORS lets only the configured UI origins read answers, and a request whose
`Origin` is not one of them is refused before anything is decoded; but CORS is enforced by
browsers, so the token is the real gate.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from remedium.codec import EncryptionCodec
from remedium.errors import BodyTooLarge, CodecKeyError
from remedium.ingress.common import read_bounded
from remedium.settings import Settings

log = logging.getLogger("remedium.codec_server")

SESSION_COOKIE = "remedium_codec_session"
SESSION_SECONDS = 12 * 3600
ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"
MAX_LOGIN_BYTES = 4096

Operation = Callable[[list[Payload]], Awaitable[list[Payload]]]


def allowed_origins(settings: Settings) -> frozenset[str]:
    return frozenset(o.strip().rstrip("/") for o in settings.codec_cors_origins.split(",") if o.strip())


def session_value(token: str) -> str:
    """What the cookie holds: derived from the token, so changing the token ends every session."""
    return hmac.new(token.encode(), b"remedium codec-server session v1", hashlib.sha256).hexdigest()


class CodecServer:
    """The checks in order: origin, then token, then size and shape, then the codec."""

    def __init__(self, settings: Settings, codec: EncryptionCodec, token: str | None) -> None:
        self.codec = codec
        self.token = token
        self.namespace = settings.namespace
        self.origins = allowed_origins(settings)
        self.limit = settings.codec_max_request_bytes

    def cors(self, request: Request, response: Response) -> Response:
        origin = request.headers.get("origin")
        if origin is not None and origin in self.origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Vary"] = "Origin"
        return response

    def refuse(self, request: Request, status: int, message: str, **headers: str) -> Response:
        return self.cors(request, JSONResponse({"error": message}, status_code=status, headers=headers))

    def origin_refused(self, request: Request) -> Response | None:
        origin = request.headers.get("origin")
        if origin is None or origin in self.origins:
            return None
        # No CORS headers: the browser shows the page nothing, and nothing was decoded.
        return JSONResponse(
            {"error": f"origin {origin} is not allowed (REMEDIUM_CODEC_CORS_ORIGINS)"}, status_code=403
        )

    def authorized(self, request: Request) -> bool:
        if self.token is None:  # REMEDIUM_INSECURE_CODEC_SERVER=1
            return True
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credential.strip().encode(), self.token.encode()
        ):
            return True
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), session_value(self.token).encode())

    def preflight(self, request: Request) -> Response:
        refused = self.origin_refused(request)
        if refused is not None:
            return refused
        response = Response(status_code=204)
        response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
        return self.cors(request, response)

    async def apply(self, request: Request, operation: Operation) -> Response:
        refused = self.origin_refused(request)
        if refused is not None:
            return refused
        if not self.authorized(request):
            return self.refuse(
                request,
                401,
                "missing or wrong token: send Authorization: Bearer <REMEDIUM_CODEC_SERVER_TOKEN>, "
                "or sign in at /login",
                **{"WWW-Authenticate": 'Bearer realm="remedium codec-server"'},
            )
        namespace = request.headers.get("x-namespace")
        if namespace and namespace != self.namespace:
            return self.refuse(request, 403, f"this codec server serves namespace {self.namespace!r} only")
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return self.refuse(request, 415, "the body must be application/json")
        try:
            body = await read_bounded(request, self.limit)
        except BodyTooLarge:
            return self.refuse(request, 413, f"the body is over {self.limit} bytes")
        try:
            payloads = json_format.Parse(body, Payloads())
        except (json_format.ParseError, UnicodeDecodeError, ValueError):
            return self.refuse(request, 400, 'the body is not {"payloads": [...]} in protobuf JSON')
        try:
            converted = await operation(list(payloads.payloads))
        except CodecKeyError as exc:
            return self.refuse(request, 422, str(exc))
        answer = json_format.MessageToDict(Payloads(payloads=converted))
        return self.cors(request, JSONResponse({"payloads": answer.get("payloads", [])}))


def create_codec_app(settings: Settings, codec: EncryptionCodec, token: str | None) -> FastAPI:
    """The app; `token` None means insecure mode (the command says so loudly)."""
    server = CodecServer(settings, codec, token)
    app = FastAPI(title="Remedium codec server", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"ok": True})

    @app.get("/login")
    async def login_form() -> Response:
        return HTMLResponse(_page("Sign in to decode incidents in the Temporal UI", _FORM))

    @app.post("/login")
    async def login(request: Request) -> Response:
        try:
            body = await read_bounded(request, MAX_LOGIN_BYTES)
        except BodyTooLarge:
            return HTMLResponse(_page("Too large", ""), status_code=413)
        typed = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0]
        if server.token is None or not hmac.compare_digest(typed.encode(), server.token.encode()):
            return HTMLResponse(_page("Wrong token", _FORM), status_code=401)
        response = HTMLResponse(
            _page(
                "Signed in",
                "<p>The Temporal UI on this host can now decode: in its codec settings, set this "
                "server as the endpoint and turn on <em>Include cross-origin credentials</em>.</p>",
            )
        )
        response.set_cookie(
            SESSION_COOKIE,
            session_value(server.token),
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    # Only the last segment names the operation (the protocol), so any prefix works.
    @app.api_route("/{prefix:path}", methods=["POST", "OPTIONS"])
    async def codec_endpoint(prefix: str, request: Request) -> Response:
        operation = prefix.rstrip("/").rsplit("/", 1)[-1]
        if operation not in ("encode", "decode"):
            return JSONResponse({"error": "not found: POST .../encode or .../decode"}, status_code=404)
        if request.method == "OPTIONS":
            return server.preflight(request)
        return await server.apply(request, codec_operation(server.codec, operation))

    return app


def codec_operation(codec: EncryptionCodec, operation: str) -> Operation:
    return codec.encode if operation == "encode" else codec.decode


_FORM = (
    '<form method="post" action="login"><label>Token (REMEDIUM_CODEC_SERVER_TOKEN) '
    '<input type="password" name="token" autocomplete="current-password" autofocus></label> '
    '<button type="submit">Sign in</button></form>'
)


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )

"""Payload encryption: Temporal's history holds no alert text, yet worker, CLI, replay and the UI's
codec endpoint still read it with the keys; rotation keeps old histories readable; bad keys stop.

One incident runs through a real dev server with a real worker whose keys are `old`; its alert
title is a unique marker. Everything else reads what that incident left on the server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload, Payloads, WorkflowExecution
from temporalio.api.history.v1 import History
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.testing import WorkflowEnvironment

from remedium.cli.main import main
from remedium.codec import EncryptionCodec, data_converter, parse_keys
from remedium.connection import connect
from remedium.errors import CodecKeyError
from remedium.incidents import start_incident
from remedium.models import Alert, IncidentResult, IncidentStatus
from remedium.names import SEARCH_ATTRIBUTES
from remedium.replay import replay_paths
from remedium.settings import Settings
from remedium.worker import running_worker
from tests.conftest import dev_address
from tests.support import TargetService, alert_for, restart_runbook, wait_for_stage, write_config

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext

REMEDIUM = str(Path(sys.executable).with_name("remedium"))
OLD_KEY, NEW_KEY, STRANGER_KEY = os.urandom(32), os.urandom(32), os.urandom(16)
UI_ORIGIN = "http://localhost:8233"
TOKEN = "codec-token-" + uuid.uuid4().hex
LIMIT = 64 * 1024  # the codec server's request limit in these tests


def keys(*entries: tuple[str, bytes]) -> str:
    return ",".join(f"{key_id}:{base64.b64encode(key).decode()}" for key_id, key in entries)


OLD_ONLY = keys(("old", OLD_KEY))
ROTATED = keys(("new", NEW_KEY), ("old", OLD_KEY))  # the new key first: it encrypts, both decrypt
NEW_ONLY = keys(("new", NEW_KEY))  # the old key removed


@dataclass
class Recorded:
    """What the encrypted incident left: its id, its title and its history as the server stores it."""

    workflow_id: str
    title: str
    status: IncidentStatus
    result: IncidentResult
    history: History
    export: Path  # the history as `remedium incident export` / `temporal workflow show` write it
    env: dict[str, str]  # what a CLI process needs to reach the server (without keys)


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([REMEDIUM, *args], capture_output=True, text=True, env=env, timeout=90, check=False)


async def acli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cli, *args, env=env)


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REMEDIUM_", "TEMPORAL_"))}
    return {**env, **extra}


@pytest.fixture(scope="module")
async def recorded(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Recorded]:
    """An incident run end to end by a worker encrypting with `old`; the worker stays up to answer."""
    tmp = tmp_path_factory.mktemp("codec")
    target = TargetService().start()
    rb_dir, policy = write_config(tmp, [restart_runbook(every="1s", within="30s")], allow=[target.url])
    settings = Settings(
        temporal_address=dev_address(dev_env),
        runbooks_dir=rb_dir,
        policy_file=policy,
        task_queue=f"tq-codec-{uuid.uuid4().hex[:8]}",
        codec_keys=SecretStr(OLD_ONLY),
    )
    title = f"codec-marker-{uuid.uuid4().hex} web health failing"
    alert = alert_for(target, title=title)
    env = base_env(REMEDIUM_TEMPORAL_ADDRESS=dev_address(dev_env), REMEDIUM_TASK_QUEUE=settings.task_queue)
    client = await connect(settings)  # the product's one connection, with the configured codec
    try:
        async with running_worker(settings, client):
            assert await start_incident(client, settings.task_queue, alert)
            handle = client.get_workflow_handle(alert.workflow_id, result_type=IncidentResult)
            status = await wait_for_stage(handle, "awaiting_approval", timeout=90)
            approved = await acli(
                "approve", alert.workflow_id, "--step", "restart-pool", "--as", "alice",
                env={**env, "REMEDIUM_CODEC_KEYS": OLD_ONLY},
            )  # fmt: skip
            assert approved.returncode == 0, approved.stdout + approved.stderr
            result = await asyncio.wait_for(handle.result(), timeout=120)
            raw = await client.workflow_service.get_workflow_execution_history(
                GetWorkflowExecutionHistoryRequest(
                    namespace=client.namespace, execution=WorkflowExecution(workflow_id=alert.workflow_id)
                )
            )
            export = tmp / f"{alert.workflow_id}.json"
            export.write_text((await handle.fetch_history()).to_json())
            yield Recorded(alert.workflow_id, title, status, result, raw.history, export, env)
    finally:
        target.stop()


def payloads_in(message: Message, skip: tuple[str, ...] = ("search_attributes",)) -> Iterator[Payload]:
    """Every Payload anywhere in a proto message (search attributes left out: the server indexes them)."""
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.message_type is None or field.name in skip:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is not None:
                for item in value.values():
                    yield from payloads_in(item, skip)
        elif isinstance(value, Message):
            yield from payloads_in(value, skip)
        else:
            for item in value:
                yield from payloads_in(item, skip)


def history_payloads(history: History) -> list[Payload]:
    """The payloads of every event but the SDK core's own patch markers (a patch id, in the clear)."""
    return [
        payload
        for event in history.events
        if event.marker_recorded_event_attributes.marker_name != "core_patch"
        for payload in payloads_in(event)
    ]


def marker_of(recorded: Recorded) -> bytes:
    return recorded.title.split()[0].encode()


# ------------------------------------------------------------------ the history on the server


async def test_the_stored_history_holds_no_alert_text(recorded: Recorded) -> None:
    marker = marker_of(recorded)
    assert recorded.result.outcome == "resolved", recorded.result
    stored = recorded.history.SerializeToString()
    assert marker not in stored
    assert marker not in recorded.export.read_bytes()
    payloads = history_payloads(recorded.history)
    assert len(payloads) > 10
    assert all(p.metadata["encoding"] == b"binary/encrypted" for p in payloads), [
        dict(p.metadata) for p in payloads if p.metadata.get("encoding") != b"binary/encrypted"
    ][:3]
    assert {p.metadata["encryption-key-id"] for p in payloads} == {b"old"}
    # ...and the marker is really in there, encrypted: the keys reveal it (workflow input, summary)
    decoded = await EncryptionCodec(parse_keys(OLD_ONLY)).decode(payloads)
    assert sum(marker in p.data for p in decoded) >= 2


async def test_status_query_and_cli_show_read_the_alert_through_the_codec(recorded: Recorded) -> None:
    assert recorded.status.alert.title == recorded.title  # the status query, decoded by the client
    shown = await acli(
        "incident", "show", recorded.workflow_id, env={**recorded.env, "REMEDIUM_CODEC_KEYS": ROTATED}
    )
    assert shown.returncode == 0, shown.stderr
    assert recorded.title in shown.stdout
    assert "resolved" in shown.stdout


async def test_cli_without_the_key_says_which_key_is_missing(recorded: Recorded) -> None:
    shown = await acli(
        "incident", "show", recorded.workflow_id, env={**recorded.env, "REMEDIUM_CODEC_KEYS": NEW_ONLY}
    )
    assert shown.returncode == 1
    assert "Traceback" not in shown.stderr
    assert "key id 'old'" in shown.stderr, shown.stderr
    assert base64.b64encode(NEW_KEY).decode() not in shown.stderr + shown.stdout
    assert marker_of(recorded).decode() not in shown.stdout + shown.stderr


# ------------------------------------------------------------------ rotation and replay


async def test_rotation_new_key_encrypts_old_key_still_decrypts(recorded: Recorded) -> None:
    rotated = data_converter(Settings(codec_keys=SecretStr(ROTATED)))
    assert rotated.payload_codec is not None
    fresh = await rotated.encode([{"title": recorded.title}])
    assert fresh[0].metadata["encryption-key-id"] == b"new"
    assert marker_of(recorded) not in fresh[0].SerializeToString()
    old_payloads = history_payloads(recorded.history)
    assert await rotated.payload_codec.decode(old_payloads) == await EncryptionCodec(
        parse_keys(OLD_ONLY)
    ).decode(old_payloads)
    assert (await rotated.decode(fresh, [dict]))[0] == {"title": recorded.title}

    without_old = EncryptionCodec(parse_keys(NEW_ONLY))
    with pytest.raises(CodecKeyError) as refused:
        await without_old.decode(old_payloads[:1])
    message = str(refused.value)
    assert "key id 'old'" in message and "it lists new" in message
    assert (
        base64.b64encode(NEW_KEY).decode() not in message
        and base64.b64encode(OLD_KEY).decode() not in message
    )

    stranger = EncryptionCodec(parse_keys(keys(("old", STRANGER_KEY))))  # same id, another key
    with pytest.raises(CodecKeyError, match="does not decrypt with the configured key"):
        await stranger.decode(old_payloads[:1])


async def test_replay_decodes_the_encrypted_history_with_the_configured_keys(recorded: Recorded) -> None:
    done = await acli("replay", str(recorded.export), env={**recorded.env, "REMEDIUM_CODEC_KEYS": ROTATED})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "1 replayed, 0 failed"

    [(_, failure)] = await replay_paths([recorded.export], settings=Settings(codec_keys=SecretStr(NEW_ONLY)))
    assert failure is not None and "key id 'old'" in failure, failure
    [(_, unusable)] = await replay_paths(
        [recorded.export], settings=Settings(codec_keys=SecretStr("k1:c2hvcnQ="))
    )
    assert unusable is not None and "REMEDIUM_CODEC_KEYS key 'k1' is 5 bytes" in unusable, unusable


# ------------------------------------------------------------------ bad keys stop at startup


def run_main(args: list[str], monkeypatch: pytest.MonkeyPatch, **env: str) -> int:
    """The CLI in this process (its refusals happen before anything is served or connected)."""
    for name in list(os.environ):
        if name.startswith(("REMEDIUM_", "TEMPORAL_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return main(args)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (keys(("k1", os.urandom(20))), "key 'k1' is 20 bytes; AES-GCM needs 32 (AES-256), 24 or 16"),
        ("k1:not base64!", "key 'k1' is not valid base64"),
        ("just-a-key", "entry 1 is not id:base64key"),
        (keys(("k1", OLD_KEY), ("k1", NEW_KEY)), "lists key id 'k1' twice"),
    ],
)
def test_bad_keys_are_refused_in_one_sentence(
    value: str, expected: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_main(["codec-server", "--address", "127.0.0.1:0"], monkeypatch, REMEDIUM_CODEC_KEYS=value)
    assert code == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("remedium: REMEDIUM_CODEC_KEYS") and expected in line, line
    for secret in (OLD_KEY, NEW_KEY):
        assert base64.b64encode(secret).decode() not in line


async def test_worker_and_cli_refuse_a_bad_key_length(dev_env: WorkflowEnvironment) -> None:
    env = base_env(
        REMEDIUM_TEMPORAL_ADDRESS=dev_address(dev_env), REMEDIUM_CODEC_KEYS=keys(("k1", os.urandom(20)))
    )
    listed = await acli("incident", "list", env=env)
    assert listed.returncode == 1
    assert "Traceback" not in listed.stderr
    assert "REMEDIUM_CODEC_KEYS key 'k1' is 20 bytes" in listed.stderr, listed.stderr


def test_codec_server_needs_keys_and_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(["codec-server"], monkeypatch, REMEDIUM_CODEC_KEYS=OLD_ONLY) == 1
    no_token = capsys.readouterr().err
    assert "REMEDIUM_CODEC_SERVER_TOKEN is not set" in no_token
    assert "REMEDIUM_INSECURE_CODEC_SERVER=1" in no_token
    assert run_main(["codec-server"], monkeypatch, REMEDIUM_CODEC_SERVER_TOKEN=TOKEN) == 1
    assert "REMEDIUM_CODEC_KEYS is not set" in capsys.readouterr().err


# ------------------------------------------------------------------ the codec server, as the UI calls it


@dataclass
class CodecServer:
    url: str
    process: subprocess.Popen[str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def ui_port() -> int:
    """The port of the real Temporal UI the browser test opens (one of the allowed origins)."""
    return free_port()


@pytest.fixture(scope="module")
async def codec_server(ui_port: int) -> AsyncIterator[CodecServer]:
    """`remedium codec-server` for real, with the rotated keys, on a free port."""
    env = base_env(
        REMEDIUM_CODEC_KEYS=ROTATED,
        REMEDIUM_CODEC_SERVER_TOKEN=TOKEN,
        REMEDIUM_CODEC_CORS_ORIGINS=f"{UI_ORIGIN},http://localhost:{ui_port}",
        REMEDIUM_CODEC_MAX_REQUEST_BYTES=str(LIMIT),
    )
    process = subprocess.Popen(
        [REMEDIUM, "codec-server", "--address", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        first = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), timeout=60)
        found = re.search(r"listening on (http://\S+)", first)
        assert found, first + (process.stdout.read() if process.poll() is not None else "")
        url = found.group(1)
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"{url}/healthz")).status_code == 200
        yield CodecServer(url, process)
    finally:
        process.terminate()
        process.wait(timeout=30)


def ui_headers(**extra: str) -> dict[str, str]:
    """What the Temporal UI's fetch sends (src/lib/services/data-encoder.ts), here with the token."""
    return {
        "Content-Type": "application/json",
        "X-Namespace": "default",
        "Origin": UI_ORIGIN,
        "Authorization": f"Bearer {TOKEN}",
        **extra,
    }


def as_json(payloads: list[Payload]) -> str:
    return json_format.MessageToJson(Payloads(payloads=payloads))


def from_json(body: dict[str, Any]) -> list[Payload]:
    return list(json_format.ParseDict(body, Payloads()).payloads)


async def test_preflight_from_the_ui_origin_allows_the_ui_headers(codec_server: CodecServer) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.options(
            f"{codec_server.url}/decode",
            headers={
                "Origin": UI_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
            },
        )
        assert answer.status_code in (200, 204)
        assert answer.headers["access-control-allow-origin"] == UI_ORIGIN
        assert answer.headers["access-control-allow-credentials"] == "true"
        assert "POST" in answer.headers["access-control-allow-methods"]
        allowed = {h.strip().lower() for h in answer.headers["access-control-allow-headers"].split(",")}
        assert {"authorization", "content-type", "x-namespace"} <= allowed

        stranger = await http.options(
            f"{codec_server.url}/decode",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in stranger.headers


async def test_decode_of_the_raw_history_payloads_shows_the_alert(
    recorded: Recorded, codec_server: CodecServer
) -> None:
    payloads = history_payloads(recorded.history)
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(
            f"{codec_server.url}/decode", content=as_json(payloads), headers=ui_headers()
        )
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == UI_ORIGIN
    decoded = from_json(answer.json())
    assert len(decoded) == len(payloads)
    assert all(p.metadata["encoding"] != b"binary/encrypted" for p in decoded)
    started = json.loads(decoded[0].data)  # the first payload: the workflow's input, the alert
    assert started["alert"]["title"] == recorded.title


async def test_encode_decode_round_trip_under_a_prefix(codec_server: CodecServer) -> None:
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"step": "restart-pool", "by": "ui"}')
    async with httpx.AsyncClient(timeout=10) as http:
        encoded = await http.post(
            f"{codec_server.url}/encode", content=as_json([plain]), headers=ui_headers()
        )
        assert encoded.status_code == 200, encoded.text
        [sealed] = from_json(encoded.json())
        assert sealed.metadata["encoding"] == b"binary/encrypted"
        assert sealed.metadata["encryption-key-id"] == b"new"
        assert b"restart-pool" not in sealed.SerializeToString()
        decoded = await http.post(
            f"{codec_server.url}/codec/default/decode", content=as_json([sealed]), headers=ui_headers()
        )
    assert decoded.status_code == 200, decoded.text
    assert from_json(decoded.json()) == [plain]


async def test_no_token_wrong_token_and_strange_origins_get_nothing(
    recorded: Recorded, codec_server: CodecServer
) -> None:
    body = as_json(history_payloads(recorded.history)[:1])
    marker = marker_of(recorded).decode()
    async with httpx.AsyncClient(timeout=10) as http:
        for headers in (
            {k: v for k, v in ui_headers().items() if k != "Authorization"},
            ui_headers(Authorization="Bearer not-the-token"),
            ui_headers(Authorization=f"Basic {TOKEN}"),
        ):
            answer = await http.post(f"{codec_server.url}/decode", content=body, headers=headers)
            assert answer.status_code == 401, answer.text
            assert answer.headers["access-control-allow-origin"] == UI_ORIGIN  # so the UI can see why
            assert marker not in answer.text
        evil = await http.post(
            f"{codec_server.url}/decode", content=body, headers=ui_headers(Origin="http://evil.example")
        )
        assert evil.status_code == 403
        assert "access-control-allow-origin" not in evil.headers and marker not in evil.text
        other_namespace = await http.post(
            f"{codec_server.url}/decode", content=body, headers=ui_headers(**{"X-Namespace": "payments"})
        )
        assert other_namespace.status_code == 403 and marker not in other_namespace.text


async def test_too_big_malformed_and_unknown_key_are_refused(codec_server: CodecServer) -> None:
    big = as_json([Payload(metadata={"encoding": b"json/plain"}, data=b"x" * LIMIT)])
    stranger = await EncryptionCodec(parse_keys(keys(("gone", STRANGER_KEY)))).encode([Payload(data=b"1")])
    async with httpx.AsyncClient(timeout=10) as http:
        too_big = await http.post(f"{codec_server.url}/decode", content=big, headers=ui_headers())
        assert too_big.status_code == 413
        malformed = await http.post(f"{codec_server.url}/decode", content=b"{not json", headers=ui_headers())
        assert malformed.status_code == 400
        unknown = await http.post(
            f"{codec_server.url}/decode", content=as_json(stranger), headers=ui_headers()
        )
        assert unknown.status_code == 422
        assert "key id 'gone'" in unknown.json()["error"]


async def test_login_cookie_lets_a_same_site_ui_decode(recorded: Recorded, codec_server: CodecServer) -> None:
    """The UI cannot send our token itself; with "include credentials" it sends the session cookie."""
    body = as_json(history_payloads(recorded.history)[:1])
    cookieless = {k: v for k, v in ui_headers().items() if k != "Authorization"}
    async with httpx.AsyncClient(timeout=10) as http:
        wrong = await http.post(f"{codec_server.url}/login", data={"token": "guess"})
        assert wrong.status_code == 401 and not wrong.cookies
        signed_in = await http.post(f"{codec_server.url}/login", data={"token": TOKEN})
        assert signed_in.status_code == 200
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert TOKEN not in cookie
        answer = await http.post(f"{codec_server.url}/decode", content=body, headers=cookieless)
    assert answer.status_code == 200, answer.text
    assert json.loads(from_json(answer.json())[0].data)["alert"]["title"] == recorded.title


# ------------------------------------------------------------------ the real UI, in Chromium


@pytest.mark.timeout(300)
async def test_the_temporal_ui_shows_the_decrypted_alert(
    codec_server: CodecServer, ui_port: int, browser_context: BrowserContext, tmp_path: Path
) -> None:
    """An operator signs in to the codec server, points the UI's codec setting at it, reads the alert.

    The UI of a dev server of its own (the session's has none) shows an incident started with
    the rotated keys; the history holds only ciphertext, so the title can only come through
    the codec server's /decode, called by the UI with the session cookie ("include credentials").
    """
    from playwright.async_api import expect

    from tests.conftest import _binary

    settings = Settings(codec_keys=SecretStr(ROTATED), task_queue=f"tq-codec-ui-{uuid.uuid4().hex[:8]}")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"),
        data_converter=data_converter(settings),
        search_attributes=list(SEARCH_ATTRIBUTES),
        dev_server_extra_args=["--ui-disable-news-fetch"],
        ui=True,
        ui_port=ui_port,
    )
    title = f"codec-ui-{uuid.uuid4().hex} checkout latency"
    try:
        alert = Alert(source="manual", id=f"ui{uuid.uuid4().hex[:10]}", title=title, service="web-frontend")
        assert await start_incident(env.client, settings.task_queue, alert)  # no worker needed to read it
        codec_url = codec_server.url.replace("127.0.0.1", "localhost")  # same site as the UI: the cookie goes
        page = await browser_context.new_page()
        await page.goto(f"{codec_url}/login")
        await page.get_by_label(re.compile("Token")).fill(TOKEN)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("heading", name="Signed in")).to_be_visible()
        # What the UI's "Codec Server" settings store in the browser when an operator fills them in.
        await browser_context.add_init_script(
            f"""if (location.port === "{ui_port}") {{
                localStorage.setItem("endpoint", JSON.stringify("{codec_url}"));
                localStorage.setItem("overrideRemoteCodecConfiguration", "true");
                localStorage.setItem("includeCredentials", "true");
            }}"""
        )
        marker = title.split()[0]
        await page.goto(f"http://localhost:{ui_port}/namespaces/default/workflows/{alert.workflow_id}")
        await expect(page.get_by_text(re.compile(marker)).first).to_be_visible()
        await expect(page.get_by_text("Codec Server could not connect")).to_have_count(0)
        await page.screenshot(path=str(tmp_path / "ui-decoded.png"))
    finally:
        await env.shutdown()


async def test_temporal_cli_reads_the_history_through_the_codec_server(
    recorded: Recorded, codec_server: CodecServer, dev_env: WorkflowEnvironment
) -> None:
    """Temporal's own CLI, a second real client of the protocol: `--codec-endpoint`, `--codec-auth`."""
    from tests.conftest import _binary

    show = [_binary("temporal"), "workflow", "show", "--workflow-id", recorded.workflow_id]
    where = ["--address", dev_address(dev_env), "--output", "json"]
    codec = ["--codec-endpoint", codec_server.url, "--codec-auth", f"Bearer {TOKEN}"]
    plain = await asyncio.to_thread(subprocess.run, show + where, capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0, plain.stderr
    [sealed] = json.loads(plain.stdout)["events"][0]["workflowExecutionStartedEventAttributes"]["input"][
        "payloads"
    ]
    assert base64.b64decode(sealed["metadata"]["encoding"]) == b"binary/encrypted"
    decoded = await asyncio.to_thread(
        subprocess.run, show + where + codec, capture_output=True, text=True, timeout=60
    )
    assert decoded.returncode == 0, decoded.stderr
    [started] = json.loads(decoded.stdout)["events"][0]["workflowExecutionStartedEventAttributes"]["input"][
        "payloads"
    ]
    assert base64.b64decode(started["metadata"]["encoding"]) == b"json/plain"
    assert json.loads(base64.b64decode(started["data"]))["alert"]["title"] == recorded.title

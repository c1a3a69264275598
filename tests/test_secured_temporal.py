"""Remedium on a secured Temporal: TLS with a private CA, mTLS, an API key, a TOML profile.

Debian's nginx terminates TLS in front of the session's dev server (tests/nginx_support.py):
a TLS listener whose certificate names `temporal.test` (not the 127.0.0.1 dialled, so only
TEMPORAL_TLS_SERVER_NAME makes it verify), an mTLS one (`ssl_verify_client on`) and one that
answers a wrong `Authorization: Bearer` with UNAUTHENTICATED, as Temporal Cloud does. Through
each a real worker runs an incident to its end and the CLI reads it back; a missing client
certificate, a wrong key or a wrong CA is one sentence on stderr and exit 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from remedium.connection import connect, connect_config, embedded
from remedium.errors import TemporalUnreachable
from remedium.ingress.app import create_app
from remedium.ingress.serve import connect_client
from remedium.models import IncidentResult
from remedium.settings import Settings
from tests.conftest import dev_address, require_real
from tests.nginx_support import API_KEY, SERVER_NAME, SecuredFront, nginx_binary, start_front
from tests.support import (
    TargetService,
    alert_for,
    restart_runbook,
    settings_for,
    start,
    write_config,
)

BIN = Path(sys.executable).parent
README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
SDK_ENV = ("TEMPORAL_", "REMEDIUM_TEMPORAL_ADDRESS", "REMEDIUM_NAMESPACE", "REMEDIUM_CONFIG")


@pytest.fixture(scope="module")
def front(dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredFront]:
    nginx = nginx_binary()
    if nginx is None:
        require_real("nginx", "the nginx binary is not installed (apt-get install nginx)")
    if shutil.which("openssl") is None:
        require_real("openssl", "the openssl CLI is not installed (apt-get install openssl)")
    assert nginx is not None
    running = start_front(nginx, tmp_path_factory.mktemp("nginx"), dev_address(dev_env))
    yield running
    running.stop()


@pytest.fixture
def target() -> Iterator[TargetService]:
    service = TargetService().start()
    yield service
    service.stop()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Temporal configuration from the developer's shell or ~/.config/temporalio."""
    for name in list(os.environ):
        if name.startswith(SDK_ENV):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))


def _tls_env(front: SecuredFront, address: str) -> dict[str, str]:
    return {
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(front.certs.ca),
        "TEMPORAL_TLS_SERVER_NAME": SERVER_NAME,
    }


def _mtls_env(front: SecuredFront) -> dict[str, str]:
    return {
        **_tls_env(front, front.mtls_address),
        "TEMPORAL_TLS_CLIENT_CERT_PATH": str(front.certs.client_cert),
        "TEMPORAL_TLS_CLIENT_KEY_PATH": str(front.certs.client_key),
    }


def _product_env(settings: Settings, temporal: dict[str, str]) -> dict[str, str]:
    """The environment a `remedium` process gets: clean_env's os.environ, our settings, TEMPORAL_*."""
    return {
        **os.environ,
        "REMEDIUM_TASK_QUEUE": settings.task_queue,
        "REMEDIUM_RUNBOOKS_DIR": str(settings.runbooks_dir),
        "REMEDIUM_POLICY_FILE": str(settings.policy_file),
        **temporal,
    }


async def _remedium(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [str(BIN / "remedium"), *args], capture_output=True, text=True, env=env, timeout=90
    )


def _incident_setup(tmp_path: Path, target: TargetService) -> Settings:
    rb_dir, policy = write_config(
        tmp_path,
        [restart_runbook(approval_required=False, every="1s", within="60s")],
        required_for=[],
        allow=[target.url],
    )
    return settings_for(tmp_path, rb_dir, policy)


async def _listed(settings: Settings, temporal: dict[str, str]) -> dict[str, dict[str, object]]:
    listed = await _remedium("incident", "list", "--json", env=_product_env(settings, temporal))
    assert listed.returncode == 0, listed.stderr
    return {row["workflow_id"]: row for row in json.loads(listed.stdout)}


def _as_documented(sentence: str, front: SecuredFront) -> str:
    """The README's example lines say 127.0.0.1:7233 where the test has its nginx ports."""
    for address in (front.tls_address, front.mtls_address, front.bearer_address):
        sentence = sentence.replace(address, "127.0.0.1:7233")
    return sentence + "\n"


def _one_sentence(done: subprocess.CompletedProcess[str]) -> str:
    """A failed command: exit 1, one line on stderr, no traceback; returns that line."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("remedium: ")
    return lines[0]


@contextlib.asynccontextmanager
async def _worker_command(
    settings: Settings, temporal: dict[str, str], log_path: Path
) -> AsyncIterator[None]:
    """`remedium worker` as a user runs it, configured by the environment alone; stopped by SIGTERM."""
    with open(log_path, "w") as log:
        worker = subprocess.Popen(
            [str(BIN / "remedium"), "worker"], env=_product_env(settings, temporal), stdout=log, stderr=log
        )
        try:
            yield
            assert worker.poll() is None, log_path.read_text()
        finally:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                await asyncio.to_thread(worker.wait, 30)
    assert worker.returncode == 0, log_path.read_text()


async def _resolved(handle: WorkflowHandle[Any, IncidentResult], target: TargetService) -> None:
    result = await asyncio.wait_for(handle.result(), 120)
    assert result.outcome == "resolved", result.reason
    assert len(target.applied_to("/restart")) == 1


@pytest.mark.usefixtures("clean_env")
async def test_worker_command_over_tls_with_a_private_ca_and_server_name(
    dev_env: WorkflowEnvironment, front: SecuredFront, tmp_path: Path, target: TargetService
) -> None:
    """TEMPORAL_ADDRESS, _TLS_SERVER_CA_CERT_PATH, _TLS_SERVER_NAME: worker and CLI through TLS."""
    settings = _incident_setup(tmp_path, target)
    temporal = _tls_env(front, front.tls_address)
    async with _worker_command(settings, temporal, tmp_path / "worker.log"):
        handle = await start(dev_env.client, settings, alert_for(target))
        await _resolved(handle, target)
    rows = await _listed(settings, temporal)
    assert rows[handle.id]["status"] == "COMPLETED"
    assert rows[handle.id]["runbook"] == "web-restart"


@pytest.mark.usefixtures("clean_env")
async def test_worker_and_client_over_mtls(
    front: SecuredFront, tmp_path: Path, target: TargetService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a client certificate: the worker command, and our client starting the incident, via mTLS."""
    temporal = _mtls_env(front)
    for name, value in temporal.items():
        monkeypatch.setenv(name, value)
    settings = _incident_setup(tmp_path, target)
    client = await connect(settings)
    assert client.service_client.config.target_host == front.mtls_address
    async with _worker_command(settings, temporal, tmp_path / "worker.log"):
        handle = await start(client, settings, alert_for(target))
        await _resolved(handle, target)
    rows = await _listed(settings, temporal)
    assert rows[handle.id]["status"] == "COMPLETED"


@pytest.mark.usefixtures("clean_env")
async def test_worker_and_cli_with_an_api_key(
    front: SecuredFront, tmp_path: Path, target: TargetService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TEMPORAL_API_KEY is sent as `authorization: Bearer` over TLS, as for Temporal Cloud."""
    temporal = {**_tls_env(front, front.bearer_address), "TEMPORAL_API_KEY": API_KEY}
    for name, value in temporal.items():
        monkeypatch.setenv(name, value)
    settings = _incident_setup(tmp_path, target)
    async with _worker_command(settings, temporal, tmp_path / "worker.log"):
        handle = await start(await connect(settings), settings, alert_for(target))
        await _resolved(handle, target)
    rows = await _listed(settings, temporal)
    assert rows[handle.id]["status"] == "COMPLETED"
    assert API_KEY not in (tmp_path / "worker.log").read_text()


@pytest.mark.usefixtures("clean_env")
async def test_ingress_connects_the_same_way(front: SecuredFront, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ingress's lazily connected client goes through the mTLS listener too (its /healthz)."""
    for name, value in _mtls_env(front).items():
        monkeypatch.setenv(name, value)
    app = create_app(Settings.load(pagerduty_webhook_secret="s3cret"), connect_client(Settings.load()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as http:
        health = await http.get("/healthz")
    assert health.status_code == 200, health.text
    assert health.json() == {"status": "ok", "temporal": front.mtls_address}


@pytest.mark.usefixtures("clean_env")
async def test_cli_refused_by_the_server_says_why_in_one_sentence(
    front: SecuredFront, tmp_path: Path
) -> None:
    """No client certificate on the mTLS listener, a wrong API key, a CA that did not sign the server."""
    settings = settings_for(tmp_path, tmp_path, tmp_path / "policy.yaml")
    cases = {
        "no client certificate": _tls_env(front, front.mtls_address),
        "wrong API key": {**_tls_env(front, front.bearer_address), "TEMPORAL_API_KEY": "not-the-key"},
        "wrong CA": {
            **_tls_env(front, front.tls_address),
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(front.certs.other_ca),
        },
    }
    runs = await asyncio.gather(
        *(_remedium("incident", "list", env=_product_env(settings, env)) for env in cases.values())
    )
    said = {case: _one_sentence(done) for case, done in zip(cases, runs, strict=True)}
    assert said["no client certificate"] == (
        f"remedium: cannot connect to Temporal at {front.mtls_address}: the server requires a client "
        "certificate (mTLS) and none was given; set TEMPORAL_TLS_CLIENT_CERT_PATH and "
        "TEMPORAL_TLS_CLIENT_KEY_PATH"
    )
    assert said["wrong API key"] == (
        f"remedium: cannot connect to Temporal at {front.bearer_address}: the server rejected the API key "
        "(Request unauthenticated); check TEMPORAL_API_KEY"
    )
    assert "not-the-key" not in said["wrong API key"]
    for sentence in said.values():  # the README shows these very sentences
        assert _as_documented(sentence, front) in README
    assert said["wrong CA"] == (
        f"remedium: cannot connect to Temporal at {front.tls_address}: the server's TLS certificate is not "
        "signed by a CA the client trusts (the CA in TEMPORAL_TLS_SERVER_CA_CERT_PATH); set "
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH to the CA that signed it"
    )


async def _refusal(monkeypatch: pytest.MonkeyPatch, temporal: dict[str, str]) -> str:
    with monkeypatch.context() as patched:
        for name, value in temporal.items():
            patched.setenv(name, value)
        with pytest.raises(TemporalUnreachable) as refused:
            await connect(Settings.load())
    return str(refused.value)


@pytest.mark.usefixtures("clean_env")
async def test_other_refusals_name_the_setting_to_fix(
    front: SecuredFront, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client certificate from another CA, no API key, no server name, plain text to a TLS port."""
    certs = front.certs
    stranger = await _refusal(
        monkeypatch,
        {
            **_mtls_env(front),
            "TEMPORAL_TLS_CLIENT_CERT_PATH": str(certs.stranger_cert),
            "TEMPORAL_TLS_CLIENT_KEY_PATH": str(certs.stranger_key),
        },
    )
    assert stranger == (
        f"cannot connect to Temporal at {front.mtls_address}: the server refused the client certificate; "
        "it must be signed by a CA the server trusts (TEMPORAL_TLS_CLIENT_CERT_PATH, "
        "TEMPORAL_TLS_CLIENT_KEY_PATH)"
    )
    keyless = await _refusal(monkeypatch, _tls_env(front, front.bearer_address))
    assert keyless == (
        f"cannot connect to Temporal at {front.bearer_address}: the server requires authentication "
        "(Request unauthenticated); set TEMPORAL_API_KEY or a client certificate"
    )
    nameless = await _refusal(
        monkeypatch,
        {"TEMPORAL_ADDRESS": front.tls_address, "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(certs.ca)},
    )
    assert nameless == (
        f"cannot connect to Temporal at {front.tls_address}: the server's TLS certificate is for "
        f"{SERVER_NAME}, not 127.0.0.1; set TEMPORAL_TLS_SERVER_NAME to the name it was issued for"
    )
    assert _as_documented(f"remedium: {nameless}", front) in README
    plain = await _refusal(monkeypatch, {"TEMPORAL_ADDRESS": front.tls_address})
    assert plain == (
        f"cannot connect to Temporal at {front.tls_address}: the server does not answer plain gRPC there, "
        "as a TLS port would not; set TEMPORAL_TLS=true if it expects TLS (an API key turns it on too)"
    )


@pytest.mark.usefixtures("clean_env")
async def test_toml_profile_and_remedium_address_precedence(
    front: SecuredFront, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TEMPORAL_CONFIG_FILE + TEMPORAL_PROFILE give the mTLS files; REMEDIUM_TEMPORAL_ADDRESS wins."""
    certs = front.certs
    config = tmp_path / "temporal.toml"
    config.write_text(
        f"""
[profile.default]
address = "127.0.0.1:1"

[profile.secure]
address = "{front.mtls_address}"
namespace = "default"

[profile.secure.tls]
server_name = "{SERVER_NAME}"
server_ca_cert_path = "{certs.ca}"
client_cert_path = "{certs.client_cert}"
client_key_path = "{certs.client_key}"

[profile.misdirected]
address = "127.0.0.1:1"

[profile.misdirected.tls]
server_name = "{SERVER_NAME}"
server_ca_cert_path = "{certs.ca}"
client_cert_path = "{certs.client_cert}"
client_key_path = "{certs.client_key}"
"""
    )
    settings = settings_for(tmp_path, tmp_path, tmp_path / "policy.yaml")
    file_only = {"TEMPORAL_CONFIG_FILE": str(config)}
    secure = {**file_only, "TEMPORAL_PROFILE": "secure"}
    # The profile's address is wrong; the explicit REMEDIUM_TEMPORAL_ADDRESS goes where it should.
    overridden = {
        **file_only,
        "TEMPORAL_PROFILE": "misdirected",
        "REMEDIUM_TEMPORAL_ADDRESS": front.mtls_address,
    }
    ok, precedence = await asyncio.gather(
        _remedium("incident", "list", "--json", env=_product_env(settings, secure)),
        _remedium("incident", "list", "--json", env=_product_env(settings, overridden)),
    )
    for done in (ok, precedence):
        assert done.returncode == 0, done.stderr
        assert isinstance(json.loads(done.stdout), list)
    # Without TEMPORAL_PROFILE the file's `default` profile applies (its address refuses).
    assert (await _refusal(monkeypatch, file_only)).startswith(
        "cannot reach Temporal at 127.0.0.1:1: connection refused ("
    )
    unknown = await _refusal(monkeypatch, {**file_only, "TEMPORAL_PROFILE": "nope"})
    assert unknown == "the Temporal client configuration is invalid: Profile 'nope' not found"
    missing = await _refusal(monkeypatch, {"TEMPORAL_CONFIG_FILE": str(tmp_path / "none.toml")})
    assert missing == f"TEMPORAL_CONFIG_FILE names {tmp_path / 'none.toml'}, which is not a readable file"


@pytest.mark.usefixtures("clean_env")
def test_explicit_remedium_settings_win_then_temporal_env_then_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert connect_config(Settings.load()) == {"target_host": "localhost:7233", "namespace": "default"}

    monkeypatch.setenv("TEMPORAL_ADDRESS", "temporal.example.com:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "prod.a1b2c")
    monkeypatch.setenv("TEMPORAL_API_KEY", "key-from-env")
    from_sdk = connect_config(Settings.load())
    assert from_sdk["target_host"] == "temporal.example.com:7233"
    assert from_sdk["namespace"] == "prod.a1b2c"
    assert from_sdk.get("api_key") == "key-from-env" and from_sdk.get("tls") is True

    monkeypatch.setenv("REMEDIUM_TEMPORAL_ADDRESS", "ours.example.com:7233")
    monkeypatch.setenv("REMEDIUM_NAMESPACE", "remedium")
    ours = connect_config(Settings.load())
    assert ours["target_host"] == "ours.example.com:7233" and ours["namespace"] == "remedium"
    assert ours.get("api_key") == "key-from-env"  # how to connect still comes from the SDK's config

    # `remedium up` / `demo`: their own plain dev server, whatever TEMPORAL_* says.
    local = connect_config(embedded(Settings.load(), "127.0.0.1:7234"))
    assert local == {"target_host": "127.0.0.1:7234", "namespace": "remedium"}


@pytest.mark.usefixtures("clean_env")
async def test_embedded_dev_server_ignores_the_shells_cloud_settings(
    dev_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shell set up for Temporal Cloud still runs `remedium up`'s plain local dev server."""
    monkeypatch.setenv("TEMPORAL_API_KEY", "cloud-key")
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")
    client = await connect(embedded(Settings.load(), dev_address(dev_env)))
    assert client.namespace == "default"
    with pytest.raises(
        TemporalUnreachable, match=r"^cannot reach Temporal at 127\.0\.0\.1:1: connection refused"
    ):
        await connect(Settings.load())

"""The one place a Temporal client is built: any Temporal the SDK can reach, with our converter.

Where to connect and how follows the SDK's own environment configuration
(`temporalio.envconfig`): `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`,
`TEMPORAL_TLS*`, `TEMPORAL_PROFILE` and its TOML file (`TEMPORAL_CONFIG_FILE`, else
`~/.config/temporalio/temporal.toml`), so a worker is configured for Temporal Cloud or a
self-hosted cluster exactly as the `temporal` CLI is. `REMEDIUM_TEMPORAL_ADDRESS` and
`REMEDIUM_NAMESPACE`, when set, still win; neither set anywhere means `localhost:7233` and
`default`. The worker, the ingress, every CLI command and the demo all connect here.

`remedium up` and `remedium demo` run their own plain-gRPC dev server: `embedded()` marks
their settings so the TEMPORAL_* configuration (which describes the user's real cluster, and
may well be set in the same shell) is not applied to it.

A connection that fails says so in one sentence naming the address and what failed (refused,
a certificate the client does not trust, a missing client certificate, a rejected API key),
never a transport error chain, and never a secret.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.envconfig import ClientConfigProfile, ClientConnectConfig
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from remedium.codec import data_converter
from remedium.errors import TemporalUnreachable
from remedium.settings import Settings

DEFAULT_ADDRESS = "localhost:7233"


def embedded(settings: Settings, address: str) -> Settings:
    """Settings for a dev server we started ourselves: that address, plain gRPC, no TEMPORAL_*."""
    copy = settings.model_copy(update={"temporal_address": address})
    copy._embedded_temporal = True
    return copy


def connect_config(settings: Settings) -> ClientConnectConfig:
    """`Client.connect` arguments: the SDK's env/TOML profile, then explicit REMEDIUM_* on top."""
    if settings._embedded_temporal:
        return ClientConnectConfig(target_host=settings.temporal_address, namespace=settings.namespace)
    config_file = os.environ.get("TEMPORAL_CONFIG_FILE")
    if config_file and not Path(config_file).is_file():
        raise TemporalUnreachable(f"TEMPORAL_CONFIG_FILE names {config_file}, which is not a readable file")
    try:
        profile = ClientConfigProfile.load()
        config = profile.to_client_connect_config()
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise TemporalUnreachable(
            f"cannot read the file{where} named by the Temporal client configuration: "
            f"{(exc.strerror or str(exc)).lower()}"
        ) from None
    except RuntimeError as exc:  # the SDK core's ConfigError: unknown profile, bad TOML
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TemporalUnreachable(f"the Temporal client configuration is invalid: {first}") from None
    explicit = settings.model_fields_set
    if "temporal_address" in explicit or not config.get("target_host"):
        config["target_host"] = settings.temporal_address  # explicit, or the default localhost:7233
    if "namespace" in explicit or "namespace" not in config:
        config["namespace"] = settings.namespace
    return config


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    """A connected client; any failure becomes TemporalUnreachable with one clear sentence."""
    config = connect_config(settings)
    address = config.get("target_host", DEFAULT_ADDRESS)
    extra: dict[str, Any] = {"runtime": runtime} if runtime is not None else {}
    converter = data_converter(settings)  # a bad REMEDIUM_CODEC_KEYS keeps its own sentence
    try:
        return await Client.connect(**config, data_converter=converter, **extra)
    except Exception as exc:
        raise TemporalUnreachable(describe_failure(address, _Security.of(config), exc)) from None


@dataclass(frozen=True)
class _Security:
    """What the failed connection offered, so the sentence can say what was missing."""

    tls: bool
    server_name: str | None
    custom_ca: bool
    client_cert: bool
    api_key: bool
    namespace: str

    @classmethod
    def of(cls, config: ClientConnectConfig) -> _Security:
        tls = config.get("tls", False)
        details = tls if isinstance(tls, TLSConfig) else None
        return cls(
            tls=bool(tls),
            server_name=details.domain if details else None,
            custom_ca=bool(details and details.server_root_ca_cert),
            client_cert=bool(details and details.client_cert),
            api_key=bool(config.get("api_key")),
            namespace=config.get("namespace", "default"),
        )


def describe_failure(address: str, security: _Security, exc: BaseException) -> str:
    """One sentence: where, what failed, and the setting that fixes it."""
    text = str(exc)
    lowered = text.lower()
    security_reason = _security_reason(address, security, text, lowered)
    if security_reason is not None:
        return f"cannot connect to Temporal at {address}: {security_reason}"
    return (
        f"cannot reach Temporal at {address}: {_why(exc)} "
        "(is `remedium up` or your Temporal cluster running? "
        "REMEDIUM_TEMPORAL_ADDRESS or TEMPORAL_ADDRESS sets where to look)"
    )


def _grpc_message(text: str) -> str:
    found = re.search(r'message: "([^"]*)"', text)
    return found.group(1) if found else ""


def _security_reason(address: str, sec: _Security, text: str, lowered: str) -> str | None:
    """TLS, client certificate and API key failures, as the SDK's core (rustls, tonic) reports them."""
    name = sec.server_name or address.rpartition(":")[0].strip("[]")
    if "unknownissuer" in lowered:
        where = "the CA in TEMPORAL_TLS_SERVER_CA_CERT_PATH" if sec.custom_ca else "the system's CAs"
        return (
            f"the server's TLS certificate is not signed by a CA the client trusts ({where}); "
            "set TEMPORAL_TLS_SERVER_CA_CERT_PATH to the CA that signed it"
        )
    if "notvalidforname" in lowered:
        presented = re.findall(r'DnsName\(\\*"([^"\\]+)', text)
        names = ", ".join(presented) if presented else "other names"
        return (
            f"the server's TLS certificate is for {names}, not {name}; "
            "set TEMPORAL_TLS_SERVER_NAME to the name it was issued for"
        )
    if "expired" in lowered and "certificate" in lowered:
        return "the server's TLS certificate has expired"
    if (
        "certificaterequired" in lowered
        or "certificate required" in lowered
        or ("400 bad request" in lowered and sec.tls and not sec.client_cert)
    ):
        return (
            "the server requires a client certificate (mTLS) and none was given; "
            "set TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH"
        )
    if any(alert in lowered for alert in ("badcertificate", "unknownca", "certificateunknown")) or (
        "400 bad request" in lowered and sec.client_cert
    ):
        return (
            "the server refused the client certificate; it must be signed by a CA the server "
            "trusts (TEMPORAL_TLS_CLIENT_CERT_PATH, TEMPORAL_TLS_CLIENT_KEY_PATH)"
        )
    if sec.tls and ("invalidcontenttype" in lowered or "corrupt message" in lowered):
        return (
            "the server does not speak TLS there; unset TEMPORAL_TLS (and TEMPORAL_API_KEY) or check the port"
        )
    # A TLS port read as plain HTTP/2: a TLS alert parsed as a frame, or the connection dropped.
    if not sec.tls and ("frame_size_error" in lowered or "operation was canceled" in lowered):
        return (
            "the server does not answer plain gRPC there, as a TLS port would not; "
            "set TEMPORAL_TLS=true if it expects TLS (an API key turns it on too)"
        )
    detail = _grpc_message(text)
    detail = f" ({detail})" if detail else ""
    if "code: unauthenticated" in lowered:
        if sec.api_key:
            return f"the server rejected the API key{detail}; check TEMPORAL_API_KEY"
        return f"the server requires authentication{detail}; set TEMPORAL_API_KEY or a client certificate"
    if "code: permissiondenied" in lowered:
        return (
            f"permission denied{detail}: the API key or client certificate has no access to "
            f"namespace {sec.namespace!r}"
        )
    return None


def _why(exc: BaseException) -> str:
    """The SDK's Rust core reports a chain of transport errors; say what it amounts to."""
    text = str(exc)
    lowered = text.lower()
    for needle, reason in _REASONS:
        if needle in lowered:
            return reason
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if len(first) <= 200 else first[:200] + "…"


_REASONS = (
    ("connection refused", "connection refused"),
    ("dns error", "the host name does not resolve"),
    ("failed to lookup address", "the host name does not resolve"),
    ("timed out", "no answer before the timeout"),
    ("connection reset", "the connection was reset"),
    ("invalid uri", "the address is not host:port"),
)

"""The data converter every Temporal connection uses, with optional AES-GCM payload encryption.

Alert text, logs, facts and reports cross Temporal as payloads, and Temporal keeps every one of
them in the incident's history. With `REMEDIUM_CODEC_KEYS` set, each payload is encrypted before
it leaves the process (worker, ingress, CLI) and decrypted when it comes back, so the history on
the server holds only ciphertext; `remedium codec-server` lets the Temporal UI decrypt it for an
operator. Failure messages and stack traces are moved into the encrypted part too (the SDK's
"encoded attributes"), since an error can quote an alert. Search attributes stay readable: the
server indexes them (service, severity, stage, runbook), so they are never encrypted.

Keys: `id:base64key,id:base64key`. The first encrypts; all decrypt, so a new key goes first and
the old one stays listed until no history that needs it is kept. Each payload names its key id
in its metadata (`encryption-key-id`) and carries a random 12-byte nonce before its ciphertext.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

from remedium.errors import CodecConfigError, CodecKeyError
from remedium.settings import Settings

if TYPE_CHECKING:
    # Imported where used: a module defining a workflow that imports this one (through
    # remedium.connection) is re-imported by the workflow sandbox, which cryptography's native
    # bindings do not survive ("SystemError: bad argument to internal function").
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
NONCE_BYTES = 12
KEY_SIZES = (16, 24, 32)
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
GENERATE_HINT = "python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())'"


@dataclass(frozen=True)
class Keyring:
    """The configured keys by id; `current` is the one new payloads are encrypted with."""

    current: str
    keys: dict[str, AESGCM]

    @property
    def ids(self) -> list[str]:
        return list(self.keys)


def parse_keys(text: str) -> Keyring:
    """`id:base64key,...` -> Keyring, or CodecConfigError naming the entry (never the key)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    keys: dict[str, AESGCM] = {}
    for position, entry in enumerate((part.strip() for part in text.split(",")), start=1):
        if not entry:
            continue
        key_id, sep, encoded = entry.partition(":")
        key_id = key_id.strip()
        if not sep or not _KEY_ID.fullmatch(key_id):
            raise CodecConfigError(
                f"REMEDIUM_CODEC_KEYS entry {position} is not id:base64key "
                "(an id of letters, digits, '.', '_' or '-', then ':' and the key in base64)"
            )
        if key_id in keys:
            raise CodecConfigError(f"REMEDIUM_CODEC_KEYS lists key id {key_id!r} twice")
        raw = _decode_key(key_id, encoded.strip())
        if len(raw) not in KEY_SIZES:
            raise CodecConfigError(
                f"REMEDIUM_CODEC_KEYS key {key_id!r} is {len(raw)} bytes; AES-GCM needs 32 "
                f"(AES-256), 24 or 16: generate one with {GENERATE_HINT}"
            )
        keys[key_id] = AESGCM(raw)
    if not keys:
        raise CodecConfigError("REMEDIUM_CODEC_KEYS is set but names no key (id:base64key,...)")
    return Keyring(current=next(iter(keys)), keys=keys)


def _decode_key(key_id: str, encoded: str) -> bytes:
    """Standard or URL-safe base64, padding optional."""
    normalized = encoded.replace("-", "+").replace("_", "/")
    normalized += "=" * (-len(normalized) % 4)
    try:
        return base64.b64decode(normalized, validate=True)
    except (binascii.Error, ValueError):
        raise CodecConfigError(f"REMEDIUM_CODEC_KEYS key {key_id!r} is not valid base64") from None


class EncryptionCodec(PayloadCodec):
    """AES-GCM over each whole serialized payload (its metadata included), one nonce per payload.

    The key id is the associated data, so a payload cannot be relabelled to another key.
    Payloads that are not encrypted pass through `decode` unchanged: histories recorded before
    encryption was switched on stay readable.
    """

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        key_id = self.keyring.current
        key = self.keyring.keys[key_id]
        out: list[Payload] = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            sealed = key.encrypt(nonce, payload.SerializeToString(), key_id.encode())
            out.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()},
                    data=nonce + sealed,
                )
            )
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode("utf-8", "replace")
        key = self.keyring.keys.get(key_id)
        if key is None:
            raise CodecKeyError(
                f"a payload is encrypted with key id {key_id!r}, which REMEDIUM_CODEC_KEYS does not "
                f"list (it lists {', '.join(self.keyring.ids)}): add that key back to read it"
            )
        from cryptography.exceptions import InvalidTag

        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            plain = key.decrypt(nonce, sealed, key_id.encode())
        except InvalidTag:
            raise CodecKeyError(
                f"a payload encrypted with key id {key_id!r} does not decrypt with the configured key "
                "of that id (a different key under the same id, or altered data)"
            ) from None
        decoded = Payload()
        decoded.ParseFromString(plain)
        return decoded


def codec_for(settings: Settings) -> EncryptionCodec | None:
    """The codec the settings configure, or None without REMEDIUM_CODEC_KEYS."""
    if settings.codec_keys is None or not settings.codec_keys.get_secret_value().strip():
        return None
    return EncryptionCodec(parse_keys(settings.codec_keys.get_secret_value()))


def data_converter(settings: Settings | None = None) -> DataConverter:
    """pydantic_data_converter, encrypting payloads and failure text when keys are configured."""
    codec = codec_for(settings) if settings is not None else None
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )

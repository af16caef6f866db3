"""AES-GCM payload encryption for Temporal, so workflow history holds no readable child data.

The shape follows Temporal's `encryption` sample: each payload is serialised, encrypted with
AES-256-GCM under the current key and tagged with that key's id in its metadata. Old keys
stay listed so history written under them still decrypts (rotation). Workflow ids and search
attributes are never encrypted, so they must never hold personal data.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12


def parse_keys(text: str) -> dict[str, bytes]:
    """Keys from `id:base64key[,id:base64key...]`; the first is current, the rest only decrypt.

    Raises ValueError with a one-line reason.
    """
    keys: dict[str, bytes] = {}
    for item in (part.strip() for part in text.split(",")):
        key_id, sep, encoded = item.partition(":")
        if not sep or not key_id or not encoded:
            raise ValueError("give id:base64key, comma-separated, the current key first")
        try:
            key = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise ValueError(f"key {key_id!r} is not base64") from None
        if len(key) != 32:
            raise ValueError(f"key {key_id!r} must be 32 bytes (AES-256)")
        if key_id in keys:
            raise ValueError(f"key id {key_id!r} is listed twice")
        keys[key_id] = key
    return keys


def derived_keys(secret: str) -> dict[str, bytes]:
    """One key derived from REFERRALS_SECRET_KEY (HKDF-SHA256) when no encryption key is configured."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"referral-tracker payloads").derive(
        secret.encode()
    )
    return {f"derived-{hashlib.sha256(key).hexdigest()[:8]}": key}


class EncryptionCodec(PayloadCodec):
    """Encrypts with the current key; decrypts with whichever key a payload names."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current = next(iter(keys))

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt each payload under the current key."""
        cipher = self._ciphers[self.current]
        out = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            sealed = nonce + cipher.encrypt(nonce, payload.SerializeToString(), None)
            out.append(Payload(metadata={"encoding": ENCODING, KEY_ID: self.current.encode()}, data=sealed))
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt payloads this codec encrypted; pass others through unchanged."""
        out = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                out.append(payload)
                continue
            key_id = payload.metadata.get(KEY_ID, b"").decode()
            cipher = self._ciphers.get(key_id)
            if cipher is None:
                raise ValueError(f"payload encrypted with unknown key {key_id!r}: add it to the old keys")
            try:
                plain = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], None)
            except InvalidTag:
                raise ValueError(f"payload under key {key_id!r} failed authentication") from None
            out.append(Payload.FromString(plain))
        return out


def data_converter(*, encryption_key: str | None, secret: str) -> DataConverter:
    """pydantic payloads, encrypted; failure messages and stack traces encrypted too."""
    keys = parse_keys(encryption_key) if encryption_key else derived_keys(secret)
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keys),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )

"""The AES-GCM payload codec: round trips, key ids, rotation, tampering."""

from __future__ import annotations

import base64

import pytest
from temporalio.api.common.v1 import Payload

from codec import ENCODING, KEY_ID, EncryptionCodec, data_converter, derived_keys, parse_keys
from config import ConfigError, load_settings

KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()


def plain(text: str) -> Payload:
    """A JSON payload as the pydantic converter would make it."""
    return Payload(metadata={"encoding": b"json/plain"}, data=text.encode())


class TestCodec:
    """Encrypt under the current key; decrypt under whichever key a payload names."""

    async def test_round_trip_hides_the_plaintext(self) -> None:
        codec = EncryptionCodec(parse_keys(f"k1:{KEY_A}"))
        sealed = await codec.encode([plain('{"family_name": "Quixotic"}')])
        assert sealed[0].metadata["encoding"] == ENCODING
        assert sealed[0].metadata[KEY_ID] == b"k1"
        assert b"Quixotic" not in sealed[0].SerializeToString()
        assert (await codec.decode(sealed))[0].data == b'{"family_name": "Quixotic"}'

    async def test_same_plaintext_encrypts_differently(self) -> None:
        codec = EncryptionCodec(parse_keys(f"k1:{KEY_A}"))
        first, second = await codec.encode([plain("x"), plain("x")])
        assert first.data != second.data

    async def test_rotation_old_keys_still_decrypt(self) -> None:
        old = EncryptionCodec(parse_keys(f"k1:{KEY_A}"))
        rotated = EncryptionCodec(parse_keys(f"k2:{KEY_B},k1:{KEY_A}"))
        written_before = await old.encode([plain("history")])
        assert (await rotated.decode(written_before))[0].data == b"history"
        assert (await rotated.encode([plain("new")]))[0].metadata[KEY_ID] == b"k2"

    async def test_unknown_key_and_tampering_are_refused(self) -> None:
        codec = EncryptionCodec(parse_keys(f"k1:{KEY_A}"))
        other = EncryptionCodec(parse_keys(f"k9:{KEY_B}"))
        with pytest.raises(ValueError, match="unknown key"):
            await other.decode(await codec.encode([plain("x")]))
        sealed = (await codec.encode([plain("x")]))[0]
        forged = Payload(metadata=sealed.metadata, data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))
        with pytest.raises(ValueError, match="authentication"):
            await codec.decode([forged])

    async def test_unencrypted_payloads_pass_through(self) -> None:
        codec = EncryptionCodec(parse_keys(f"k1:{KEY_A}"))
        assert (await codec.decode([plain("old")]))[0].data == b"old"

    async def test_data_converter_round_trips_a_model(self) -> None:
        from tests.conftest import sample_details

        converter = data_converter(encryption_key=None, secret="s" * 40)
        payloads = await converter.encode([sample_details()])
        assert b"Quixotic" not in payloads[0].SerializeToString()
        (back,) = await converter.decode(payloads, [type(sample_details())])
        assert back == sample_details()


class TestKeys:
    """Configuration of keys: one line on error, derived from the secret by default."""

    @pytest.mark.parametrize(
        "value",
        ["nokey", f"k1:{KEY_A},k1:{KEY_B}", "k1:not-base64!", f"k1:{base64.b64encode(b'short').decode()}"],
    )
    def test_bad_keys_refused_at_start(self, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REFERRALS_ENCRYPTION_KEY", value)
        with pytest.raises(ConfigError, match="REFERRALS_ENCRYPTION_KEY"):
            load_settings()

    def test_derived_key_is_stable_and_secret_specific(self) -> None:
        assert derived_keys("s" * 40) == derived_keys("s" * 40)
        assert derived_keys("s" * 40) != derived_keys("t" * 40)
        (key,) = derived_keys("s" * 40).values()
        assert len(key) == 32

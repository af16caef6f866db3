"""temporal_connection: which TLS and API key arguments the settings give `Client.connect`, and the
one-line configuration errors for files that cannot be used."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from config import ConfigError, Settings, load_settings
from temporal_connection import client_options

PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_plain_by_default() -> None:
    assert client_options(Settings()) == {}
    assert not Settings().temporal_tls_enabled


def test_tls_with_the_systems_roots() -> None:
    options = client_options(Settings(temporal_tls=True))
    assert options == {"tls": TLSConfig()}


def test_mutual_tls_reads_each_file_into_its_place(tmp_path: Path) -> None:
    for name in ["ca", "cert", "key"]:
        (tmp_path / f"{name}.pem").write_bytes(PEM.replace(b"MIIB", name.encode()))
    settings = Settings(
        temporal_tls_ca_file=tmp_path / "ca.pem",
        temporal_tls_cert_file=tmp_path / "cert.pem",
        temporal_tls_key_file=tmp_path / "key.pem",
        temporal_tls_server_name="temporal.council.example",
    )
    tls = client_options(settings)["tls"]
    assert isinstance(tls, TLSConfig)
    assert tls.server_root_ca_cert is not None and b"ca" in tls.server_root_ca_cert
    assert tls.client_cert is not None and b"cert" in tls.client_cert
    assert tls.client_private_key is not None and b"key" in tls.client_private_key
    assert tls.domain == "temporal.council.example"


def test_an_api_key_turns_tls_on() -> None:
    settings = Settings(temporal_api_key="  key-from-temporal-cloud  ")
    assert settings.temporal_tls_enabled
    assert client_options(settings) == {"tls": TLSConfig(), "api_key": "key-from-temporal-cloud"}


def test_a_blank_api_key_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFERRALS_TEMPORAL_API_KEY", " ")
    assert client_options(load_settings()) == {}


def test_a_certificate_without_its_key_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REFERRALS_TEMPORAL_TLS_CERT_FILE", str(tmp_path / "cert.pem"))
    with pytest.raises(
        ConfigError, match="REFERRALS_TEMPORAL_TLS_CERT_FILE and REFERRALS_TEMPORAL_TLS_KEY_FILE"
    ):
        load_settings()


def test_a_missing_file_names_its_variable(tmp_path: Path) -> None:
    settings = Settings(temporal_tls_ca_file=tmp_path / "nowhere.pem")
    with pytest.raises(ConfigError, match=r"^REFERRALS_TEMPORAL_TLS_CA_FILE: cannot read .*nowhere\.pem"):
        client_options(settings)


def test_a_file_that_is_not_pem_names_its_variable(tmp_path: Path) -> None:
    (tmp_path / "key.der").write_bytes(b"\x30\x82\x01\x0a")
    (tmp_path / "cert.pem").write_bytes(PEM)
    settings = Settings(
        temporal_tls_cert_file=tmp_path / "cert.pem", temporal_tls_key_file=tmp_path / "key.der"
    )
    with pytest.raises(ConfigError, match=r"^REFERRALS_TEMPORAL_TLS_KEY_FILE: .*key\.der is not a PEM file"):
        client_options(settings)

"""How the API and the worker reach the Temporal frontend: plain, TLS, mutual TLS or an API key.

A self-hosted frontend on a private network may be plain TCP (the compose file's); one with TLS
needs `REFERRALS_TEMPORAL_TLS=true` (the system's roots) or `REFERRALS_TEMPORAL_TLS_CA_FILE`
(a private CA); mutual TLS, as Temporal Cloud's certificate authentication, adds
`REFERRALS_TEMPORAL_TLS_CERT_FILE` and `REFERRALS_TEMPORAL_TLS_KEY_FILE`; Temporal Cloud's API
keys are `REFERRALS_TEMPORAL_API_KEY` (TLS on by itself). The files are read when the process
connects, and a file that cannot be read is a one-line configuration error naming its variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from temporalio.service import TLSConfig

from config import ConfigError, Settings


def _read(variable: str, path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"REFERRALS_{variable}: cannot read {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"REFERRALS_{variable}: {path} is not a PEM file")
    return data


def client_options(settings: Settings) -> dict[str, Any]:
    """The `tls` and `api_key` arguments of `Client.connect` for these settings ({} when plain)."""
    options: dict[str, Any] = {}
    if settings.temporal_tls_enabled:
        options["tls"] = TLSConfig(
            server_root_ca_cert=_read("TEMPORAL_TLS_CA_FILE", settings.temporal_tls_ca_file),
            client_cert=_read("TEMPORAL_TLS_CERT_FILE", settings.temporal_tls_cert_file),
            client_private_key=_read("TEMPORAL_TLS_KEY_FILE", settings.temporal_tls_key_file),
            domain=settings.temporal_tls_server_name,
        )
    if settings.temporal_api_key is not None:
        options["api_key"] = settings.temporal_api_key
    return options

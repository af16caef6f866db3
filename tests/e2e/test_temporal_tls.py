"""TLS and mutual TLS to the Temporal frontend: the worker's and the API's clients go through a real
TLS endpoint (an asyncio TLS terminator with ALPN h2 in front of the dev server, which has no TLS
of its own), and a client without the settings it needs is refused by the handshake."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api import create_app
from config import Settings
from tests.api.conftest import free_port, serve
from tests.conftest import TEMPORAL_CLI
from worker import connect

pytestmark = pytest.mark.slow

SERVER_NAME = "temporal.referrals.test"
SECRET = "tls-test-secret-" + "s" * 32


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    names: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A private CA, the frontend's certificate, a client certificate it signed, and a stranger's."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("referrals test CA", ca_key, None, ca=True)
    files: dict[str, bytes] = {"ca.pem": ca.public_bytes(serialization.Encoding.PEM)}
    names: list[x509.GeneralName] = [
        x509.DNSName(SERVER_NAME),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    for stem, subject, issuer, san in [
        ("server", SERVER_NAME, (ca, ca_key), names),
        ("client", "referrals worker", (ca, ca_key), None),
        ("stranger", "somebody else", None, None),
    ]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(subject, key, issuer, names=san)
        files[f"{stem}.pem"] = cert.public_bytes(serialization.Encoding.PEM)
        files[f"{stem}-key.pem"] = _pem(key)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return Pki(*(folder / n for n in ["ca.pem", "server.pem", "server-key.pem", "client.pem",
                                      "client-key.pem", "stranger.pem", "stranger-key.pem"]))  # fmt: skip


@dataclass
class Terminator:
    address: str
    handshakes: int = 0


@pytest_asyncio.fixture(scope="module")
async def frontend(pki: Pki) -> AsyncIterator[Terminator]:
    """The dev server behind a TLS terminator that requires a client certificate from the CA."""
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_CLI),
        data_converter=pydantic_data_converter,
        ip="127.0.0.1",
        port=free_port(),
    ) as env:
        upstream_host, upstream_port = env.client.service_client.config.target_host.rsplit(":", 1)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki.server_cert, pki.server_key)
        context.load_verify_locations(pki.ca)
        context.verify_mode = ssl.CERT_REQUIRED
        context.set_alpn_protocols(["h2"])
        port = free_port()
        terminator = Terminator(f"127.0.0.1:{port}")

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            with contextlib.suppress(Exception):
                writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # Called only once the handshake, client certificate included, has succeeded.
            terminator.handshakes += 1
            up_reader, up_writer = await asyncio.open_connection(upstream_host, int(upstream_port))
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=context)
        async with server:
            yield terminator


def _settings(frontend: Terminator, tmp_path: Path, **tls: object) -> Settings:
    return Settings(
        temporal_address=frontend.address,
        database_url=f"sqlite:///{tmp_path / 'read-model.db'}",
        secret_key=SECRET,
        **tls,  # type: ignore[arg-type]
    )


def _mutual_tls(frontend: Terminator, pki: Pki, tmp_path: Path) -> Settings:
    """Everything the frontend requires: its CA, the client's certificate and key, its name."""
    return _settings(
        frontend,
        tmp_path,
        temporal_tls_ca_file=pki.ca,
        temporal_tls_cert_file=pki.client_cert,
        temporal_tls_key_file=pki.client_key,
        temporal_tls_server_name=SERVER_NAME,
    )


async def test_the_worker_connects_with_mutual_tls(frontend: Terminator, pki: Pki, tmp_path: Path) -> None:
    before = frontend.handshakes
    settings = _mutual_tls(frontend, pki, tmp_path)
    client = await connect(settings, secret=SECRET)
    assert await client.count_workflows() is not None
    assert frontend.handshakes > before


@pytest.mark.parametrize(
    "tls",
    [
        pytest.param({}, id="plain TCP"),
        pytest.param({"temporal_tls_ca_file": "ca"}, id="TLS without a client certificate"),
        pytest.param(
            {
                "temporal_tls_ca_file": "ca",
                "temporal_tls_cert_file": "stranger",
                "temporal_tls_key_file": "stranger-key",
            },
            id="a certificate the frontend's CA did not sign",
        ),
        pytest.param(
            {"temporal_tls": True, "temporal_tls_cert_file": "client", "temporal_tls_key_file": "client-key"},
            id="the system's roots, which do not hold the private CA",
        ),
    ],
)
async def test_a_client_without_what_the_frontend_requires_is_refused(
    frontend: Terminator, pki: Pki, tmp_path: Path, tls: dict[str, object]
) -> None:
    files = {"ca": pki.ca, "client": pki.client_cert, "client-key": pki.client_key,
             "stranger": pki.stranger_cert, "stranger-key": pki.stranger_key}  # fmt: skip
    resolved = {k: files[v] if isinstance(v, str) else v for k, v in tls.items()}
    before = frontend.handshakes
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(connect(_settings(frontend, tmp_path, **resolved), secret=SECRET), 30)
    assert frontend.handshakes == before


async def test_the_api_reaches_temporal_through_mutual_tls(
    frontend: Terminator, pki: Pki, tmp_path: Path
) -> None:
    good = _mutual_tls(frontend, pki, tmp_path)
    async with serve(create_app(good, secret=SECRET)) as http:
        ready = (await http.get("/readyz")).json()
    assert ready["checks"]["temporal"] == "ok", ready

    without_certificate = _settings(
        frontend, tmp_path, temporal_tls_ca_file=pki.ca, temporal_tls_server_name=SERVER_NAME
    )
    async with serve(create_app(without_certificate, secret=SECRET)) as http:
        response: httpx.Response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["temporal"] != "ok"

"""`referrals codec-server` as a real process: Temporal's remote codec protocol, operators only, CORS.

The server runs with two keys (k2 current, k1 old) against a read model holding a manager,
an admin, a police officer and a revoked manager token; requests are real HTTP from httpx,
and one test has the Temporal CLI itself decode a workflow's history through it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import REFERRALS, SECRET_KEY, TemporalServer, base_env, free_port, run_cli, tail
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.client import Client

from codec import ENCODING, KEY_ID, EncryptionCodec, data_converter, parse_keys
from devserver import temporal_binary
from tests.conftest import sample_details

pytestmark = pytest.mark.slow

KEY_OLD = base64.b64encode(b"o" * 32).decode()
KEY_NEW = base64.b64encode(b"n" * 32).decode()
ROTATED = f"k2:{KEY_NEW},k1:{KEY_OLD}"
UI = "http://localhost:8233"


def cli_env(**values: str) -> dict[str, str]:
    """The environment of a `referrals` process."""
    return base_env(**values)


@dataclass
class CodecServer:
    """A running `referrals codec-server` and its output files."""

    process: subprocess.Popen[bytes]
    url: str
    stderr_path: Path

    def log(self) -> str:
        """What it has logged so far."""
        return self.stderr_path.read_text(errors="replace")


def start_codec_server(folder: Path, env: dict[str, str], *args: str) -> Iterator[CodecServer]:
    """Start the server on a free loopback port, wait until it answers, stop it afterwards."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    stdout, stderr = folder / "codec.stdout", folder / "codec.stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [REFERRALS, "codec-server", "--port", str(port), *args],
            env=env,
            cwd=folder,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    server = CodecServer(process, f"http://127.0.0.1:{port}", stderr)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"codec-server exited with {process.returncode}:\n{tail(stderr, 40)}")
            try:
                httpx.post(f"{server.url}/decode", json={"payloads": []}, timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail(f"codec-server did not answer within 30 s:\n{tail(stderr, 40)}")
                time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@dataclass
class ReadModel:
    """A migrated SQLite read model with a token per kind of caller."""

    env: dict[str, str]
    tokens: dict[str, str]


def create_user(env: dict[str, str], cwd: Path, role: str, email: str, *extra: str) -> tuple[str, str]:
    """(token id, token) of a new user made by `referrals users create`."""
    result = run_cli(["users", "create", "--role", role, "--name", role, "--email", email, *extra], env, cwd)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    token_id = next(line for line in lines if line.startswith("token id=")).split()[1].removeprefix("id=")
    return token_id, lines[-1]


@pytest.fixture(scope="module")
def read_model(tmp_path_factory: pytest.TempPathFactory) -> ReadModel:
    """Users: manager, admin, police, and a manager whose token has been revoked."""
    folder = tmp_path_factory.mktemp("codec-read-model")
    env = cli_env(
        REFERRALS_DATA_DIR=str(folder / "data"),
        REFERRALS_DATABASE_URL=f"sqlite:///{folder / 'read-model.db'}",
        REFERRALS_SECRET_KEY=SECRET_KEY,
    )
    assert run_cli(["migrate"], env, folder).returncode == 0
    tokens = {
        "manager": create_user(env, folder, "manager", "manager@council.example")[1],
        "admin": create_user(env, folder, "admin", "admin@council.example")[1],
        "police": create_user(env, folder, "police", "pc@police.example", "--force", "Cumbria")[1],
    }
    revoked_id, tokens["revoked"] = create_user(env, folder, "manager", "gone@council.example")
    assert run_cli(["users", "revoke", revoked_id], env, folder).returncode == 0
    return ReadModel(env, tokens)


@pytest.fixture(scope="module")
def server(read_model: ReadModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CodecServer]:
    """The codec server with rotated keys, operators only, CORS for the Temporal UI."""
    env = {**read_model.env, "REFERRALS_ENCRYPTION_KEY": ROTATED}
    yield from start_codec_server(tmp_path_factory.mktemp("codec"), env, "--cors-origin", UI)


def as_json(payloads: list[Payload]) -> dict[str, Any]:
    """The protocol's request body."""
    return {"payloads": [json_format.MessageToDict(p) for p in payloads]}


def from_json(body: dict[str, Any]) -> list[Payload]:
    """Payloads out of the protocol's response body."""
    return [json_format.ParseDict(p, Payload()) for p in body["payloads"]]


def auth(token: str) -> dict[str, str]:
    """An Authorization header."""
    return {"Authorization": f"Bearer {token}"}


def post(
    server: CodecServer, path: str, body: Any, token: str | None = None, **headers: str
) -> httpx.Response:
    """One POST to the codec server."""
    all_headers = {**(auth(token) if token else {}), **headers}
    if isinstance(body, bytes):
        return httpx.post(server.url + path, content=body, headers=all_headers, timeout=10)
    return httpx.post(server.url + path, json=body, headers=all_headers, timeout=10)


def error_code(response: httpx.Response, status: int) -> str:
    """The API's error shape with this status; its code."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "fields"}
    return str(error["code"])


PLAIN = [
    Payload(metadata={"encoding": b"json/plain"}, data=b'{"family_name": "Quixotic"}'),
    Payload(metadata={"encoding": b"binary/plain", "extra": b"\x00\xff"}, data=bytes(range(256))),
    Payload(metadata={"encoding": b"binary/null"}),
]


class TestProtocol:
    """Encode and decode with the worker's codec: current key, old keys, the worker's own payloads."""

    def test_round_trip(self, server: CodecServer, read_model: ReadModel) -> None:
        encoded = post(server, "/encode", as_json(PLAIN), read_model.tokens["manager"])
        assert encoded.status_code == 200, encoded.text
        sealed = from_json(encoded.json())
        assert len(sealed) == 3
        for payload in sealed:
            assert payload.metadata["encoding"] == ENCODING and payload.metadata[KEY_ID] == b"k2"
            assert b"Quixotic" not in payload.data
        decoded = post(server, "/decode", encoded.json(), read_model.tokens["admin"])
        assert decoded.status_code == 200, decoded.text
        assert from_json(decoded.json()) == PLAIN

    async def test_the_workers_payloads_decode_to_plaintext_json(
        self, server: CodecServer, read_model: ReadModel
    ) -> None:
        # Exactly what the worker and the API write to history.
        converter = data_converter(encryption_key=ROTATED, secret=SECRET_KEY)
        details = sample_details()
        written = await converter.encode([details])
        assert b"Quixotic" not in written[0].SerializeToString()
        response = post(server, "/decode", as_json(written), read_model.tokens["manager"])
        assert response.status_code == 200, response.text
        (payload,) = from_json(response.json())
        assert payload.metadata["encoding"] == b"json/plain"
        assert json.loads(payload.data) == details.model_dump(mode="json")

    async def test_a_payload_under_an_old_key_still_decodes(
        self, server: CodecServer, read_model: ReadModel
    ) -> None:
        before_rotation = EncryptionCodec(parse_keys(f"k1:{KEY_OLD}"))
        written = await before_rotation.encode(PLAIN[:1])
        assert written[0].metadata[KEY_ID] == b"k1"
        response = post(server, "/decode", as_json(written), read_model.tokens["manager"])
        assert response.status_code == 200, response.text
        assert from_json(response.json()) == PLAIN[:1]

    async def test_unknown_key_and_tampering_are_refused(
        self, server: CodecServer, read_model: ReadModel
    ) -> None:
        stranger = await EncryptionCodec(parse_keys(f"k9:{KEY_OLD}")).encode(PLAIN[:1])
        response = post(server, "/decode", as_json(stranger), read_model.tokens["manager"])
        assert error_code(response, 422) == "undecodable" and "k9" in response.text
        sealed = await EncryptionCodec(parse_keys(ROTATED)).encode(PLAIN[:1])
        forged = Payload(metadata=sealed[0].metadata, data=sealed[0].data[:-1] + b"\x00")
        response = post(server, "/decode", as_json([forged]), read_model.tokens["manager"])
        assert error_code(response, 422) == "undecodable"

    def test_unencrypted_payloads_pass_through_and_empty_lists_work(
        self, server: CodecServer, read_model: ReadModel
    ) -> None:
        response = post(server, "/decode", as_json(PLAIN), read_model.tokens["manager"])
        assert from_json(response.json()) == PLAIN
        response = post(server, "/decode", {"payloads": []}, read_model.tokens["manager"])
        assert response.status_code == 200 and response.json() == {"payloads": []}

    def test_namespace_in_the_path(self, server: CodecServer, read_model: ReadModel) -> None:
        # The Temporal CLI's --codec-endpoint may hold {namespace}.
        encoded = post(server, "/default/encode", as_json(PLAIN[:1]), read_model.tokens["manager"])
        assert encoded.status_code == 200, encoded.text
        decoded = post(server, "/default/decode", encoded.json(), read_model.tokens["manager"])
        assert from_json(decoded.json()) == PLAIN[:1]

    @pytest.mark.parametrize(
        "body",
        [
            b"not json",
            b"\xff\xfe",
            b"[]",
            b'{"payloads": [{"data": "***not base64***"}]}',
            b'{"payloads": [{"metadata": {"encoding": 5}}]}',
            b'{"payloads": {}}',
            b'{"other": []}',
            b"[" * 100_000,
        ],
    )
    def test_malformed_bodies_are_400(self, server: CodecServer, read_model: ReadModel, body: bytes) -> None:
        response = post(server, "/decode", body, read_model.tokens["manager"])
        assert error_code(response, 400) == "invalid"

    def test_other_methods_and_paths(self, server: CodecServer, read_model: ReadModel) -> None:
        response = httpx.get(server.url + "/decode", headers=auth(read_model.tokens["manager"]))
        assert error_code(response, 405) == "method_not_allowed"
        response = post(server, "/a/b/decode", {"payloads": []}, read_model.tokens["manager"])
        assert error_code(response, 404) == "not_found"

    def test_each_request_is_logged_without_contents(
        self, server: CodecServer, read_model: ReadModel
    ) -> None:
        encoded = post(server, "/encode", as_json(PLAIN), read_model.tokens["manager"]).json()
        post(server, "/decode", encoded, read_model.tokens["admin"], **{"X-Namespace": "default"})
        time.sleep(0.2)
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        decodes = [line for line in lines if line.get("event") == "codec.decode"]
        assert any(
            line["user"] == "admin@council.example"
            and line["payloads"] == 3
            and line["namespace"] == "default"
            for line in decodes
        ), decodes
        assert "Quixotic" not in server.log()
        for token in read_model.tokens.values():
            assert token not in server.log()


class TestOperatorsOnly:
    """A manager's or admin's API token; anything else is refused."""

    @pytest.mark.parametrize("path", ["/decode", "/encode", "/default/decode"])
    def test_no_or_bad_token_is_401(self, server: CodecServer, read_model: ReadModel, path: str) -> None:
        for headers in (
            {},
            {"Authorization": "Basic x"},
            auth("rt_nonsense"),
            auth(read_model.tokens["revoked"]),
        ):
            response = httpx.post(server.url + path, json=as_json(PLAIN), headers=headers, timeout=10)
            assert error_code(response, 401) == "unauthorized"
            assert response.headers["WWW-Authenticate"] == "Bearer"

    @pytest.mark.parametrize("path", ["/decode", "/encode"])
    def test_police_token_is_403(self, server: CodecServer, read_model: ReadModel, path: str) -> None:
        response = post(server, path, as_json(PLAIN), read_model.tokens["police"])
        assert error_code(response, 403) == "forbidden"

    def test_authentication_comes_before_parsing(self, server: CodecServer) -> None:
        assert error_code(post(server, "/decode", b"not json"), 401) == "unauthorized"


class TestCors:
    """The Temporal UI's origin may call from a browser, with its headers; no other origin may."""

    def preflight(self, server: CodecServer, origin: str) -> httpx.Response:
        return httpx.options(
            server.url + "/decode",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
            },
            timeout=10,
        )

    def test_preflight_for_the_configured_origin(self, server: CodecServer) -> None:
        response = self.preflight(server, UI)
        assert response.status_code == 200, response.text
        assert response.headers["access-control-allow-origin"] == UI
        assert "POST" in response.headers["access-control-allow-methods"]
        allowed = response.headers["access-control-allow-headers"].lower()
        assert {"authorization", "content-type", "x-namespace"} <= {h.strip() for h in allowed.split(",")}
        assert response.headers["access-control-allow-credentials"] == "true"

    @pytest.mark.parametrize("origin", ["http://evil.example", "http://localhost:8234", "null"])
    def test_no_preflight_for_another_origin(self, server: CodecServer, origin: str) -> None:
        response = self.preflight(server, origin)
        assert "access-control-allow-origin" not in response.headers
        assert response.status_code >= 400

    def test_responses_carry_cors_headers_for_the_ui_only(
        self, server: CodecServer, read_model: ReadModel
    ) -> None:
        ok = post(server, "/decode", {"payloads": []}, read_model.tokens["manager"], Origin=UI)
        assert ok.headers["access-control-allow-origin"] == UI
        # The UI must be able to read a refusal too, to show why.
        refused = post(server, "/decode", {"payloads": []}, None, Origin=UI)
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == UI
        other = post(
            server, "/decode", {"payloads": []}, read_model.tokens["manager"], Origin="http://evil.example"
        )
        assert "access-control-allow-origin" not in other.headers


class TestStartUp:
    """--no-auth only on loopback; the key derived from the secret; refusals in one line."""

    async def test_no_auth_on_loopback_with_the_derived_key(
        self, read_model: ReadModel, tmp_path: Path
    ) -> None:
        env = {k: v for k, v in read_model.env.items() if k != "REFERRALS_ENCRYPTION_KEY"}
        # The worker's default: no encryption key configured, one derived from the secret.
        written = await data_converter(encryption_key=None, secret=SECRET_KEY).encode([sample_details()])
        for server in start_codec_server(tmp_path, env, "--no-auth", "--host", "127.0.0.1"):
            response = post(server, "/decode", as_json(written))
            assert response.status_code == 200, response.text
            (payload,) = from_json(response.json())
            assert json.loads(payload.data) == sample_details().model_dump(mode="json")
            await asyncio.sleep(0.2)
            assert "anonymous (--no-auth)" in server.log()

    @pytest.mark.parametrize(
        ("args", "says"),
        [
            (["--no-auth", "--host", "0.0.0.0"], "loopback"),
            (["--no-auth", "--host", "::"], "loopback"),
            (["--no-auth", "--host", "example.com"], "loopback"),
            (["--cors-origin", "*"], "not an origin"),
            (["--cors-origin", "http://localhost:8233/ui"], "not an origin"),
        ],
    )
    def test_refused_in_one_line(
        self, read_model: ReadModel, tmp_path: Path, args: list[str], says: str
    ) -> None:
        result = run_cli(["codec-server", "--port", str(free_port()), *args], read_model.env, tmp_path)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("referrals: ") and says in lines[0], result.stderr

    def test_without_the_workers_secret_it_refuses_to_start(self, tmp_path: Path) -> None:
        env = cli_env(REFERRALS_DATA_DIR=str(tmp_path / "data"))
        result = run_cli(["codec-server", "--port", str(free_port()), "--no-auth"], env, tmp_path)
        assert result.returncode != 0
        assert "REFERRALS_SECRET_KEY" in result.stderr and len(result.stderr.strip().splitlines()) == 1

    def test_port_in_use_is_one_line(
        self, server: CodecServer, read_model: ReadModel, tmp_path: Path
    ) -> None:
        port = server.url.rsplit(":", 1)[1]
        result = run_cli(["codec-server", "--port", port], read_model.env, tmp_path)
        assert result.returncode != 0
        assert result.stderr.strip().startswith("referrals: the codec server cannot listen")


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a short command to completion."""
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)


def started_input(history_json: str) -> Payload:
    """The input payload of the first event in `temporal workflow show --output json`."""
    started = json.loads(history_json)["events"][0]["workflowExecutionStartedEventAttributes"]
    (payload,) = from_json(started["input"])
    return payload


class TestTemporalCli:
    """The Temporal CLI itself decodes a workflow's history through the codec server."""

    async def test_workflow_show_decodes_the_input(
        self,
        temporal_server: TemporalServer,
        server: CodecServer,
        read_model: ReadModel,
        tmp_path: Path,
    ) -> None:
        client = await Client.connect(
            temporal_server.address, data_converter=data_converter(encryption_key=ROTATED, secret=SECRET_KEY)
        )
        workflow_id = f"codec-{uuid.uuid4().hex[:8]}"
        # No worker polls this queue: the encrypted input simply sits in the history.
        handle = await client.start_workflow(
            "ReferralWorkflow", sample_details(), id=workflow_id, task_queue=f"nobody-{uuid.uuid4().hex}"
        )
        try:
            show = [
                str(temporal_binary()),
                "workflow",
                "show",
                "--address",
                temporal_server.address,
                "--workflow-id",
                workflow_id,
                "--output",
                "json",
            ]
            env = {**os.environ, "TEMPORAL_CONFIG_FILE": str(tmp_path / "none.toml")}
            plain = await asyncio.to_thread(run, show, env)
            assert plain.returncode == 0, plain.stderr
            assert started_input(plain.stdout).metadata["encoding"] == ENCODING
            codec = ["--codec-endpoint", server.url, "--codec-auth", f"Bearer {read_model.tokens['manager']}"]
            decoded = await asyncio.to_thread(run, [*show, *codec], env)
            assert decoded.returncode == 0, decoded.stderr
            payload = started_input(decoded.stdout)
            assert payload.metadata["encoding"] == b"json/plain"
            assert json.loads(payload.data) == sample_details().model_dump(mode="json")
            police = ["--codec-endpoint", server.url, "--codec-auth", f"Bearer {read_model.tokens['police']}"]
            refused = await asyncio.to_thread(run, [*show, *police], env)
            assert refused.returncode != 0 or started_input(refused.stdout).metadata["encoding"] == ENCODING
            assert "Quixotic" not in refused.stdout
        finally:
            await handle.terminate()

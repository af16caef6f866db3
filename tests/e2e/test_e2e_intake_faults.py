"""Intake under faults with the real processes: `referrals api` and `referrals worker`.

The read model is a PostgreSQL database reached through a TCP proxy that the test closes and
reopens (the shared server keeps running); Temporal is a dev server that is stopped and started
again on the same port and SQLite file.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from e2e_support import (
    FORCE,
    REFERRALS,
    Service,
    attach_log,
    base_env,
    create_user,
    eventually,
    free_port,
    free_temporal_port,
    referral_body,
    run_cli,
)

from devserver import DevServer
from tests.api.test_api_faults import TcpProxy
from tests.conftest import fresh_database_url

pytestmark = pytest.mark.slow

API = "/api/v1/referrals"


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated PostgreSQL read model (dropped afterwards)."""
    yield from fresh_database_url("postgresql", tmp_path)


def _rows(url: str, police_reference: str) -> int:
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM referral WHERE police_reference = %s", (police_reference,)
        ).fetchone()
    return int(row[0]) if row else 0


def _start(
    services: Callable[..., Service], env: dict[str, str], tmp_path: Path, api_port: int
) -> tuple[Service, Service]:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    worker = services("worker", [REFERRALS, "worker"], env=env, cwd=tmp_path, logs=logs).start()
    api = services(
        "api", [REFERRALS, "api", "--port", str(api_port)], env=env, cwd=tmp_path, logs=logs
    ).start()
    return worker, api


async def _ready(url: str) -> bool:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        return (await http.get("/readyz")).status_code == 200


@pytest.mark.postgres
async def test_read_model_outage(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    postgres_url: str,
    services: Callable[..., Service],
) -> None:
    """Database away: intake answers 202 and the row appears when it is back; reads say 503."""
    server = DevServer(tmp_path / "temporal", port=free_temporal_port())
    server.start()
    attach_log(request, "temporal dev server", server.log_file)
    proxy = TcpProxy(5432)
    await proxy.start()
    try:
        await server.wait_ready()
        env = base_env(
            REFERRALS_DATA_DIR=str(tmp_path / "data"),
            REFERRALS_DATABASE_URL=postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"),
            REFERRALS_TEMPORAL_ADDRESS=server.address,
            REFERRALS_TASK_QUEUE=f"e2e-{uuid.uuid4().hex[:12]}",
            REFERRALS_SECRET_KEY="e2e-secret-key-" + "x" * 40,
        )
        # Straight to the database: a blocking subprocess would stall the proxy in this event loop.
        direct = {**env, "REFERRALS_DATABASE_URL": postgres_url}
        police = create_user(direct, tmp_path, "police", "police@e2e.example", "--force", FORCE)
        manager = create_user(direct, tmp_path, "manager", "manager@e2e.example")
        api_port = free_port()
        url = f"http://127.0.0.1:{api_port}"
        worker, api = _start(services, env, tmp_path, api_port)
        await eventually(lambda: _ready(url), within=60, what="the API to be ready", alive=[api, worker])
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            as_police = {"Authorization": f"Bearer {police}"}
            first = await http.post(API, headers=as_police, json=referral_body())
            assert first.status_code == 201, first.text
            await proxy.stop()
            body = referral_body()
            during = await http.post(API, headers=as_police, json=body)
            assert during.status_code == 202, during.text
            listed = await http.get(API, headers={"Authorization": f"Bearer {manager}"})
            assert listed.status_code == 503 and listed.headers["Retry-After"] == "5", listed.text
            assert listed.json()["error"]["code"] == "unavailable"
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("unavailable")
            assert _rows(postgres_url, body["police_reference"]) == 0
            await proxy.start()
            await eventually(
                lambda: _rows(postgres_url, body["police_reference"]) == 1,
                within=90,
                what="the referral taken during the outage to be listed",
                alive=[api, worker],
            )
            again = await http.post(API, headers=as_police, json=body)
            assert again.status_code == 200 and again.json()["id"] == during.json()["id"]
            assert _rows(postgres_url, body["police_reference"]) == 1
            assert (await http.get("/readyz")).status_code == 200
    finally:
        await proxy.stop()
        server.stop()


async def test_temporal_stopped_mid_run(
    request: pytest.FixtureRequest, tmp_path: Path, services: Callable[..., Service]
) -> None:
    """Temporal away: 503 with Retry-After, nothing stored; back on its file: the retry lands once."""
    server = DevServer(tmp_path / "temporal", port=free_temporal_port())
    server.start()
    attach_log(request, "temporal dev server", server.log_file)
    try:
        await server.wait_ready()
        database = tmp_path / "read-model.db"
        env = base_env(
            REFERRALS_DATA_DIR=str(tmp_path / "data"),
            REFERRALS_DATABASE_URL=f"sqlite:///{database}",
            REFERRALS_TEMPORAL_ADDRESS=server.address,
            REFERRALS_TASK_QUEUE=f"e2e-{uuid.uuid4().hex[:12]}",
            REFERRALS_SECRET_KEY="e2e-secret-key-" + "x" * 40,
        )
        assert run_cli(["migrate"], env, tmp_path).returncode == 0
        police = create_user(env, tmp_path, "police", "police@e2e.example", "--force", FORCE)
        api_port = free_port()
        url = f"http://127.0.0.1:{api_port}"
        worker, api = _start(services, env, tmp_path, api_port)
        await eventually(lambda: _ready(url), within=60, what="the API to be ready", alive=[api, worker])
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            as_police = {"Authorization": f"Bearer {police}"}
            body = referral_body()
            first = await http.post(API, headers=as_police, json=body)
            assert first.status_code == 201, first.text
            server.stop()
            other = referral_body()
            started = time.monotonic()
            down = await http.post(API, headers=as_police, json=other)
            assert down.status_code == 503, down.text
            assert down.headers["Retry-After"] == "5" and down.json()["error"]["code"] == "unavailable"
            assert time.monotonic() - started < 30  # bounded by commands.UPDATE_TIMEOUT
            server.start()
            await server.wait_ready()

            async def lands() -> httpx.Response | None:
                response = await http.post(API, headers=as_police, json=other)
                return response if response.status_code != 503 else None

            retried = await eventually(lands, within=60, what="intake to work again", alive=[api, worker])
            assert retried.status_code in (201, 202), retried.text
            again = await http.post(API, headers=as_police, json=other)
            assert again.status_code == 200 and again.json()["id"] == retried.json()["id"]
            same = await http.post(API, headers=as_police, json=body)
            assert same.status_code == 200 and same.json()["id"] == first.json()["id"]
            as_front_door = {
                "Authorization": f"Bearer {create_user(env, tmp_path, 'front_door', 'fd@e2e.example')}"
            }

            async def listed() -> bool:
                page = await http.get(API, headers=as_front_door)
                refs = [item["police_reference"] for item in page.json()["items"]]
                return sorted(refs) == sorted([body["police_reference"], other["police_reference"]])

            await eventually(listed, within=60, what="both referrals listed once", alive=[api, worker])
    finally:
        server.stop()

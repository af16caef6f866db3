"""API tests against a real Temporal dev server, a real worker and the read model on both backends.

One dev server for the session. Each test class gets its own stack: a fresh, migrated read
model (SQLite, then PostgreSQL), a worker on a fresh task queue and the app driven in-process
through httpx, so counts and listings in one class are not disturbed by another.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api import create_app
from config import Settings
from models import repository
from models.db import create_engine, session_factory
from models.enums import Role
from models.policy import Policy, load_policy, parse_policy
from tests.conftest import TEMPORAL_CLI, fresh_database_url, sample_details
from worker import build_worker

SECRET = "x" * 40
OWN_FORCE = "Northamptonshire Police"
OTHER_FORCE = "Cumbria Constabulary"

#: name -> (role, force) of the users every stack has.
USERS: dict[str, tuple[Role, str | None]] = {
    "police": (Role.POLICE, OWN_FORCE),
    "police_other": (Role.POLICE, OTHER_FORCE),
    "front_door": (Role.FRONT_DOOR, None),
    "early_help": (Role.EARLY_HELP, None),
    "social_care": (Role.SOCIAL_CARE, None),
    "other_agency": (Role.OTHER_AGENCY, None),
    "manager": (Role.MANAGER, None),
    "admin": (Role.ADMIN, None),
}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def new_reference() -> str:
    """A police reference no other test uses.

    Keys must never repeat across stacks: the dev server outlives each stack's worker, so a
    reused key would land on a workflow nobody polls for and its Update would wait forever.
    """
    return f"NP-{uuid.uuid4().hex[:12].upper()}"


def referral_body(police_reference: str | None = None, **changes: Any) -> dict[str, Any]:
    """A valid POST /referrals body (JSON-ready), with a fresh police reference by default."""
    body = sample_details().model_dump(mode="json")
    body["police_reference"] = new_reference() if police_reference is None else police_reference
    body["children"] = [{"given_name": "Zebedee", "family_name": "Quixotic", "date_of_birth": "2015-03-01"}]
    body.update(changes)
    return body


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, behind an in-process httpx client.

    App exceptions are not re-raised into the test: a bug must show up as the 500 the
    caller would see, so tests can assert that no input produces one.
    """
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
    ):
        yield http


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """One Temporal CLI dev server for the whole session (the pip-installed binary)."""
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_CLI),
        data_converter=pydantic_data_converter,
        ip="127.0.0.1",
        port=free_port(),
    ) as env:
        yield env


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """Every API test runs on the SQLite and the PostgreSQL read model."""
    param: str = request.param
    return param


@dataclass
class Api:
    """An app on a fresh read model and task queue, with a user (and token) per role."""

    http: httpx.AsyncClient
    client: Client
    settings: Settings
    tokens: dict[str, str]
    make_app: Callable[..., FastAPI]
    seen: list[str] = field(default_factory=list)

    def auth(self, who: str) -> dict[str, str]:
        """The Authorization header of one of USERS."""
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def _headers(self, who: str | None, extra: dict[str, str] | None) -> dict[str, str]:
        return {**(self.auth(who) if who else {}), **(extra or {})}

    async def get(
        self, path: str, who: str | None = None, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """GET as `who` (no token when None)."""
        return await self.http.get(path, headers=self._headers(who, headers), **kwargs)

    async def post(
        self, path: str, who: str | None = None, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """POST as `who` (no token when None)."""
        return await self.http.post(path, headers=self._headers(who, headers), **kwargs)

    async def listed(self, referral_id: str, who: str = "front_door") -> httpx.Response:
        """GET a referral, polling for up to 10 s while the read model has not caught up."""
        for _ in range(100):
            response = await self.get(f"/api/v1/referrals/{referral_id}", who)
            if response.status_code != 404:
                return response
            await asyncio.sleep(0.1)
        return response

    async def submit(self, body: dict[str, Any] | None = None, who: str = "police") -> dict[str, Any]:
        """A new referral, created (201, or 202 and then listed); its JSON."""
        response = await self.post("/api/v1/referrals", who, json=body or referral_body())
        assert response.status_code in (201, 202), response.text
        if response.status_code == 202:
            assert (await self.listed(response.json()["id"])).status_code == 200
        data: dict[str, Any] = response.json()
        self.seen.append(data["id"])
        return data

    async def decide(self, referral_id: str, outcome: str = "early_help") -> dict[str, Any]:
        """The front door's decision, which must be accepted."""
        response = await self.post(
            f"/api/v1/referrals/{referral_id}/decision", "front_door", json={"outcome": outcome}
        )
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    async def decline(self, referral_id: str, reason: str = "consent_declined") -> dict[str, Any]:
        """Early Help's decline, which must be accepted."""
        response = await self.post(
            f"/api/v1/referrals/{referral_id}/decline", "early_help", json={"reason": reason}
        )
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data


async def _create_users(database_url: str) -> dict[str, str]:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            tokens = {}
            for name, (role, force) in USERS.items():
                _, token = await repository.create_user(
                    session, role=role, name=f"{name} user", email=f"{name}@example.test", force=force
                )
                tokens[name] = token
    finally:
        await engine.dispose()
    return tokens


def _policy_of(cls: type | None) -> Policy:
    """The default policy, or the class's own (`api_policy`: TOML text)."""
    text = getattr(cls, "api_policy", None)
    return parse_policy(text, "test policy") if text else load_policy(None)


@pytest_asyncio.fixture(scope="class")
async def api(
    backend: str,
    temporal_env: WorkflowEnvironment,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Api]:
    """A fresh stack per test class (read model, worker, app, users)."""
    databases = fresh_database_url(backend, tmp_path_factory.mktemp("api"))
    database_url = next(databases)
    try:
        settings = Settings(
            database_url=database_url,
            task_queue=f"api-{uuid.uuid4()}",
            temporal_address=temporal_env.client.service_client.config.target_host,
        )
        tokens = await _create_users(database_url)

        policy = _policy_of(request.cls)

        def make_app(**kwargs: Any) -> FastAPI:
            # The app and the worker read the same policy, as in a deployment.
            options: dict[str, Any] = {"secret": SECRET, "client": temporal_env.client, "policy": policy}
            options.update(kwargs)
            return create_app(options.pop("settings", settings), **options)

        engine = create_engine(database_url)
        worker = build_worker(temporal_env.client, settings, secret=SECRET, policy=policy, engine=engine)
        try:
            async with worker, serve(make_app()) as http:
                yield Api(
                    http=http, client=temporal_env.client, settings=settings, tokens=tokens, make_app=make_app
                )
        finally:
            await engine.dispose()
    finally:
        next(databases, None)

"""POST /api/v1/integrations/early-help/records: Early Help's case system pushes a record.

A real worker and the app on SQLite and PostgreSQL; requests signed as the case system would
sign them (HMAC-SHA256 over "<timestamp>." + body, with the secret the policy's
`webhook_secret_env` names).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from config import ConfigError, Settings
from models.db import create_engine
from models.policy import default_policy_text, parse_policy
from tests.api.conftest import SECRET, _create_users, free_port, referral_body, serve
from tests.conftest import fresh_database_url
from web.early_help_hook import signature
from worker import build_worker

URL = "/api/v1/integrations/early-help/records"
SECRET_ENV = "RT_TEST_EHM_WEBHOOK_SECRET"
HOOK_SECRET = "ehm-webhook-secret-0123456789abcdef0123"
POLICY = parse_policy(
    default_policy_text() + f'\n[integrations.early_help]\nwebhook_secret_env = "{SECRET_ENV}"\n', "p.toml"
)


@dataclass
class Stack:
    """The app with the case system's webhook on, a worker, users' tokens, and two referrals."""

    http: httpx.AsyncClient
    tokens: dict[str, str]
    settings: Settings
    at_early_help: dict[str, Any]
    at_front_door: dict[str, Any]


def signed(
    body: dict[str, Any] | bytes, *, at: float | None = None, secret: str = HOOK_SECRET
) -> dict[str, Any]:
    """The request as the case system sends it: content and signature headers."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    timestamp = str(int(time.time() if at is None else at))
    return {
        "content": raw,
        "headers": {
            "content-type": "application/json",
            "X-Signature-Timestamp": timestamp,
            "X-Signature": signature(secret.encode(), timestamp, raw),
        },
    }


@pytest_asyncio.fixture(scope="class")
async def stack(
    backend: str, temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    from api import create_app

    databases = fresh_database_url(backend, tmp_path_factory.mktemp("hook"))
    database_url = next(databases)
    os.environ[SECRET_ENV] = HOOK_SECRET
    try:
        settings = Settings(
            database_url=database_url,
            task_queue=f"hook-{uuid.uuid4()}",
            temporal_address=temporal_env.client.service_client.config.target_host,
        )
        tokens = await _create_users(database_url)
        engine = create_engine(database_url)
        worker = build_worker(temporal_env.client, settings, secret=SECRET, policy=POLICY, engine=engine)
        app = create_app(settings, secret=SECRET, client=temporal_env.client, policy=POLICY)
        try:
            async with worker, serve(app) as http:
                police = {"Authorization": f"Bearer {tokens['police']}"}
                referrals = []
                for _ in range(2):
                    created = await http.post("/api/v1/referrals", json=referral_body(), headers=police)
                    assert created.status_code in (201, 202), created.text
                    referrals.append(created.json())
                decided = await http.post(
                    f"/api/v1/referrals/{referrals[0]['id']}/decision",
                    json={"outcome": "early_help"},
                    headers={"Authorization": f"Bearer {tokens['front_door']}"},
                )
                assert decided.status_code == 200, decided.text
                yield Stack(http, tokens, settings, referrals[0], referrals[1])
        finally:
            await engine.dispose()
    finally:
        os.environ.pop(SECRET_ENV, None)
        next(databases, None)


class TestEarlyHelpWebhook:
    """Signed, fresh, once: a record pushed by the case system acknowledges the hand-off."""

    @pytest.mark.parametrize(
        "tamper",
        ["no headers", "wrong secret", "body changed", "not unix seconds", "ten minutes old", "ahead"],
    )
    async def test_401_unless_signed_and_fresh(self, stack: Stack, tamper: str) -> None:
        body = {"reference": stack.at_early_help["reference"], "record_id": "EHM-1"}
        now = time.time()
        request = {
            "no headers": {
                "content": json.dumps(body).encode(),
                "headers": {"content-type": "application/json"},
            },
            "wrong secret": signed(body, secret="another-secret-0123456789abcdef0123"),
            "body changed": {**signed(body), "content": json.dumps({**body, "record_id": "EHM-2"}).encode()},
            "ten minutes old": signed(body, at=now - 600),
            "ahead": signed(body, at=now + 600),
        }.get(tamper)
        if tamper == "not unix seconds":
            request = signed(body)
            request["headers"]["X-Signature-Timestamp"] = "yesterday"
            raw = request["content"]
            request["headers"]["X-Signature"] = signature(HOOK_SECRET.encode(), "yesterday", raw)
        assert request is not None

        r = await stack.http.post(URL, **request)

        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "unauthorized"

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"reference": "RT-X"}, "record_id"),
            ({"record_id": "EHM-1"}, "reference"),
            ({"reference": "RT-X", "record_id": ""}, "record_id"),
            ({"reference": "RT-X", "record_id": "X" * 101}, "record_id"),
            ({"reference": "RT-X", "record_id": "EHM-1", "child_name": "no"}, "child_name"),
        ],
    )
    async def test_422_names_the_field(self, stack: Stack, body: dict[str, Any], field: str) -> None:
        r = await stack.http.post(URL, **signed(body))
        assert r.status_code == 422, r.text
        assert field in r.json()["error"]["fields"]

    async def test_404_for_a_reference_not_ours(self, stack: Stack) -> None:
        r = await stack.http.post(URL, **signed({"reference": "RT-NONE0-NONE0", "record_id": "EHM-1"}))
        assert r.status_code == 404, r.text

    async def test_409_when_not_awaiting_early_help(self, stack: Stack) -> None:
        body = {"reference": stack.at_front_door["reference"], "record_id": "EHM-5"}
        r = await stack.http.post(URL, **signed(body))
        assert r.status_code == 409 and r.json()["error"]["code"] == "not_awaiting", r.text

    async def test_a_pushed_record_acknowledges_once_and_a_replay_is_refused(self, stack: Stack) -> None:
        from api import create_app

        referral = stack.at_early_help
        request = signed({"reference": referral["reference"], "record_id": "EHM-4471"})
        # First while Temporal is away: 503, and nothing kept that would refuse the retry.
        away = stack.settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
        async with serve(create_app(away, secret=SECRET, policy=POLICY)) as down:
            unavailable = await down.post(URL, **request)
        assert unavailable.status_code == 503 and "retry-after" in unavailable.headers, unavailable.text

        r = await stack.http.post(URL, **request)

        assert r.status_code == 200, r.text
        assert r.json() == {"id": referral["id"], "reference": referral["reference"], "status": "closed"}
        manager = {"Authorization": f"Bearer {stack.tokens['manager']}"}
        chronology = (
            await stack.http.get(f"/api/v1/referrals/{referral['id']}/chronology", headers=manager)
        ).json()
        (ack,) = [e for e in chronology["events"] if e["type"] == "acknowledged"]
        assert ack["data"]["record_id"] == "EHM-4471"
        assert ack["actor"]["name"] == "Early Help case system"

        replayed = await stack.http.post(URL, **request)

        assert replayed.status_code == 409 and replayed.json()["error"]["code"] == "replayed", replayed.text


async def test_401_everywhere_when_no_secret_is_configured(
    temporal_env: WorkflowEnvironment, tmp_path: Any
) -> None:
    from api import create_app

    databases = fresh_database_url("sqlite", tmp_path)
    settings = Settings(database_url=next(databases), task_queue=f"hook-{uuid.uuid4()}")
    async with serve(create_app(settings, secret=SECRET, client=temporal_env.client)) as http:
        r = await http.post(URL, **signed({"reference": "RT-X", "record_id": "EHM-1"}))
    assert r.status_code == 401, r.text
    next(databases, None)


def test_a_named_secret_that_is_not_set_stops_the_api() -> None:
    from api import create_app

    os.environ.pop(SECRET_ENV, None)
    with pytest.raises(ConfigError, match=f"{SECRET_ENV}: not set"):
        create_app(Settings(), secret=SECRET, policy=POLICY)

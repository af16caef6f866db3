"""POST /api/v1/integrations/notify/callbacks with a real worker sending through a local GOV.UK Notify.

The worker's email goes through the fake Notify of tests/notify_server.py (it checks the JWT
and the body); its notifications are what the receipts below refer to.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from config import Settings
from models.db import create_engine
from models.policy import default_policy_text, parse_policy
from tests.api.conftest import SECRET, _create_users, referral_body, serve
from tests.conftest import fresh_database_url
from tests.notify_server import API_KEY, TEMPLATE_ID, FakeNotify, running
from worker import build_worker

URL = "/api/v1/integrations/notify/callbacks"
TOKEN = "notify-callback-token-0123456789"
REFERRER = "a.example@police.example"
MASH_MANAGER = "mash-manager@council.example"
PPU = "ppu@police.example"


@dataclass
class Stack:
    """The app, a worker sending through the fake Notify, users' tokens, and one decided referral."""

    http: httpx.AsyncClient
    fake: FakeNotify
    tokens: dict[str, str]
    settings: Settings
    referral_id: str
    outcome: dict[str, Any]


async def _eventually(check: Any, what: str) -> Any:
    for _ in range(200):
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


@pytest_asyncio.fixture(scope="class")
async def stack(
    backend: str, temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """A fresh read model, a worker whose email goes through Notify, the app, a referral decided."""
    from api import create_app

    databases = fresh_database_url(backend, tmp_path_factory.mktemp("notify"))
    database_url = next(databases)
    fake = FakeNotify()
    text = default_policy_text()
    policy = parse_policy(text.replace(f'# fallback_email = "{PPU}"', f'fallback_email = "{PPU}"'), "p.toml")
    try:
        async with running(fake) as notify_url:
            settings = Settings(
                database_url=database_url,
                task_queue=f"notify-{uuid.uuid4()}",
                temporal_address=temporal_env.client.service_client.config.target_host,
                notify_api_key=API_KEY,
                notify_base_url=notify_url,
                notify_template_id=TEMPLATE_ID,
                notify_callback_token=TOKEN,
            )
            tokens = await _create_users(database_url)
            engine = create_engine(database_url)
            worker = build_worker(temporal_env.client, settings, secret=SECRET, policy=policy, engine=engine)
            app = create_app(settings, secret=SECRET, client=temporal_env.client, policy=policy)
            try:
                async with worker, serve(app) as http:
                    body = referral_body()
                    auth = {"Authorization": f"Bearer {tokens['police']}"}
                    created = await http.post("/api/v1/referrals", json=body, headers=auth)
                    assert created.status_code in (201, 202), created.text
                    rid = created.json()["id"]
                    decided = await http.post(
                        f"/api/v1/referrals/{rid}/decision",
                        json={"outcome": "early_help"},
                        headers={"Authorization": f"Bearer {tokens['front_door']}"},
                    )
                    assert decided.status_code == 200, decided.text

                    async def outcome_sent() -> dict[str, Any] | None:
                        return next(iter(fake.to(REFERRER)), None)

                    outcome = await _eventually(outcome_sent, "the outcome email reached Notify")
                    yield Stack(http, fake, tokens, settings, rid, outcome)
            finally:
                await engine.dispose()
    finally:
        next(databases, None)


def receipt(notification: dict[str, Any], status: str, **changes: Any) -> dict[str, Any]:
    """Notify's callback body for one of its notifications."""
    body = {
        "id": notification["id"],
        "reference": notification["reference"],
        "to": notification["email_address"],
        "status": status,
        "created_at": "2026-11-26T10:00:00.000000Z",
        "completed_at": "2026-11-26T10:00:05.000000Z",
        "sent_at": "2026-11-26T10:00:01.000000Z",
        "notification_type": "email",
    }
    body.update(changes)
    return body


NOTIFY = {"Authorization": f"Bearer {TOKEN}"}


async def receipts(s: Stack, count: int) -> list[dict[str, Any]]:
    """The referral's delivery_status events once there are `count` of them."""

    async def found() -> list[dict[str, Any]] | None:
        r = await s.http.get(
            f"/api/v1/referrals/{s.referral_id}/chronology",
            headers={"Authorization": f"Bearer {s.tokens['manager']}"},
        )
        events = (
            [e for e in r.json()["events"] if e["type"] == "delivery_status"] if r.status_code == 200 else []
        )
        return events if len(events) >= count else None

    events: list[dict[str, Any]] = await _eventually(found, f"{count} receipts in the chronology")
    return events


class TestNotifyCallbacks:
    """Notify's receipts: authorised by the token, validated, recorded once, a bounce falls back."""

    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Bearer wrong-token-0123456789"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": f"Bearer {TOKEN}x"},
        ],
    )
    async def test_401_without_the_token(self, stack: Stack, headers: dict[str, str]) -> None:
        r = await stack.http.post(URL, json=receipt(stack.outcome, "delivered"), headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", r.text

    async def test_401_for_a_user_token_and_when_not_configured(self, stack: Stack) -> None:
        user = {"Authorization": f"Bearer {stack.tokens['admin']}"}
        r = await stack.http.post(URL, json=receipt(stack.outcome, "delivered"), headers=user)
        assert r.status_code == 401
        from api import create_app

        unconfigured = stack.settings.model_copy(update={"notify_callback_token": None})
        async with serve(create_app(unconfigured, secret=SECRET)) as http:
            for token in (TOKEN, ""):
                r = await http.post(
                    URL,
                    json=receipt(stack.outcome, "delivered"),
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert r.status_code == 401, r.text

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"status": "bounced"}, "status"),
            ({"id": "not-a-uuid"}, "id"),
            ({"to": None}, "to"),
        ],
    )
    async def test_422_names_the_field(self, stack: Stack, body: dict[str, Any], field: str) -> None:
        r = await stack.http.post(URL, json={**receipt(stack.outcome, "delivered"), **body}, headers=NOTIFY)
        assert r.status_code == 422, r.text
        assert field in r.json()["error"]["fields"]

    async def test_422_for_a_body_that_is_not_json(self, stack: Stack) -> None:
        r = await stack.http.post(URL, content=b"{not json", headers=NOTIFY)
        assert r.status_code == 422 and "body" in r.json()["error"]["fields"]

    async def test_404_for_a_message_not_ours(self, stack: Stack) -> None:
        body = receipt(stack.outcome, "delivered", id=str(uuid.uuid4()), reference="someone-else")
        r = await stack.http.post(URL, json=body, headers=NOTIFY)
        assert r.status_code == 404, r.text

    async def test_each_status_recorded_once(self, stack: Stack) -> None:
        for status in ("delivered", "temporary-failure", "technical-failure"):
            r = await stack.http.post(URL, json=receipt(stack.outcome, status), headers=NOTIFY)
            assert r.status_code == 200 and r.json() == {"recorded": True, "chronology": True}, r.text
        # Notify calls back twice; found by its id alone (no reference) too.
        again = await stack.http.post(
            URL, json=receipt(stack.outcome, "delivered", reference=None), headers=NOTIFY
        )
        assert again.status_code == 200 and again.json() == {"recorded": False, "chronology": False}
        events = await receipts(stack, 3)
        assert [e["data"]["status"] for e in events] == [
            "delivered",
            "temporary-failure",
            "technical-failure",
        ]
        assert all(e["data"]["to"] == [REFERRER] and e["data"]["kind"] == "outcome" for e in events)
        assert events[0]["data"]["notification_id"] == stack.outcome["id"]

    async def test_permanent_failure_sends_the_fallback_copy_through_notify(self, stack: Stack) -> None:
        r = await stack.http.post(URL, json=receipt(stack.outcome, "permanent-failure"), headers=NOTIFY)
        assert r.status_code == 200 and r.json()["chronology"], r.text
        twice = await stack.http.post(URL, json=receipt(stack.outcome, "permanent-failure"), headers=NOTIFY)
        assert twice.json()["recorded"] is False

        async def copies() -> list[dict[str, Any]] | None:
            sent = [n for n in stack.fake.notifications if n["reference"] != stack.outcome["reference"]]
            return sent if len(sent) >= 2 else None

        sent = await _eventually(copies, "the fallback copy reached Notify")
        assert sorted(n["email_address"] for n in sent) == [MASH_MANAGER, PPU]
        assert {n["reference"] for n in sent} == {f"{stack.outcome['reference']}:bounce1"}
        assert all("fallback copy" in n["personalisation"]["subject"] for n in sent)
        events = await receipts(stack, 4)
        assert events[-1]["data"]["status"] == "permanent-failure"
        assert events[-1]["data"]["fallback"] == [MASH_MANAGER, PPU]
        await asyncio.sleep(0.5)
        assert len([n for n in stack.fake.notifications if n["email_address"] == PPU]) == 1

        # The copy's own receipt is recorded, with nothing copied again.
        (ppu_copy,) = stack.fake.to(PPU)
        r = await stack.http.post(URL, json=receipt(ppu_copy, "permanent-failure"), headers=NOTIFY)
        assert r.status_code == 200 and r.json()["chronology"], r.text
        events = await receipts(stack, 5)
        assert events[-1]["data"]["copy"] == "fallback" and "fallback" not in events[-1]["data"]

    async def test_a_bounce_after_no_further_action_still_falls_back(self, stack: Stack) -> None:
        """The referral closes once Notify takes its outcome email; the bounce comes after."""
        police = {"Authorization": f"Bearer {stack.tokens['police']}"}
        created = await stack.http.post("/api/v1/referrals", json=referral_body(), headers=police)
        rid = created.json()["id"]
        decided = await stack.http.post(
            f"/api/v1/referrals/{rid}/decision",
            json={"outcome": "no_further_action"},
            headers={"Authorization": f"Bearer {stack.tokens['front_door']}"},
        )
        assert decided.status_code == 200 and decided.json()["status"] == "closed", decided.text

        async def outcome_sent() -> dict[str, Any] | None:
            return next((n for n in stack.fake.to(REFERRER) if n["reference"].startswith(f"{rid}:")), None)

        outcome = await _eventually(outcome_sent, "the no-further-action outcome reached Notify")
        r = await stack.http.post(URL, json=receipt(outcome, "permanent-failure"), headers=NOTIFY)
        # The closed referral's workflow was still there for the receipt.
        assert r.status_code == 200 and r.json() == {"recorded": True, "chronology": True}, r.text

        async def copies() -> list[dict[str, Any]] | None:
            sent = [
                n for n in stack.fake.notifications if n["reference"] == f"{outcome['reference']}:bounce1"
            ]
            return sent if len(sent) >= 2 else None

        sent = await _eventually(copies, "the fallback copy reached Notify")
        assert sorted(n["email_address"] for n in sent) == [MASH_MANAGER, PPU]
        manager = {"Authorization": f"Bearer {stack.tokens['manager']}"}

        async def finished() -> list[dict[str, Any]] | None:
            chronology = await stack.http.get(f"/api/v1/referrals/{rid}/chronology", headers=manager)
            events = chronology.json()["events"]
            copied = [e for e in events if e["type"] == "email_sent" and e["data"].get("copy") == "fallback"]
            return events if copied else None

        events = await _eventually(finished, "the copy in the closed referral's chronology")
        bounce = next(e for e in events if e["type"] == "delivery_status")
        assert bounce["data"]["status"] == "permanent-failure" and bounce["data"]["fallback"] == [
            MASH_MANAGER,
            PPU,
        ]

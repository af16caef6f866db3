"""POST /api/v1/referrals with `Prefer: respond-async` (RFC 7240): 202 once Temporal holds it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event

from api import prefers_respond_async
from tests.api.conftest import Api, referral_body, serve

REFERRALS = "/api/v1/referrals"
ASYNC = {"Prefer": "respond-async"}


async def submit_async(api: Api, body: dict[str, Any], who: str = "police") -> dict[str, Any]:
    response = await api.post(REFERRALS, who, json=body, headers=ASYNC)
    assert response.status_code == 202, response.text
    assert response.headers["Preference-Applied"] == "respond-async"
    data: dict[str, Any] = response.json()
    assert response.headers["Location"] == f"{REFERRALS}/{data['id']}"
    return data


class TestRespondAsync:
    """Answered once the workflow is started; planned and listed moments later, exactly once."""

    async def test_accepted_then_planned_and_listed(self, api: Api) -> None:
        body = referral_body()
        accepted = await submit_async(api, body)
        assert accepted["status"] == "awaiting_decision"
        assert accepted["police_reference"] == body["police_reference"]
        # Not planned yet when answered: no hand-off, no deadline.
        assert accepted["handoffs"] == [] and accepted["due_at"] is None
        # Listed once received, then with its first hand-off once planned.
        for _ in range(100):
            listed = await api.listed(accepted["id"])
            assert listed.status_code == 200, listed.text
            data = listed.json()
            if data["handoffs"]:
                break
            await asyncio.sleep(0.1)
        assert data["reference"] == accepted["reference"]
        assert data["awaiting_team"] == "front_door" and data["due_at"] is not None
        assert [h["team"] for h in data["handoffs"]] == ["front_door"]
        chronology = (await api.get(f"{REFERRALS}/{accepted['id']}/chronology", "front_door")).json()
        assert [e["type"] for e in chronology["events"]][:2] == ["received", "handoff_opened"]

    async def test_the_same_again_is_a_duplicate_either_way(self, api: Api) -> None:
        body = referral_body()
        first = await submit_async(api, body)
        again_async = await api.post(REFERRALS, "police", json=body, headers=ASYNC)
        assert again_async.status_code == 200, again_async.text
        assert again_async.json()["id"] == first["id"]
        again = await api.post(REFERRALS, "police", json=body)
        assert again.status_code == 200, again.text
        assert again.json()["id"] == first["id"]
        await api.listed(first["id"])
        events = (await api.get(f"{REFERRALS}/{first['id']}/chronology", "front_door")).json()["events"]
        types = [e["type"] for e in events]
        assert types.count("received") == 1
        assert types.count("duplicate_submission") == 2

    async def test_same_key_other_content_is_a_conflict(self, api: Api) -> None:
        body = referral_body()
        await submit_async(api, body)
        changed = {**body, "summary": body["summary"] + " (changed)"}
        response = await api.post(REFERRALS, "police", json=changed, headers=ASYNC)
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "conflict"

    async def test_after_a_synchronous_intake_it_is_a_duplicate(self, api: Api) -> None:
        body = referral_body()
        first = await api.submit(body)
        response = await api.post(REFERRALS, "police", json=body, headers=ASYNC)
        assert response.status_code == 200, response.text
        assert response.json()["id"] == first["id"]

    async def test_invalid_bodies_are_refused_before_anything_starts(self, api: Api) -> None:
        body = {**referral_body(), "risk": "purple"}
        response = await api.post(REFERRALS, "police", json=body, headers=ASYNC)
        assert response.status_code == 422, response.text
        assert "risk" in response.json()["error"]["fields"]

    async def test_without_the_preference_it_answers_once_listed(self, api: Api) -> None:
        response = await api.post(REFERRALS, "police", json=referral_body(), headers={"Prefer": "wait=10"})
        assert response.status_code in (201, 202), response.text
        assert "Preference-Applied" not in response.headers


def noting_the_pool(command: Any, engine: Any, held: list[int]) -> Any:
    """`command`, noting how many connections the pool has out when it is called."""

    async def noted(*args: Any, **kwargs: Any) -> Any:
        held.append(engine.pool.checkedout())
        return await command(*args, **kwargs)

    return noted


class TestLookupsApart:
    """Intake's token check and duplicate lookup share one connection, given back before Temporal."""

    @pytest.mark.parametrize("prefer", [ASYNC, {}], ids=["respond-async", "synchronous"])
    async def test_intake_checks_out_one_connection_and_holds_none_while_starting(
        self, api: Api, prefer: dict[str, str]
    ) -> None:
        app = api.make_app()
        async with serve(app) as http:
            engine = app.state.engine.sync_engine
            checkouts: list[int] = []
            event.listen(engine, "checkout", lambda *_: checkouts.append(engine.pool.checkedout()))
            held: list[int] = []
            commands = app.state.commands
            for name in ("submit", "submit_async"):
                setattr(commands, name, noting_the_pool(getattr(commands, name), engine, held))
            response = await http.post(
                REFERRALS, headers={**api.auth("police"), **prefer}, json=referral_body()
            )
        assert response.status_code in (201, 202), response.text
        assert checkouts == [1], "one checkout for the token check and the duplicate lookup"
        assert held == [0], "no connection held while Temporal starts the referral"

    async def test_a_read_gives_the_token_checks_connection_back_first(self, api: Api) -> None:
        app = api.make_app()
        async with serve(app) as http:
            engine = app.state.engine.sync_engine
            checkouts: list[int] = []
            event.listen(engine, "checkout", lambda *_: checkouts.append(engine.pool.checkedout()))
            response = await http.get(REFERRALS, headers=api.auth("manager"))
        assert response.status_code == 200, response.text
        # The token check's, then the route's own session's: one after the other, never two at once.
        assert checkouts == [1, 1]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ("", False),
        ("respond-async", True),
        ("Respond-Async", True),
        ("wait=5, respond-async", True),
        ("respond-async; foo=bar", True),
        ("return=minimal", False),
        ("respond-asynchronously", False),
        (",,;=", False),
    ],
)
def test_prefer_header_parsing(header: str | None, expected: bool) -> None:
    assert prefers_respond_async(header) is expected

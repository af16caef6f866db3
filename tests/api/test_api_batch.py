"""POST /api/v1/referrals:batch: per-item results in order, roles and force, the cap, Temporal away.

Runs on the SQLite and the PostgreSQL read model (the `api` fixture of tests/api/conftest.py),
against the real dev server and worker.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from temporalio.client import Client

from codec import data_converter
from commands import CommandError, ReferralCommands
from models.identity import referral_id
from tests.api.conftest import OTHER_FORCE, OWN_FORCE, SECRET, Api, free_port, referral_body, serve
from tests.api.test_api_intake import REFERENCE, REFERRALS, assert_error
from web.batch import BATCH_CONCURRENCY, MAX_BATCH

BATCH = "/api/v1/referrals:batch"


async def send(api: Api, items: list[Any], who: str = "police") -> dict[str, Any]:
    """A batch that must be answered 200; its JSON."""
    response = await api.post(BATCH, who, json={"referrals": items})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    assert [r["index"] for r in data["results"]] == list(range(len(items)))
    return data


def statuses(data: dict[str, Any]) -> list[str]:
    """Each item's status, in order."""
    return [r["status"] for r in data["results"]]


async def duplicate_submissions(api: Api, rid: str) -> int:
    """How many times the chronology records the referral submitted again."""
    listed = await api.listed(rid)
    assert listed.status_code == 200, listed.text
    events = (await api.get(f"{REFERRALS}/{rid}/chronology", "front_door")).json()["events"]
    return [e["type"] for e in events].count("duplicate_submission")


class TestBatch:
    """Each item as POST /referrals would answer it, independently, in the order sent."""

    async def test_created_duplicate_invalid_and_conflict_mixed(self, api: Api) -> None:
        good = referral_body()
        other = referral_body()
        future_child = {"given_name": "A", "family_name": "B", "date_of_birth": "2999-01-01"}
        items: list[Any] = [
            good,
            good,  # the same again in one batch: sent after the first, so a duplicate
            {**referral_body(), "referrer": {"name": "PC X", "email": "not-an-email"}, "risk": "purple"},
            {**good, "summary": "Another account of the incident."},  # same key, other content
            42,
            {**referral_body(), "shoe_size": 9},
            {**referral_body(), "children": [future_child]},
            other,
        ]
        data = await send(api, items)
        assert statuses(data) == [
            "created",
            "duplicate",
            "invalid",
            "conflict",
            "invalid",
            "invalid",
            "invalid",
            "created",
        ]
        results = data["results"]
        assert results[0]["id"] == referral_id(OWN_FORCE, good["police_reference"])
        assert REFERENCE.fullmatch(results[0]["reference"]), results[0]
        assert results[1]["id"] == results[0]["id"] and results[1]["reference"] == results[0]["reference"]
        assert set(results[2]["errors"]) == {"referrer.email", "risk"}, results[2]
        assert results[2]["id"] is None and results[2]["reference"] is None
        assert "different content" in results[3]["errors"]["police_reference"]
        assert results[4]["errors"] == {"body": "each referral must be a JSON object"}
        assert set(results[5]["errors"]) == {"shoe_size"}
        assert "future" in results[6]["errors"]["children.0.date_of_birth"]
        assert data["summary"] == {
            "total": 8,
            "created": 2,
            "duplicate": 1,
            "invalid": 4,
            "conflict": 1,
            "unavailable": 0,
        }
        # The referrals are the ones POST /referrals knows, with the content first sent.
        got = await api.listed(results[0]["id"])
        assert got.status_code == 200 and got.json()["details"]["summary"] == good["summary"]
        again = await api.post(REFERRALS, "police", json=other)
        assert again.status_code == 200 and again.json()["id"] == results[7]["id"]

    async def test_a_retried_batch_creates_nothing_twice(self, api: Api) -> None:
        items = [referral_body() for _ in range(5)]
        first = await send(api, items)
        assert statuses(first) == ["created"] * 5
        second = await send(api, items)
        assert statuses(second) == ["duplicate"] * 5
        assert [r["id"] for r in second["results"]] == [r["id"] for r in first["results"]]
        assert [r["reference"] for r in second["results"]] == [r["reference"] for r in first["results"]]
        for result in first["results"]:
            assert await duplicate_submissions(api, result["id"]) == 1
        assert len({r["id"] for r in first["results"]}) == 5

    async def test_closed_referrals_are_answered_from_the_read_model(self, api: Api) -> None:
        body = referral_body()
        created = await api.submit(body)
        assert (await api.decide(created["id"], "no_further_action"))["status"] == "closed"
        data = await send(api, [body, {**body, "risk": "red"}])
        assert statuses(data) == ["duplicate", "conflict"]
        assert data["results"][0]["id"] == created["id"]
        assert data["results"][0]["reference"] == created["reference"]

    async def test_front_door_may_submit_for_any_force(self, api: Api) -> None:
        data = await send(api, [referral_body(force=OTHER_FORCE), referral_body()], who="front_door")
        assert statuses(data) == ["created", "created"]

    @pytest.mark.parametrize("who", ["early_help", "social_care", "other_agency", "manager", "admin"])
    async def test_other_roles_may_not_submit(self, api: Api, who: str) -> None:
        assert_error(await api.post(BATCH, who, json={"referrals": [referral_body()]}), 403, "forbidden")

    async def test_police_may_not_submit_for_another_force_and_nothing_is_sent(self, api: Api) -> None:
        own, foreign = referral_body(), referral_body(force=OTHER_FORCE)
        response = await api.post(BATCH, "police", json={"referrals": [own, {"bad": 1}, foreign]})
        error = assert_error(response, 403, "forbidden")
        assert error["fields"] == {"referrals.2.force": "not your force"}
        # The whole batch was refused: its own-force item was not created either.
        assert (await api.post(REFERRALS, "police", json=own)).status_code == 201
        assert_error(await api.post(BATCH, "police_other", json={"referrals": [own]}), 403, "forbidden")

    async def test_without_a_token_is_401(self, api: Api) -> None:
        response = await api.post(BATCH, None, json={"referrals": [referral_body()]})
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"

    async def test_more_than_the_cap_is_422_naming_the_field(self, api: Api) -> None:
        response = await api.post(BATCH, "police", json={"referrals": [{}] * (MAX_BATCH + 1)})
        error = assert_error(response, 422, "invalid")
        assert set(error["fields"]) == {"referrals"}, error
        assert str(MAX_BATCH) in error["fields"]["referrals"]

    @pytest.mark.parametrize(
        "body",
        [{"referrals": []}, {}, {"referrals": {}}, {"referrals": [], "dry_run": True}, [], "x"],
        ids=["empty", "missing", "not a list", "unknown field", "a list", "a string"],
    )
    async def test_a_body_that_is_not_a_batch_is_422(self, api: Api, body: Any) -> None:
        assert_error(await api.post(BATCH, "police", json=body), 422, "invalid")


class _Flaky:
    """The app's command sender, but Temporal goes away after `ok` submissions; counts in-flight."""

    def __init__(self, commands: ReferralCommands, ok: int, delay: float = 0.0) -> None:
        self.commands = commands
        self.ok = ok
        self.delay = delay
        self.calls = 0
        self.in_flight = 0
        self.most = 0

    async def submit(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls > self.ok:
            raise CommandError("unavailable", "Temporal is unreachable; retry")
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            return await self.commands.submit(*args, **kwargs)
        finally:
            self.in_flight -= 1


class TestBatchTemporalAway:
    """Temporal away: the items not sent are "unavailable" (200, Retry-After); the retry lands once."""

    async def test_unreachable_temporal_makes_items_unavailable_never_a_500(self, api: Api) -> None:
        dead = await Client.connect(
            f"127.0.0.1:{free_port()}",
            data_converter=data_converter(encryption_key=api.settings.encryption_key, secret=SECRET),
            lazy=True,
        )
        items: list[Any] = [referral_body(), {"police_reference": "x"}, referral_body(), referral_body()]
        async with serve(api.make_app(client=dead)) as http:
            response = await http.post(BATCH, headers=api.auth("police"), json={"referrals": items})
        assert response.status_code == 200, response.text
        assert response.headers["Retry-After"] == "5"
        data = response.json()
        assert statuses(data) == ["unavailable", "invalid", "unavailable", "unavailable"]
        assert all(r["id"] is None for r in data["results"])
        assert data["summary"]["unavailable"] == 3
        # Temporal back: the client's retry creates each once.
        retried = await send(api, items)
        assert statuses(retried) == ["created", "invalid", "created", "created"]
        assert "Retry-After" not in (await api.post(BATCH, "police", json={"referrals": items})).headers

    async def test_lost_mid_batch_then_retried(self, api: Api) -> None:
        items = [referral_body() for _ in range(6)]
        app = api.make_app()
        async with serve(app) as http:
            flaky = _Flaky(app.state.commands, ok=2)
            app.state.commands = flaky
            response = await http.post(BATCH, headers=api.auth("police"), json={"referrals": items})
        assert response.status_code == 200, response.text
        first = response.json()
        assert sorted(statuses(first)) == ["created"] * 2 + ["unavailable"] * 4
        # Once Temporal was found away, the items not yet sent were not sent at all.
        assert flaky.calls <= 2 + BATCH_CONCURRENCY
        retried = await send(api, items)
        expected = ["duplicate" if s == "created" else "created" for s in statuses(first)]
        assert statuses(retried) == expected
        for before, after in zip(first["results"], retried["results"], strict=True):
            if before["status"] == "created":
                assert after["id"] == before["id"]
        for result in retried["results"]:
            assert result["id"] == referral_id(OWN_FORCE, items[result["index"]]["police_reference"])

    async def test_submits_with_bounded_concurrency(self, api: Api) -> None:
        items = [referral_body() for _ in range(3 * BATCH_CONCURRENCY)]
        app = api.make_app()
        async with serve(app) as http:
            counting = _Flaky(app.state.commands, ok=len(items), delay=0.05)
            app.state.commands = counting
            response = await http.post(BATCH, headers=api.auth("front_door"), json={"referrals": items})
        assert response.status_code == 200, response.text
        assert statuses(response.json()) == ["created"] * len(items)
        assert 1 < counting.most <= BATCH_CONCURRENCY

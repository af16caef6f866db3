"""POST /api/v1/referrals/{id}/transfer: the front door passes a referral to another authority.

Runs on the real dev server and worker, with the read model on SQLite and PostgreSQL, under a
policy that lists two authorities (and, in the last class, under one that lists none).
"""

from __future__ import annotations

from typing import Any

import pytest

from models.policy import default_policy_text
from tests.api.conftest import Api
from tests.api.test_api_intake import REFERRALS, assert_error, aware
from tests.api.test_api_reads import UNKNOWN_ID

AUTHORITIES = """
[authorities.NNC]
name = "North Northamptonshire Council"
front_door = "mash@northnorthants.example"
manager = "mash-manager@northnorthants.example"

[authorities.WNC]
name = "West Northamptonshire Council"
front_door = "mash@westnorthants.example"
"""
#: The built-in policy (which has the transfer's ladder) with two authorities.
TRANSFER_POLICY = default_policy_text() + AUTHORITIES
NNC = "North Northamptonshire Council"


def transfer(referral_id: str) -> str:
    return f"{REFERRALS}/{referral_id}/transfer"


def acknowledgement(referral_id: str) -> str:
    return f"{REFERRALS}/{referral_id}/acknowledgement"


async def transferred(api: Api, authority: str = "NNC", note: str = "") -> dict[str, Any]:
    """A new referral, transferred; the transfer's answer."""
    created = await api.submit()
    response = await api.post(
        transfer(created["id"]), "front_door", json={"authority": authority, "note": note}
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


class TestTransfer:
    """The front door transfers; the referral waits for the other authority's acknowledgement."""

    api_policy = TRANSFER_POLICY

    async def test_transfer_opens_a_handoff_to_the_other_authority(self, api: Api) -> None:
        created = await api.submit()
        response = await api.post(
            transfer(created["id"]), "front_door", json={"authority": "NNC", "note": "Lives in Corby now."}
        )
        assert response.status_code == 200, response.text
        data = response.json()
        assert data["status"] == "awaiting_acknowledgement"
        assert data["awaiting_team"] == "other_authority"
        assert data["outcome"] is None and data["overdue"] is False
        first, second = data["handoffs"]
        assert (first["team"], first["result"], first["authority"], first["authority_name"]) == (
            "front_door",
            "transferred",
            "NNC",
            NNC,
        )
        assert first["note"] == "Lives in Corby now." and first["closed_by"]["role"] == "front_door"
        assert (second["team"], second["team_name"], second["authority"], second["closed_at"]) == (
            "other_authority",
            NNC,
            "NNC",
            None,
        )
        assert aware(data["due_at"]) == aware(second["due_at"]) > aware(second["opened_at"])
        # The read model already says so, and the chronology words it.
        got = (await api.get(f"{REFERRALS}/{created['id']}", "manager")).json()
        assert got["awaiting_team"] == "other_authority" and got["handoffs"][1]["authority"] == "NNC"
        events = (await api.get(f"{REFERRALS}/{created['id']}/chronology", "manager")).json()["events"]
        moved = next(e for e in events if e["type"] == "transferred")
        assert moved["data"] == {"authority": "NNC", "authority_name": NNC, "note": "Lives in Corby now."}
        assert moved["team"] == "front_door" and moved["actor"]["role"] == "front_door"
        opened = [e for e in events if e["type"] == "handoff_opened"][-1]
        assert (
            opened["team"] == "other_authority"
            and opened["data"]["team_email"] == "mash@northnorthants.example"
        )

    async def test_listed_under_the_other_authority_team(self, api: Api) -> None:
        data = await transferred(api, "WNC")
        for who in ("front_door", "manager"):
            listed = await api.get(REFERRALS, who, params={"team": "other_authority", "limit": 200})
            assert listed.status_code == 200, listed.text
            ids = [r["id"] for r in listed.json()["items"]]
            assert data["id"] in ids
            assert {r["awaiting_team"] for r in listed.json()["items"]} == {"other_authority"}
        # Nothing was handed to Early Help: its list does not hold it.
        early_help = await api.get(REFERRALS, "early_help", params={"limit": 200})
        assert data["id"] not in [r["id"] for r in early_help.json()["items"]]

    async def test_police_see_where_it_went_but_not_the_note(self, api: Api) -> None:
        data = await transferred(api, note="Mum's new partner is Mr Hidden")
        seen = await api.get(f"{REFERRALS}/{data['id']}", "police")
        assert seen.status_code == 200
        assert seen.json()["awaiting_team"] == "other_authority"
        assert "Mr Hidden" not in seen.text and "front_door user" not in seen.text
        chronology = (await api.get(f"{REFERRALS}/{data['id']}/chronology", "police")).json()
        moved = next(e for e in chronology["events"] if e["type"] == "transferred")
        assert moved["data"] == {"authority": "NNC", "authority_name": NNC} and moved["actor"] is None

    async def test_the_front_door_records_the_other_authoritys_acknowledgement(self, api: Api) -> None:
        data = await transferred(api)
        # Early Help's role cannot: the referral does not await it.
        refused = await api.post(acknowledgement(data["id"]), "early_help", json={"record_id": "EH-1"})
        assert_error(refused, 409, "not_awaiting")
        response = await api.post(
            acknowledgement(data["id"]), "front_door", json={"record_id": "NNC-2026-77", "note": "By phone."}
        )
        assert response.status_code == 200, response.text
        closed = response.json()
        assert (closed["status"], closed["record_id"], closed["awaiting_team"]) == (
            "closed",
            "NNC-2026-77",
            None,
        )
        last = closed["handoffs"][-1]
        assert (last["team"], last["result"], last["closed_by"]["role"]) == (
            "other_authority",
            "acknowledged",
            "front_door",
        )
        again = await api.post(acknowledgement(data["id"]), "front_door", json={"record_id": "NNC-2"})
        # "closed" whether or not the workflow has finished sending its last email.
        assert_error(again, 409, "closed")

    async def test_the_front_door_cannot_acknowledge_another_teams_handoff(self, api: Api) -> None:
        created = await api.submit()
        await api.decide(created["id"], "early_help")
        response = await api.post(acknowledgement(created["id"]), "front_door", json={"record_id": "EH-1"})
        error = assert_error(response, 409, "not_awaiting")
        assert "other_authority" in error["message"] and "early_help" in error["message"]

    async def test_not_awaiting_a_decision_is_409(self, api: Api) -> None:
        created = await api.submit()
        await api.decide(created["id"], "social_care")
        response = await api.post(transfer(created["id"]), "front_door", json={"authority": "NNC"})
        error = assert_error(response, 409, "not_awaiting")
        assert "front_door" in error["message"]
        data = await transferred(api)
        again = await api.post(transfer(data["id"]), "front_door", json={"authority": "WNC"})
        assert_error(again, 409, "not_awaiting")
        decided = await api.post(
            f"{REFERRALS}/{data['id']}/decision", "front_door", json={"outcome": "early_help"}
        )
        assert_error(decided, 409, "not_awaiting")

    async def test_a_closed_referral_is_409(self, api: Api) -> None:
        created = await api.submit()
        await api.decide(created["id"], "no_further_action")
        response = await api.post(transfer(created["id"]), "front_door", json={"authority": "NNC"})
        assert_error(response, 409, "closed")

    @pytest.mark.parametrize(
        "who", ["police", "early_help", "social_care", "other_agency", "manager", "admin"]
    )
    async def test_other_roles_may_not_transfer(self, api: Api, who: str) -> None:
        created = await api.submit()
        response = await api.post(transfer(created["id"]), who, json={"authority": "NNC"})
        assert_error(response, 403, "forbidden")
        got = (await api.get(f"{REFERRALS}/{created['id']}", "front_door")).json()
        assert got["awaiting_team"] == "front_door"

    async def test_no_token_is_401(self, api: Api) -> None:
        created = await api.submit()
        response = await api.post(transfer(created["id"]), json={"authority": "NNC"})
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"

    @pytest.mark.parametrize("referral_id", [UNKNOWN_ID, "not-an-id"])
    async def test_unknown_id_is_404(self, api: Api, referral_id: str) -> None:
        response = await api.post(transfer(referral_id), "front_door", json={"authority": "NNC"})
        assert_error(response, 404, "not_found")

    async def test_an_authority_not_in_the_policy_is_422_naming_it(self, api: Api) -> None:
        created = await api.submit()
        response = await api.post(transfer(created["id"]), "front_door", json={"authority": "nnc"})
        error = assert_error(response, 422, "invalid")
        assert error["fields"] == {"authority": "unknown authority 'nnc' (use NNC, WNC)"}
        got = (await api.get(f"{REFERRALS}/{created['id']}", "front_door")).json()
        assert got["awaiting_team"] == "front_door" and len(got["handoffs"]) == 1

    @pytest.mark.parametrize(
        ("body", "fields"),
        [
            ({}, {"authority"}),
            ({"authority": ""}, {"authority"}),
            ({"authority": None}, {"authority"}),
            ({"authority": 7}, {"authority"}),
            ({"authority": "x" * 33}, {"authority"}),
            ({"authority": "NNC", "note": "x" * 2001}, {"note"}),
            ({"authority": "NNC", "note": "a\x00b"}, {"note"}),
            ({"authority": "NNC", "team": "early_help"}, {"team"}),
            ({"authority": "NNC", "outcome": "social_care"}, {"outcome"}),
            (["NNC"], {"body"}),
        ],
    )
    async def test_bad_body_is_422(self, api: Api, body: object, fields: set[str]) -> None:
        created = await api.submit()
        error = assert_error(await api.post(transfer(created["id"]), "front_door", json=body), 422, "invalid")
        assert set(error["fields"]) == fields
        # Still awaiting its decision.
        assert (await transferred_existing(api, created["id"]))["awaiting_team"] == "other_authority"

    async def test_openapi_declares_the_route_like_the_other_commands(self, api: Api) -> None:
        document = (await api.get("/openapi.json")).json()
        operation = document["paths"]["/api/v1/referrals/{referral_id}/transfer"]["post"]
        assert set(operation["responses"]) == {"200", "401", "403", "404", "409", "422", "503"}
        decision = document["paths"]["/api/v1/referrals/{referral_id}/decision"]["post"]
        assert set(operation["responses"]) == set(decision["responses"])
        schema = document["components"]["schemas"]["TransferCreate"]
        assert schema["required"] == ["authority"] and schema["additionalProperties"] is False
        assert operation["security"] == [{"bearerAuth": []}]


async def transferred_existing(api: Api, referral_id: str) -> dict[str, Any]:
    """Transfer an existing referral to NNC, which must be accepted."""
    response = await api.post(transfer(referral_id), "front_door", json={"authority": "NNC"})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


class TestWithoutAuthorities:
    """The built-in policy lists no authority: every transfer is refused, saying why."""

    async def test_transfer_is_422_naming_the_missing_section(self, api: Api) -> None:
        created = await api.submit()
        response = await api.post(transfer(created["id"]), "front_door", json={"authority": "NNC"})
        error = assert_error(response, 422, "invalid")
        assert error["fields"] == {
            "authority": "no other authorities are configured: the policy needs [authorities.<code>] sections"
        }
        got = (await api.get(f"{REFERRALS}/{created['id']}", "front_door")).json()
        assert got["awaiting_team"] == "front_door"

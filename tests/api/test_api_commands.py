"""POST decision, acknowledgement and decline: Workflow Updates answered synchronously."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api
from tests.api.test_api_intake import REFERRALS, assert_error, aware
from tests.api.test_api_reads import UNKNOWN_ID


def decision(referral_id: str) -> str:
    return f"{REFERRALS}/{referral_id}/decision"


def acknowledgement(referral_id: str) -> str:
    return f"{REFERRALS}/{referral_id}/acknowledgement"


def decline(referral_id: str) -> str:
    return f"{REFERRALS}/{referral_id}/decline"


class TestDecision:
    """The front door decides; 409 when no front-door decision is awaited."""

    async def test_early_help_outcome_opens_an_early_help_handoff(self, api: Api) -> None:
        created = await api.submit()
        response = await api.post(
            decision(created["id"]), "front_door", json={"outcome": "early_help", "note": "Signposted."}
        )
        assert response.status_code == 200, response.text
        data = response.json()
        assert data["id"] == created["id"]
        assert data["status"] == "awaiting_acknowledgement"
        assert data["awaiting_team"] == "early_help"
        assert data["outcome"] == "early_help"
        assert data["escalation_level"] == 0 and data["overdue"] is False
        assert [(h["seq"], h["team"]) for h in data["handoffs"]] == [(1, "front_door"), (2, "early_help")]
        first = data["handoffs"][0]
        assert first["result"] == "early_help" and first["note"] == "Signposted."
        assert first["closed_by"]["role"] == "front_door"
        assert aware(data["due_at"]) == aware(data["handoffs"][1]["due_at"])
        # The read model already says so.
        got = (await api.get(f"{REFERRALS}/{created['id']}", "early_help")).json()
        assert got["status"] == "awaiting_acknowledgement" and got["awaiting_team"] == "early_help"

    @pytest.mark.parametrize(
        ("outcome", "team"), [("social_care", "social_care"), ("other_agency", "other_agency")]
    )
    async def test_other_receiving_teams(self, api: Api, outcome: str, team: str) -> None:
        created = await api.submit()
        data = await api.decide(created["id"], outcome)
        assert data["status"] == "awaiting_acknowledgement" and data["awaiting_team"] == team

    async def test_no_further_action_closes(self, api: Api) -> None:
        created = await api.submit()
        data = await api.decide(created["id"], "no_further_action")
        assert data["status"] == "closed" and data["outcome"] == "no_further_action"
        assert data["awaiting_team"] is None and data["due_at"] is None and data["closed_at"]
        # Closed: nothing more is awaited, and the workflow has finished.
        again = await api.post(decision(created["id"]), "front_door", json={"outcome": "early_help"})
        assert_error(again, 409, "closed")
        ack = await api.post(acknowledgement(created["id"]), "early_help", json={"record_id": "EH-1"})
        assert_error(ack, 409, "closed")

    async def test_second_decision_is_409(self, api: Api) -> None:
        created = await api.submit()
        await api.decide(created["id"])
        again = await api.post(decision(created["id"]), "front_door", json={"outcome": "social_care"})
        error = assert_error(again, 409, "not_awaiting")
        assert "front_door" in error["message"]
        got = (await api.get(f"{REFERRALS}/{created['id']}", "front_door")).json()
        assert got["awaiting_team"] == "early_help" and len(got["handoffs"]) == 2

    @pytest.mark.parametrize("who", ["police", "early_help", "social_care", "manager", "admin"])
    async def test_other_roles_may_not_decide(self, api: Api, who: str) -> None:
        created = await api.submit()
        assert_error(
            await api.post(decision(created["id"]), who, json={"outcome": "early_help"}), 403, "forbidden"
        )

    @pytest.mark.parametrize("referral_id", [UNKNOWN_ID, "not-an-id"])
    async def test_unknown_id_is_404(self, api: Api, referral_id: str) -> None:
        response = await api.post(decision(referral_id), "front_door", json={"outcome": "early_help"})
        assert_error(response, 404, "not_found")

    async def test_a_referral_not_yet_listed_is_decided_by_its_workflow(self, api: Api) -> None:
        # Intake answered (201, or 202 while the read model is slow); the row is not there (yet):
        # the command goes to the workflow, which holds the referral, and the row comes back.
        from sqlalchemy import delete

        from models.db import create_engine
        from models.tables import Referral, ReferralEvent

        created = await api.submit()
        engine = create_engine(api.settings.resolved_database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(delete(ReferralEvent).where(ReferralEvent.referral_id == created["id"]))
                await conn.execute(delete(Referral).where(Referral.id == created["id"]))
        finally:
            await engine.dispose()
        assert_error(await api.get(f"/api/v1/referrals/{created['id']}", "front_door"), 404, "not_found")
        response = await api.post(decision(created["id"]), "front_door", json={"outcome": "early_help"})
        assert response.status_code == 200, response.text
        assert response.json()["awaiting_team"] == "early_help"
        listed = await api.listed(created["id"])
        assert listed.status_code == 200 and listed.json()["awaiting_team"] == "early_help"

    @pytest.mark.parametrize(
        ("body", "fields"),
        [
            ({"outcome": "prison"}, {"outcome"}),
            ({}, {"outcome"}),
            ({"outcome": None}, {"outcome"}),
            ({"outcome": "early_help", "note": "x" * 2001}, {"note"}),
            ({"outcome": "early_help", "urgent": True}, {"urgent"}),
            ({"outcome": "early_help", "note": "a\x00b"}, {"note"}),
            (["early_help"], {"body"}),
        ],
    )
    async def test_bad_body_is_422(self, api: Api, body: object, fields: set[str]) -> None:
        created = await api.submit()
        error = assert_error(await api.post(decision(created["id"]), "front_door", json=body), 422, "invalid")
        assert set(error["fields"]) == fields
        # Still awaiting its decision.
        assert (await api.decide(created["id"]))["awaiting_team"] == "early_help"


class TestAcknowledgement:
    """The receiving team records the referral; 409 when the referral does not await it."""

    async def test_early_help_acknowledges_and_the_referral_closes(self, api: Api) -> None:
        created = await api.submit()
        await api.decide(created["id"], "early_help")
        response = await api.post(
            acknowledgement(created["id"]), "early_help", json={"record_id": " EH-2026-001 ", "note": "Open."}
        )
        assert response.status_code == 200, response.text
        data = response.json()
        assert data["status"] == "closed"
        assert data["record_id"] == "EH-2026-001"
        assert data["awaiting_team"] is None and data["closed_at"]
        last = data["handoffs"][-1]
        assert (last["team"], last["result"], last["record_id"]) == (
            "early_help",
            "acknowledged",
            "EH-2026-001",
        )
        got = (await api.get(f"{REFERRALS}/{created['id']}", "front_door")).json()
        assert got["status"] == "closed" and got["record_id"] == "EH-2026-001"
        # The referring officer learns the status and outcome, not the council's record id.
        told = (await api.get(f"{REFERRALS}/{created['id']}", "police")).json()
        assert (told["status"], told["outcome"], told["record_id"]) == ("closed", "early_help", None)
        again = await api.post(acknowledgement(created["id"]), "early_help", json={"record_id": "EH-2"})
        assert_error(again, 409, "closed")

    async def test_social_care_acknowledges_its_own_handoff(self, api: Api) -> None:
        created = await api.submit()
        await api.decide(created["id"], "social_care")
        response = await api.post(acknowledgement(created["id"]), "social_care", json={"record_id": "SC-1"})
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "closed" and response.json()["record_id"] == "SC-1"

    async def test_early_help_while_awaiting_the_front_door_is_409(self, api: Api) -> None:
        created = await api.submit()
        response = await api.post(acknowledgement(created["id"]), "early_help", json={"record_id": "EH-1"})
        error = assert_error(response, 409, "not_awaiting")
        assert "early_help" in error["message"]

    async def test_social_care_on_an_early_help_handoff_is_409(self, api: Api) -> None:
        created = await api.submit()
        await api.decide(created["id"], "early_help")
        response = await api.post(acknowledgement(created["id"]), "social_care", json={"record_id": "SC-1"})
        assert_error(response, 409, "not_awaiting")
        got = (await api.get(f"{REFERRALS}/{created['id']}", "early_help")).json()
        assert got["status"] == "awaiting_acknowledgement" and got["record_id"] is None

    @pytest.mark.parametrize("who", ["police", "manager", "admin"])
    async def test_roles_that_do_not_receive_may_not_acknowledge(self, api: Api, who: str) -> None:
        created = await api.submit()
        await api.decide(created["id"], "early_help")
        response = await api.post(acknowledgement(created["id"]), who, json={"record_id": "X-1"})
        assert_error(response, 403, "forbidden")

    async def test_the_front_door_may_not_acknowledge_a_teams_handoff(self, api: Api) -> None:
        # It records only another authority's acknowledgement of a transfer (test_api_transfer):
        # a receiving team's hand-off is refused, and stays open.
        created = await api.submit()
        await api.decide(created["id"], "early_help")
        response = await api.post(acknowledgement(created["id"]), "front_door", json={"record_id": "X-1"})
        error = assert_error(response, 409, "not_awaiting")
        assert "other_authority" in error["message"]
        got = (await api.get(f"{REFERRALS}/{created['id']}", "early_help")).json()
        assert got["status"] == "awaiting_acknowledgement" and got["record_id"] is None

    async def test_unknown_id_is_404(self, api: Api) -> None:
        response = await api.post(acknowledgement(UNKNOWN_ID), "early_help", json={"record_id": "EH-1"})
        assert_error(response, 404, "not_found")

    @pytest.mark.parametrize(
        ("body", "fields"),
        [
            ({}, {"record_id"}),
            ({"note": "no record"}, {"record_id"}),
            ({"record_id": "   "}, {"record_id"}),
            ({"record_id": "x" * 101}, {"record_id"}),
            ({"record_id": 12}, {"record_id"}),
            ({"record_id": "EH\x001"}, {"record_id"}),
            ({"record_id": "EH-1", "team": "social_care"}, {"team"}),
        ],
    )
    async def test_bad_body_is_422(self, api: Api, body: dict[str, object], fields: set[str]) -> None:
        created = await api.submit()
        await api.decide(created["id"], "early_help")
        response = await api.post(acknowledgement(created["id"]), "early_help", json=body)
        assert set(assert_error(response, 422, "invalid")["fields"]) == fields


class TestDecline:
    """Early Help hands a referral back to the front door; 409 when not awaiting Early Help."""

    async def test_decline_opens_a_third_handoff_to_the_front_door(self, api: Api) -> None:
        created = await api.submit()
        await api.decide(created["id"], "early_help")
        response = await api.post(
            decline(created["id"]),
            "early_help",
            json={"reason": "consent_declined", "note": "Family said no."},
        )
        assert response.status_code == 200, response.text
        data = response.json()
        assert data["status"] == "awaiting_decision" and data["awaiting_team"] == "front_door"
        assert data["escalation_level"] == 0
        assert [(h["seq"], h["team"]) for h in data["handoffs"]] == [
            (1, "front_door"),
            (2, "early_help"),
            (3, "front_door"),
        ]
        assert data["handoffs"][1]["result"] == "consent_declined"
        assert data["handoffs"][2]["closed_at"] is None
        # The front door reviews it and may decide again.
        again = await api.decide(created["id"], "social_care")
        assert again["awaiting_team"] == "social_care" and len(again["handoffs"]) == 4
        events = (await api.get(f"{REFERRALS}/{created['id']}/chronology", "manager")).json()["events"]
        assert "declined" in [e["type"] for e in events]

    async def test_decline_when_not_awaiting_early_help_is_409(self, api: Api) -> None:
        created = await api.submit()
        response = await api.post(decline(created["id"]), "early_help", json={"reason": "not_appropriate"})
        assert_error(response, 409, "not_awaiting")
        await api.decide(created["id"], "social_care")
        response = await api.post(decline(created["id"]), "early_help", json={"reason": "not_appropriate"})
        assert_error(response, 409, "not_awaiting")

    async def test_second_decline_is_409(self, api: Api) -> None:
        created = await api.submit()
        await api.decide(created["id"], "early_help")
        await api.decline(created["id"])
        response = await api.post(decline(created["id"]), "early_help", json={"reason": "not_appropriate"})
        assert_error(response, 409, "not_awaiting")

    @pytest.mark.parametrize("who", ["front_door", "social_care", "police", "manager", "admin"])
    async def test_other_roles_may_not_decline(self, api: Api, who: str) -> None:
        created = await api.submit()
        await api.decide(created["id"], "early_help")
        response = await api.post(decline(created["id"]), who, json={"reason": "not_appropriate"})
        assert_error(response, 403, "forbidden")

    async def test_unknown_id_is_404(self, api: Api) -> None:
        response = await api.post(decline(UNKNOWN_ID), "early_help", json={"reason": "not_appropriate"})
        assert_error(response, 404, "not_found")

    @pytest.mark.parametrize(
        ("body", "fields"),
        [({"reason": "busy"}, {"reason"}), ({}, {"reason"}), ({"reason": "not_appropriate", "x": 1}, {"x"})],
    )
    async def test_bad_body_is_422(self, api: Api, body: dict[str, object], fields: set[str]) -> None:
        created = await api.submit()
        await api.decide(created["id"], "early_help")
        response = await api.post(decline(created["id"]), "early_help", json=body)
        assert set(assert_error(response, 422, "invalid")["fields"]) == fields

"""Least privilege on the JSON API: the whole matrix of role x route x (own/other force, handed/not).

Three shared referrals of the police users' own force: `waiting` (awaiting the front door's
decision, never handed to a receiving team), `handed` (decided to Early Help, awaiting its
acknowledgement) and `transferred` (passed to another authority, awaiting its acknowledgement,
which the front door may record). `police_other` belongs to another force. A cell that should
change a referral gets a fresh one, so the shared three never move.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from tests.api.conftest import USERS, Api, referral_body
from tests.api.test_api_intake import assert_error
from tests.api.test_api_transfer import TRANSFER_POLICY

REFERRALS = "/api/v1/referrals"
WHO = list(USERS)

#: who -> expected status on (waiting, handed, transferred): GET one referral, its chronology
#: (JSON and CSV).
READ = {
    "police": (200, 200, 200),
    "police_other": (403, 403, 403),
    "front_door": (200, 200, 200),
    "early_help": (403, 200, 403),
    "social_care": (403, 403, 403),
    "other_agency": (403, 403, 403),
    "manager": (200, 200, 200),
    "admin": (403, 403, 403),
}
LIST = {
    "police": 403,
    "police_other": 403,
    "front_door": 200,
    "early_help": 200,
    "social_care": 200,
    "other_agency": 200,
    "manager": 200,
    "admin": 403,
}
SUBMIT = {who: 403 for who in WHO} | {"police": 201, "front_door": 201}
#: Commands: 403 for a role that may never; 409 for one that may, on a referral not awaiting it.
DECISION = {who: (403, 403, 403) for who in WHO} | {"front_door": (200, 409, 409)}
#: The front door records another authority's acknowledgement of a transfer (e.g. by phone),
#: and only that: on another team's hand-off it is 409 like any team not awaited.
ACKNOWLEDGEMENT = {who: (403, 403, 403) for who in WHO} | {
    "front_door": (409, 409, 200),
    "early_help": (409, 200, 409),
    "social_care": (409, 409, 409),
    "other_agency": (409, 409, 409),
}
DECLINE = {who: (403, 403, 403) for who in WHO} | {"early_help": (409, 200, 409)}
TRANSFER = {who: (403, 403, 403) for who in WHO} | {"front_door": (200, 409, 409)}
COMMANDS = {
    "decision": (DECISION, {"outcome": "social_care"}),
    "acknowledgement": (ACKNOWLEDGEMENT, {"record_id": "REC-1"}),
    "decline": (DECLINE, {"reason": "not_appropriate"}),
    "transfer": (TRANSFER, {"authority": "NNC"}),
}
STATES = ["waiting", "handed", "transferred"]


@dataclass
class Shared:
    """The three referrals every read cell uses."""

    waiting: dict[str, Any]
    handed: dict[str, Any]
    transferred: dict[str, Any]

    def id_of(self, state: str) -> str:
        """The id of the shared referral in `state`."""
        referral: dict[str, Any] = getattr(self, state)
        return str(referral["id"])


@pytest_asyncio.fixture(scope="class")
async def shared(api: Api) -> Shared:
    """Referrals awaiting decision, handed to Early Help and transferred, of the police's own force."""
    waiting = await api.submit()
    handed = await api.submit()
    await api.decide(handed["id"], "early_help")
    transferred = await api.submit()
    await transfer(api, transferred["id"])
    return Shared(waiting, handed, transferred)


async def transfer(api: Api, referral_id: str) -> None:
    """The front door's transfer to another authority, which must be accepted."""
    response = await api.post(f"{REFERRALS}/{referral_id}/transfer", "front_door", json={"authority": "NNC"})
    assert response.status_code == 200, response.text


async def fresh(api: Api, state: str) -> str:
    """A new referral in `state`, for a cell that changes it."""
    created = await api.submit()
    if state == "handed":
        await api.decide(created["id"], "early_help")
    if state == "transferred":
        await transfer(api, created["id"])
    return str(created["id"])


def status_of(response: Any, expected: int) -> None:
    """`expected`, with the contract's error shape when it is an error."""
    if expected >= 400:
        code = {401: "unauthorized", 403: "forbidden", 409: "not_awaiting"}[expected]
        assert_error(response, expected, code)
    else:
        assert response.status_code == expected, response.text


class TestMatrix:
    """Each role on each route, on each kind of referral: the exact status code."""

    # Lists the authorities a transfer needs (the built-in policy lists none).
    api_policy = TRANSFER_POLICY

    @pytest.mark.parametrize("state", STATES)
    @pytest.mark.parametrize("who", WHO)
    async def test_get_referral(self, api: Api, shared: Shared, who: str, state: str) -> None:
        expected = READ[who][STATES.index(state)]
        response = await api.get(f"{REFERRALS}/{shared.id_of(state)}", who)
        status_of(response, expected)
        if expected == 200:
            assert response.json()["id"] == shared.id_of(state)

    @pytest.mark.parametrize("fmt", ["json", "csv"])
    @pytest.mark.parametrize("state", STATES)
    @pytest.mark.parametrize("who", WHO)
    async def test_chronology(self, api: Api, shared: Shared, who: str, state: str, fmt: str) -> None:
        path = f"{REFERRALS}/{shared.id_of(state)}/chronology"
        response = await api.get(path, who, params={"format": fmt})
        status_of(response, READ[who][STATES.index(state)])

    @pytest.mark.parametrize("who", WHO)
    async def test_list(self, api: Api, shared: Shared, who: str) -> None:
        status_of(await api.get(REFERRALS, who), LIST[who])

    @pytest.mark.parametrize("who", WHO)
    async def test_user_administration(self, api: Api, who: str) -> None:
        expected = 200 if who == "admin" else 403
        listed = await api.get("/api/v1/users", who)
        status_of(listed, expected)
        if who == "admin":
            return
        # Nobody but an admin may make a user, or a token for themselves.
        body = {"role": "manager", "name": "New Manager", "email": f"new-{who}@example.test"}
        status_of(await api.post("/api/v1/users", who, json=body), 403)

    @pytest.mark.parametrize("who", WHO)
    async def test_submit(self, api: Api, who: str) -> None:
        status_of(await api.post(REFERRALS, who, json=referral_body()), SUBMIT[who])

    @pytest.mark.parametrize("state", STATES)
    @pytest.mark.parametrize("who", WHO)
    @pytest.mark.parametrize("command", list(COMMANDS))
    async def test_command(self, api: Api, shared: Shared, command: str, who: str, state: str) -> None:
        table, body = COMMANDS[command]
        expected = table[who][STATES.index(state)]
        referral_id = await fresh(api, state) if expected == 200 else shared.id_of(state)
        response = await api.post(f"{REFERRALS}/{referral_id}/{command}", who, json=body)
        status_of(response, expected)

    async def test_no_token_is_401_everywhere(self, api: Api, shared: Shared) -> None:
        rid = shared.id_of("handed")
        calls = [
            ("GET", REFERRALS, None),
            ("POST", REFERRALS, referral_body()),
            ("GET", f"{REFERRALS}/{rid}", None),
            ("GET", f"{REFERRALS}/{rid}/chronology", None),
            *[("POST", f"{REFERRALS}/{rid}/{command}", body) for command, (_, body) in COMMANDS.items()],
        ]
        for method, path, body in calls:
            response = await api.http.request(method, path, json=body)
            status_of(response, 401)
        # Nothing was changed by any of them.
        got = await api.get(f"{REFERRALS}/{rid}", "front_door")
        assert (
            got.json()["status"] == "awaiting_acknowledgement"
            and got.json()["handoffs"][-1]["closed_at"] is None
        )


class TestWhatPoliceSee:
    """A police officer sees a referral's status and outcome, never its personal details or notes."""

    async def test_status_and_outcome_only(self, api: Api) -> None:
        created = await api.submit()
        decided = await api.post(
            f"{REFERRALS}/{created['id']}/decision",
            "front_door",
            json={"outcome": "early_help", "note": "Family known to Ms Hidden-Note"},
        )
        assert decided.status_code == 200
        acked = await api.post(
            f"{REFERRALS}/{created['id']}/acknowledgement",
            "early_help",
            json={"record_id": "EH-SECRET-1", "note": "Allocated to Mr Worker"},
        )
        assert acked.status_code == 200
        seen = await api.get(f"{REFERRALS}/{created['id']}", "police")
        data = seen.json()
        assert (data["status"], data["outcome"]) == ("closed", "early_help")
        assert data["details"] is None and data["record_id"] is None
        text = seen.text
        for secret in ("Zebedee", "Quixotic", "2015-03-01", "Hidden-Note", "EH-SECRET-1", "Mr Worker"):
            assert secret not in text, secret
        assert "front_door user" not in text and "early_help user" not in text  # names of staff
        chronology = await api.get(f"{REFERRALS}/{created['id']}/chronology", "police")
        assert [e["type"] for e in chronology.json()["events"]][:3] == [
            "received",
            "handoff_opened",
            "decided",
        ]
        assert all(e["actor"] is None for e in chronology.json()["events"])
        assert "Hidden-Note" not in chronology.text and "EH-SECRET-1" not in chronology.text
        assert chronology.json()["access"] is None
        # The front door sees all of it.
        full = await api.get(f"{REFERRALS}/{created['id']}", "front_door")
        assert full.json()["details"]["children"][0]["given_name"] == "Zebedee"
        assert full.json()["record_id"] == "EH-SECRET-1"

    async def test_duplicate_submission_answers_with_the_redacted_state(self, api: Api) -> None:
        body = referral_body()
        created = await api.submit(body)
        await api.decide(created["id"], "no_further_action")
        again = await api.post(REFERRALS, "police", json=body)
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "closed" and again.json()["details"] is None
        assert all(h["closed_by"] is None for h in again.json()["handoffs"])


class TestAccessAudit:
    """Every read of personal details is recorded, and managers see who read what."""

    async def test_reads_are_recorded_and_shown_to_managers(self, api: Api) -> None:
        created = await api.submit()
        path = f"{REFERRALS}/{created['id']}"
        assert (await api.get(path, "front_door")).status_code == 200
        assert (
            await api.get(f"{path}/chronology", "front_door", params={"format": "csv"})
        ).status_code == 200
        assert (await api.get(path, "police")).status_code == 200  # no personal details: not recorded
        assert (await api.get(path, "police_other")).status_code == 403  # refused: nothing read
        first = await api.get(f"{path}/chronology", "manager")
        access = first.json()["access"]
        assert [(a["name"], a["role"], a["via"]) for a in access] == [
            ("front_door user", "front_door", "api"),
            ("front_door user", "front_door", "chronology_csv"),
        ]
        assert all(a["at"] and a["user_id"] for a in access)
        # The manager's own read is recorded too, and seen next time.
        second = await api.get(f"{path}/chronology", "manager")
        assert [a["via"] for a in second.json()["access"]][-1] == "chronology"
        assert second.json()["access"][-1]["role"] == "manager"
        # Nobody else sees the access log.
        assert (await api.get(f"{path}/chronology", "front_door")).json()["access"] is None

    async def test_another_referrals_reads_are_not_shown(self, api: Api) -> None:
        one = await api.submit()
        other = await api.submit()
        assert (await api.get(f"{REFERRALS}/{one['id']}", "front_door")).status_code == 200
        response = await api.get(f"{REFERRALS}/{other['id']}/chronology", "manager")
        assert [a["via"] for a in response.json()["access"]] == []

"""Least privilege on the pages: role x page x (own/other force, handed/not), and the access log.

The same three shared referrals as tests/api/test_api_access.py: `waiting` (never handed to a
receiving team), `handed` (awaiting Early Help) and `transferred` (awaiting another authority).
Actions that should succeed get a fresh one.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import pytest_asyncio

from tests.api.conftest import USERS
from tests.api.test_api_access import READ as API_READ
from tests.api.test_api_access import STATES, transfer
from tests.api.test_api_transfer import TRANSFER_POLICY
from tests.web.conftest import Page, Web, csrf_of

WHO = list(USERS)
#: The page and its chronology spreadsheet follow the same rule as the JSON API.
READ = API_READ
#: who -> status of the dashboard and its CSV export.
DASHBOARD = {who: 200 for who in WHO} | {"police": 403, "police_other": 403, "admin": 403}
#: Actions from the page: 303 done, 409 someone else's state, 403 may not.
#: (A receiving team is refused a referral never handed to it before anything is tried: 403.)
ACTIONS = {
    "decision": (
        {who: (403, 403, 403) for who in WHO} | {"front_door": (303, 409, 409)},
        {"outcome": "social_care"},
    ),
    "acknowledgement": (
        # The front door records another authority's acknowledgement of a transfer.
        {who: (403, 403, 403) for who in WHO}
        | {"early_help": (403, 303, 403), "front_door": (409, 409, 303)},
        {"record_id": "REC-1"},
    ),
    "decline": (
        {who: (403, 403, 403) for who in WHO} | {"early_help": (403, 303, 403)},
        {"reason": "not_appropriate"},
    ),
    "transfer": (
        {who: (403, 403, 403) for who in WHO} | {"front_door": (303, 409, 409)},
        {"authority": "NNC"},
    ),
}


@dataclass
class Shared:
    """Ids of the three referrals every read cell uses."""

    waiting: str
    handed: str
    transferred: str


@pytest_asyncio.fixture(scope="class")
async def shared(web: Web) -> Shared:
    """A referral awaiting decision, one handed to Early Help and one transferred."""
    waiting = await web.api.submit()
    handed = await web.api.submit()
    await web.api.decide(handed["id"], "early_help")
    transferred = await web.api.submit()
    await transfer(web.api, transferred["id"])
    return Shared(waiting["id"], handed["id"], transferred["id"])


class TestPageMatrix:
    """Each role on each page and action: the exact status code."""

    # Lists the authorities a transfer needs (the built-in policy lists none).
    api_policy = TRANSFER_POLICY

    @pytest.mark.parametrize("state", STATES)
    @pytest.mark.parametrize("who", WHO)
    async def test_referral_page_and_its_spreadsheet(
        self, web: Web, shared: Shared, who: str, state: str
    ) -> None:
        expected = READ[who][STATES.index(state)]
        path = f"/referrals/{getattr(shared, state)}"
        async with web.browser(who) as http:
            page = await http.get(path)
            assert page.status_code == expected, page.text
            if expected == 403:
                assert "Zebedee" not in page.text
            spreadsheet = await http.get(f"{path}/chronology.csv")
            assert spreadsheet.status_code == expected

    @pytest.mark.parametrize("who", WHO)
    async def test_dashboard_and_export(self, web: Web, shared: Shared, who: str) -> None:
        async with web.browser(who) as http:
            assert (await http.get("/")).status_code == DASHBOARD[who]
            assert (await http.get("/referrals.csv")).status_code == DASHBOARD[who]

    @pytest.mark.parametrize("state", STATES)
    @pytest.mark.parametrize("who", WHO)
    @pytest.mark.parametrize("action", list(ACTIONS))
    async def test_action(self, web: Web, shared: Shared, action: str, who: str, state: str) -> None:
        table, data = ACTIONS[action]
        expected = table[who][STATES.index(state)]
        referral_id = getattr(shared, state)
        if expected == 303:
            fresh = await web.api.submit()
            if state == "handed":
                await web.api.decide(fresh["id"], "early_help")
            if state == "transferred":
                await transfer(web.api, fresh["id"])
            referral_id = fresh["id"]
        async with web.browser(who) as http:
            # Any page of a signed-in user carries the session's CSRF token (the sign-out form).
            token = csrf_of((await http.get("/")).text)
            response = await http.post(
                f"/referrals/{referral_id}/{action}", data={**data, "csrf_token": token}
            )
            assert response.status_code == expected, response.text


class TestScopeAndAudit:
    """Receiving teams see only what was handed to them; managers see who read what."""

    async def test_dashboard_of_a_receiving_team_lists_only_its_referrals(self, web: Web) -> None:
        waiting = await web.api.submit()
        handed = await web.api.submit()
        await web.api.decide(handed["id"], "early_help")
        async with web.browser("early_help") as http:
            listed = {
                e["attrs"]["data-reference"]
                for e in Page((await http.get("/")).text).with_attr("data-reference")
            }
            exported = (await http.get("/referrals.csv")).text
        assert handed["reference"] in listed and waiting["reference"] not in listed
        assert handed["reference"] in exported and waiting["reference"] not in exported
        async with web.browser("front_door") as http:
            listed = {
                e["attrs"]["data-reference"]
                for e in Page((await http.get("/")).text).with_attr("data-reference")
            }
        assert {handed["reference"], waiting["reference"]} <= listed

    async def test_managers_see_who_read_the_personal_details(self, web: Web) -> None:
        created = await web.api.submit()
        path = f"/referrals/{created['id']}"
        async with web.browser("front_door") as http:
            assert (await http.get(path)).status_code == 200
            assert "Who has read the personal details" not in (await http.get(path)).text
        async with web.browser("police") as http:
            assert (await http.get(path)).status_code == 200  # no personal details: not recorded
        async with web.browser("manager") as http:
            page = Page((await http.get(path)).text)
        rows = page.with_attr("data-access-via")
        assert [r["attrs"]["data-access-via"] for r in rows] == ["page", "page"]
        # The front-door user's two reads, each with who and when, and nobody else's.
        assert len({r["attrs"]["data-access-user"] for r in rows}) == 1

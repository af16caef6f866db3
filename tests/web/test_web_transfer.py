"""Transfers on the pages: the front door's form, the other authority's emailed link, the
chronology's wording, the dashboard's team filter, and the form absent when no authority is listed."""

from __future__ import annotations

from models.enums import Team
from tests.api.conftest import SECRET
from tests.api.test_api_access import transfer
from tests.api.test_api_transfer import TRANSFER_POLICY
from tests.web.conftest import Page, Web, csrf_of
from tests.web.test_web_referral import form_post, summary
from web.links import AckLinks

NNC = "North Northamptonshire Council"


class TestTransferFromThePage:
    api_policy = TRANSFER_POLICY

    async def test_front_door_transfers_then_records_the_other_authoritys_acknowledgement(
        self, web: Web
    ) -> None:
        created = await web.api.submit()
        path = f"/referrals/{created['id']}"
        async with web.browser("manager") as http:
            assert "/transfer" not in (await http.get(path)).text  # read only
        async with web.browser("front_door") as http:
            page = await http.get(path)
            assert f'action="{path}/transfer"' in page.text and f'action="{path}/decision"' in page.text
            assert NNC in page.text and "West Northamptonshire Council" in page.text
            done = await form_post(http, path, "transfer", {"authority": "NNC", "note": "moved to Corby"})
            assert done.status_code == 303 and done.headers["location"] == f"{path}?done=transferred"
            after = await http.get(done.headers["location"])
            assert "Referral transferred to another authority" in after.text
            assert summary(after.text)["data-awaiting-team"] == "other_authority"
            assert f"{NNC} (another authority)" in after.text
            assert "Record decision" not in after.text and f'action="{path}/transfer"' not in after.text
            events = Page(after.text).with_attr("data-event", "transferred")
            assert events, "no transferred event in the chronology"
            text = " ".join(after.text.split())
            assert f"Transferred to another authority: {NNC}" in text
            assert f"Handed to {NNC} (another authority)" in text
            assert "Transferred to another authority" in text  # the hand-off's result
            # The front door records the other authority's acknowledgement (they phoned).
            assert "Record the other authority" in after.text
            blank = await form_post(http, path, "acknowledgement", {"record_id": " "})
            assert (
                blank.status_code == 422 and "Enter the record id the other authority gave you" in blank.text
            )
            recorded = await form_post(
                http, path, "acknowledgement", {"record_id": "NNC-99", "note": "phoned"}
            )
            assert recorded.status_code == 303 and recorded.headers["location"] == f"{path}?done=recorded"
            closed = await http.get(recorded.headers["location"])
            assert "The other authority&#39;s acknowledgement is recorded" in closed.text
            assert summary(closed.text)["data-referral-status"] == "closed" and "NNC-99" in closed.text
        spreadsheet = await web.api.get(f"/api/v1/referrals/{created['id']}/chronology", "manager")
        assert "transferred" in [e["type"] for e in spreadsheet.json()["events"]]

    async def test_invalid_choices_show_the_page_with_an_error_summary(self, web: Web) -> None:
        created = await web.api.submit()
        path = f"/referrals/{created['id']}"
        async with web.browser("front_door") as http:
            for data in ({}, {"authority": "nowhere"}, {"authority": "nnc"}):
                refused = await form_post(http, path, "transfer", {**data, "note": "keep me"})
                assert refused.status_code == 422, data
                assert 'href="#authority"' in refused.text
                assert "Select the authority the child lives in" in refused.text and "keep me" in refused.text
            long = await form_post(http, path, "transfer", {"authority": "NNC", "note": "x" * 2001})
            assert long.status_code == 422 and 'href="#transfer-note"' in long.text
        got = await web.api.get(f"/api/v1/referrals/{created['id']}", "manager")
        assert got.json()["status"] == "awaiting_decision"

    async def test_a_transfer_after_someone_decided_says_so(self, web: Web) -> None:
        created = await web.api.submit()
        path = f"/referrals/{created['id']}"
        async with web.browser("front_door") as http:
            stale = await http.get(path)
            await web.api.decide(created["id"], "social_care")
            late = await http.post(
                f"{path}/transfer", data={"authority": "NNC", "csrf_token": csrf_of(stale.text)}
            )
            assert late.status_code == 409 and 'data-conflict="true"' in late.text
            assert summary(late.text)["data-awaiting-team"] == "social_care"

    async def test_without_the_csrf_token_nothing_is_transferred(self, web: Web) -> None:
        created = await web.api.submit()
        path = f"/referrals/{created['id']}"
        async with web.browser("front_door") as http:
            forged = await http.post(f"{path}/transfer", data={"authority": "NNC"})
            assert forged.status_code == 403
        got = await web.api.get(f"/api/v1/referrals/{created['id']}", "manager")
        assert got.json()["awaiting_team"] == "front_door"

    async def test_the_other_authority_acknowledges_through_its_emailed_link(self, web: Web) -> None:
        created = await web.api.submit()
        await transfer(web.api, created["id"])
        token = AckLinks(SECRET, web.api.settings.public_url).token(created["id"], 2, Team.OTHER_AUTHORITY)
        async with web.anonymous() as http:
            form = await http.get(f"/ack/{token}")
            assert form.status_code == 200 and NNC in form.text
            assert "Zebedee" not in form.text and "Photo posted online" not in form.text
            done = await http.post(f"/ack/{token}", data={"record_id": "NNC-2026-5"})
            assert done.status_code == 200 and Page(done.text).h1 == ["Referral acknowledged"]
        got = (await web.api.get(f"/api/v1/referrals/{created['id']}", "manager")).json()
        assert (got["status"], got["record_id"]) == ("closed", "NNC-2026-5")
        acked = next(e for e in got["events"] if e["type"] == "acknowledged")
        assert acked["actor"]["name"] == f"emailed link ({NNC})" and acked["team"] == "other_authority"

    async def test_dashboard_filters_by_the_other_authority_team(self, web: Web) -> None:
        created = await web.api.submit()
        await transfer(web.api, created["id"])
        async with web.browser("manager") as http:
            page = await http.get("/", params={"team": "other_authority"})
            assert page.status_code == 200
            rows = Page(page.text).with_attr("data-referral-id")
            mine = [r for r in rows if r["attrs"]["data-referral-id"] == created["id"]]
            assert mine and mine[0]["cells"][3] == "Another local authority"
            assert 'value="other_authority"' in page.text  # a choice of the team filter
            counts = Page(page.text).with_attr("data-team-count", "other_authority")
            assert counts and int(counts[0]["attrs"]["data-open"]) >= 1
        async with web.browser("early_help") as http:
            page = await http.get("/", params={"team": "other_authority"})
            assert created["id"] not in page.text  # never handed to Early Help


class TestWithoutAuthorities:
    async def test_no_transfer_form_and_a_posted_one_is_refused(self, web: Web) -> None:
        created = await web.api.submit()
        path = f"/referrals/{created['id']}"
        async with web.browser("front_door") as http:
            page = await http.get(path)
            assert "Record decision" in page.text and "/transfer" not in page.text
            refused = await form_post(http, path, "transfer", {"authority": "NNC"})
            assert refused.status_code == 422
            assert "Select the authority the child lives in" in refused.text
        async with web.browser("manager") as http:
            # No authorities, none transferred: the counts show this authority's four teams only.
            dashboard = Page((await http.get("/")).text)
            assert not dashboard.with_attr("data-team-count", "other_authority")
            assert len(dashboard.with_attr("data-team-count")) == 4
        got = await web.api.get(f"/api/v1/referrals/{created['id']}", "manager")
        assert got.json()["awaiting_team"] == "front_door"

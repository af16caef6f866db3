"""`/referrals/{id}`: what each role sees, the chronology and its CSV, and acting from the page."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

import httpx

from tests.web.conftest import Page, Web, csrf_of
from web.referral_page import CONFLICT

CHILD = "Zebedee"  # the child's given name in every referral the tests submit
SUMMARY = "Photo posted online of child surrounded by cash"


async def form_post(
    http: httpx.AsyncClient, page_path: str, action: str, data: dict[str, str]
) -> httpx.Response:
    """Post one of the page's forms, with the page's CSRF token, as a browser would."""
    page = await http.get(page_path)
    assert page.status_code == 200, page.text
    return await http.post(f"{page_path}/{action}", data={**data, "csrf_token": csrf_of(page.text)})


def summary(html: str) -> dict[str, str]:
    """The data attributes of the referral's summary list."""
    found = Page(html).with_attr("data-referral-status")
    assert found, "no summary list"
    attrs: dict[str, str] = found[0]["attrs"]
    return attrs


class TestReferralPage:
    """The referral, its hand-offs, personal details by role, and its chronology."""

    async def test_personal_details_only_for_council_roles(self, web: Web) -> None:
        created = await web.api.submit()
        await web.api.decide(created["id"], "early_help")
        path = f"/referrals/{created['id']}"
        for who in ("front_door", "early_help", "manager"):
            async with web.browser(who) as http:
                response = await http.get(path)
                assert response.status_code == 200, who
                assert CHILD in response.text and SUMMARY in response.text, who
                assert "a.example@police.example" in response.text
                assert Page(response.text).h1 == [f"Referral {created['reference']}"]
        for who in ("social_care", "other_agency"):  # never handed to them
            async with web.browser(who) as http:
                response = await http.get(path)
                assert response.status_code == 403, who
                assert CHILD not in response.text and "not been handed to your team" in response.text
        async with web.browser("police") as http:
            response = await http.get(path)
            assert response.status_code == 200
            assert created["reference"] in response.text and "NP-" in response.text
            assert CHILD not in response.text and SUMMARY not in response.text
            assert "01604 000000" not in response.text and "Personal details" not in response.text
            assert Page(response.text).with_attr("data-event", "received")  # the chronology still shows
        async with web.browser("police_other") as http:
            other = await http.get(path)
            assert other.status_code == 403 and CHILD not in other.text
            assert "another police force" in other.text
            assert (await http.get(f"{path}/chronology.csv")).status_code == 403
        async with web.browser("admin") as http:
            assert (await http.get(path)).status_code == 403
        async with web.browser("manager") as http:
            unknown = await http.get("/referrals/0123456789abcdef0123456789abcdef")
            assert unknown.status_code == 404 and "Referral not found" in unknown.text
            assert unknown.headers["content-type"].startswith("text/html")
            assert (await http.get("/referrals/not-an-id")).status_code == 404
            assert (await http.get("/referrals/not-an-id/chronology.csv")).status_code == 404

    async def test_chronology_names_each_email_and_its_recipients(self, web: Web) -> None:
        created = await web.api.submit()
        await web.api.decide(created["id"], "early_help")
        path = f"/referrals/{created['id']}"
        async with web.browser("manager") as http:
            emails: list[dict[str, Any]] = []
            for _ in range(100):  # the outcome email is sent beside the next hand-off
                page = Page((await http.get(path)).text)
                emails = page.with_attr("data-event", "email_sent")
                if emails:
                    break
                await asyncio.sleep(0.1)
            assert emails, "no email in the chronology"
            assert emails[0]["attrs"]["data-recipients"] == "a.example@police.example"
            assert "To a.example@police.example" in emails[0]["cells"][4]
            events = [e["attrs"]["data-event"] for e in page.with_attr("data-event")]
            assert events[:4] == ["received", "handoff_opened", "decided", "handoff_opened"]
            decided = page.with_attr("data-event", "decided")[0]
            assert decided["cells"][2] == "Decision: Early Help"
            assert decided["cells"][3].startswith("front_door user")
            handoffs = page.with_attr("data-handoff")
            assert [h["attrs"]["data-team"] for h in handoffs] == ["front_door", "early_help"]
            assert handoffs[0]["cells"][4].startswith("Early Help")  # the front door's result
            exported = await http.get(f"{path}/chronology.csv")
            assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
            assert (
                f'filename="{created["reference"]}-chronology.csv"' in exported.headers["content-disposition"]
            )
            lines = list(csv.reader(io.StringIO(exported.text)))
            assert lines[0][:3] == ["Seq", "When", "Event"]
            assert len(lines) - 1 >= len(events)  # an email may have been sent since
            sent = [line for line in lines[1:] if line[2].startswith("Email sent")]
            assert sent and "To a.example@police.example" in sent[0][7]
        async with web.browser("police") as http:
            assert (await http.get(f"{path}/chronology.csv")).status_code == 200


class TestActions:
    """Deciding, acknowledging and declining from the page, through the same commands as the API."""

    async def test_front_door_decides_and_the_referral_moves_to_early_help(self, web: Web) -> None:
        created = await web.api.submit()
        path = f"/referrals/{created['id']}"
        async with web.browser("manager") as http:
            page = await http.get(path)
            assert "Record decision" not in page.text and "/decision" not in page.text
        async with web.browser("front_door") as http:
            page = await http.get(path)
            assert 'action="/referrals/{}/decision"'.format(created["id"]) in page.text
            done = await form_post(http, path, "decision", {"outcome": "early_help", "note": "known family"})
            assert done.status_code == 303 and done.headers["location"] == f"{path}?done=decision"
            after = await http.get(done.headers["location"])
            assert "Decision recorded" in after.text
            assert summary(after.text)["data-awaiting-team"] == "early_help"
            assert "Record decision" not in after.text  # nothing left for the front door to do
        async with web.browser("manager") as http:
            rows = Page((await http.get("/", params={"team": "early_help"})).text).with_attr(
                "data-referral-id"
            )
            mine = [r for r in rows if r["attrs"]["data-referral-id"] == created["id"]]
            assert mine and mine[0]["cells"][3] == "Early Help"
        got = await web.api.get(f"/api/v1/referrals/{created['id']}", "manager")
        assert got.json()["awaiting_team"] == "early_help"
        decided = [e for e in got.json()["events"] if e["type"] == "decided"]
        assert decided[0]["actor"]["role"] == "front_door" and decided[0]["data"]["note"] == "known family"

    async def test_a_second_decision_says_someone_else_got_there_first(self, web: Web) -> None:
        created = await web.api.submit()
        path = f"/referrals/{created['id']}"
        async with web.browser("front_door") as http:
            stale = await http.get(path)  # two people have the page open
            await web.api.decide(created["id"], "social_care")
            late = await http.post(
                f"{path}/decision", data={"outcome": "early_help", "csrf_token": csrf_of(stale.text)}
            )
            assert late.status_code == 409
            assert CONFLICT in late.text and 'data-conflict="true"' in late.text
            assert summary(late.text)["data-awaiting-team"] == "social_care"  # as the other person left it
        got = await web.api.get(f"/api/v1/referrals/{created['id']}", "manager")
        assert got.json()["awaiting_team"] == "social_care"

    async def test_invalid_input_shows_the_page_with_an_error_summary(self, web: Web) -> None:
        created = await web.api.submit()
        path = f"/referrals/{created['id']}"
        async with web.browser("front_door") as http:
            missing = await form_post(http, path, "decision", {"note": "forgot to choose"})
            assert missing.status_code == 422
            assert "There is a problem" in missing.text and 'href="#outcome"' in missing.text
            assert "Select what happens next" in missing.text and "forgot to choose" in missing.text
            assert Page(missing.text).title.startswith("Error: Referral")
            odd = await form_post(http, path, "decision", {"outcome": "prison"})
            assert odd.status_code == 422
            long = await form_post(http, path, "decision", {"outcome": "early_help", "note": "x" * 2001})
            assert long.status_code == 422 and 'href="#decision-note"' in long.text
        got = await web.api.get(f"/api/v1/referrals/{created['id']}", "manager")
        assert got.json()["status"] == "awaiting_decision"

    async def test_early_help_acknowledges_with_its_record_id(self, web: Web) -> None:
        created = await web.api.submit()
        await web.api.decide(created["id"], "early_help")
        path = f"/referrals/{created['id']}"
        async with web.browser("social_care") as http:
            page = await http.get(path)
            assert "/acknowledgement" not in page.text  # not awaiting social care
        async with web.browser("early_help") as http:
            page = await http.get(path)
            assert "/acknowledgement" in page.text and "/decline" in page.text
            blank = await form_post(http, path, "acknowledgement", {"record_id": "  "})
            assert blank.status_code == 422 and 'href="#record_id"' in blank.text
            done = await form_post(
                http, path, "acknowledgement", {"record_id": "EH-1234", "note": "allocated"}
            )
            assert done.status_code == 303 and done.headers["location"] == f"{path}?done=acknowledged"
            after = await http.get(done.headers["location"])
            assert "Referral acknowledged" in after.text
            assert summary(after.text)["data-referral-status"] == "closed"
            assert "EH-1234" in after.text
            again = await http.post(
                f"{path}/acknowledgement", data={"record_id": "EH-9", "csrf_token": csrf_of(page.text)}
            )
            assert again.status_code == 409 and CONFLICT in again.text

    async def test_early_help_declines_back_to_the_front_door(self, web: Web) -> None:
        created = await web.api.submit()
        await web.api.decide(created["id"], "early_help")
        path = f"/referrals/{created['id']}"
        async with web.browser("early_help") as http:
            missing = await form_post(http, path, "decline", {})
            assert missing.status_code == 422 and "Select why you are declining" in missing.text
            done = await form_post(
                http, path, "decline", {"reason": "consent_declined", "note": "no consent"}
            )
            assert done.status_code == 303 and done.headers["location"] == f"{path}?done=declined"
            after = await http.get(done.headers["location"])
            assert "Referral declined and returned to the front door" in after.text
            assert summary(after.text)["data-awaiting-team"] == "front_door"
        async with web.browser("front_door") as http:
            assert "Record decision" in (await http.get(path)).text

    async def test_roles_that_may_not_act_get_a_403_page(self, web: Web) -> None:
        created = await web.api.submit()
        await web.api.decide(created["id"], "early_help")
        path = f"/referrals/{created['id']}"
        cases = [
            ("manager", "decision", {"outcome": "early_help"}),
            ("early_help", "decision", {"outcome": "early_help"}),
            ("front_door", "decline", {"reason": "not_appropriate"}),
            ("police", "acknowledgement", {"record_id": "X"}),
            ("manager", "acknowledgement", {"record_id": "X"}),
        ]
        for who, action, data in cases:
            async with web.browser(who) as http:
                response = await form_post(http, path, action, data)
                assert response.status_code == 403, (who, action)
                assert "You cannot do this" in response.text
        async with web.anonymous() as http:
            anonymous = await http.post(f"{path}/decision", data={"outcome": "early_help"})
            assert anonymous.status_code == 303
            assert anonymous.headers["location"] == f"/sign-in?next={path}"
        got = await web.api.get(f"/api/v1/referrals/{created['id']}", "manager")
        assert got.json()["status"] == "awaiting_acknowledgement"

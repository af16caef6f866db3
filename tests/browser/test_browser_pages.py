"""The pages as a person uses them, in headless Chromium against the real service."""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.async_playwright import Axe
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from playwright.async_api import Page, expect

from tests.browser.conftest import WebStack, sign_in
from tests.e2e.e2e_support import SECRET_KEY, eventually, referral_body

pytestmark = [pytest.mark.slow, pytest.mark.browser]


async def submit(stack: WebStack, risk: str) -> dict[str, Any]:
    """A referral submitted by the police user over the JSON API."""
    async with stack.api("police") as http:
        response = await http.post("/api/v1/referrals", json=referral_body(risk=risk))
    assert response.status_code in (201, 202), response.text
    return dict(response.json())


async def assert_accessible(page: Page, name: str) -> None:
    """axe-core finds no serious or critical violation on the page."""
    results = await Axe().run(page)
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not bad, f"{name}: " + "; ".join(bad)


async def queue_rows(page: Page) -> list[dict[str, str | None]]:
    """The dashboard's referral rows, as their data attributes."""
    rows = page.locator("table.app-queue tbody tr[data-referral-id]")
    out = []
    for i in range(await rows.count()):
        row = rows.nth(i)
        out.append(
            {k: await row.get_attribute(f"data-{k}") for k in ("referral-id", "reference", "team", "overdue")}
        )
    return out


class TestDashboard:
    """Managers see what is outstanding, most urgent first, and can narrow and export it."""

    async def test_overdue_on_top_filters_survive_reload_and_csv_matches(
        self, page: Page, web_stack: WebStack, artifacts: Path
    ) -> None:
        green = await submit(web_stack, "green")
        red = await submit(web_stack, "red")
        # The red referral's front-door deadline (4 s) passes.
        await eventually(
            lambda: time.time() > _epoch(red["due_at"]) + 1, within=30, what="the red deadline to pass"
        )
        await sign_in(page, web_stack, "manager")
        await page.goto(web_stack.url + "/")
        await expect(page.get_by_role("heading", level=1)).to_have_text("Open referrals")
        rows = await queue_rows(page)
        assert rows[0]["reference"] == red["reference"], "the overdue referral is not at the top"
        assert rows[0]["overdue"] == "true"
        first = page.locator("table.app-queue tbody tr").first
        await expect(first).to_have_class(re.compile("app-queue__row--overdue"))
        await expect(first).to_contain_text("Overdue")
        assert green["reference"] in [r["reference"] for r in rows]
        await page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)
        await assert_accessible(page, "dashboard")

        await page.get_by_label("Awaiting team").select_option("front_door")
        await page.get_by_label("Overdue only").check()
        await page.get_by_role("button", name="Apply filters").click()
        await page.wait_for_load_state()
        assert "team=front_door" in page.url and "overdue=1" in page.url
        await page.reload()
        await expect(page.get_by_label("Awaiting team")).to_have_value("front_door")
        await expect(page.get_by_label("Overdue only")).to_be_checked()
        filtered = await queue_rows(page)
        assert filtered, "the filtered table is empty"
        assert all(r["team"] == "front_door" and r["overdue"] == "true" for r in filtered)
        assert green["reference"] not in [r["reference"] for r in filtered]

        href = await page.get_by_role("link", name=re.compile("spreadsheet")).get_attribute("href")
        assert href is not None
        response = await page.request.get(web_stack.url + href)
        assert response.ok
        table = list(csv.DictReader(io.StringIO(await response.text())))
        references = [row.get("Reference") or row.get("reference") for row in table]
        assert references == [r["reference"] for r in filtered]


class TestReferralPage:
    """Front-door staff decide from the page; the timeline shows what happened."""

    async def test_front_door_decides_early_help_from_the_page(
        self, page: Page, web_stack: WebStack, artifacts: Path
    ) -> None:
        referral = await submit(web_stack, "amber")
        await sign_in(page, web_stack, "front_door")
        await page.goto(f"{web_stack.url}/referrals/{referral['id']}")
        await expect(page.get_by_role("heading", level=1)).to_contain_text(referral["reference"])
        await assert_accessible(page, "referral page (front door)")
        await page.get_by_label("Early Help").check()
        await page.get_by_role("button", name="Record decision").click()
        await page.wait_for_load_state()
        await expect(page.locator("[data-referral-status]")).to_have_attribute(
            "data-awaiting-team", "early_help"
        )
        await expect(page.locator(".govuk-notification-banner")).to_be_visible()
        await expect(page.locator('tr[data-event="decided"]')).to_have_count(1)
        await page.screenshot(path=str(artifacts / "referral.png"), full_page=True)

        await page.goto(web_stack.url + "/?team=early_help")
        rows = await queue_rows(page)
        assert referral["reference"] in [r["reference"] for r in rows if r["team"] == "early_help"]


class TestTransfer:
    """Front-door staff transfer a referral to another authority from its page (demo policy: one)."""

    async def test_front_door_transfers_then_records_the_other_authoritys_acknowledgement(
        self, page: Page, web_stack: WebStack, artifacts: Path
    ) -> None:
        referral = await submit(web_stack, "amber")
        await sign_in(page, web_stack, "front_door")
        await page.goto(f"{web_stack.url}/referrals/{referral['id']}")
        await expect(page.get_by_role("heading", name="Transfer to another authority")).to_be_visible()
        await page.get_by_label("Neighbouring Council (demo)").check()
        await page.locator("#transfer-note").fill("Moved out of area")
        await page.get_by_role("button", name="Transfer referral").click()
        await page.wait_for_load_state()
        summary = page.locator("[data-referral-status]")
        await expect(summary).to_have_attribute("data-awaiting-team", "other_authority")
        await expect(summary).to_contain_text("Neighbouring Council (demo) (another authority)")
        await expect(page.locator(".govuk-notification-banner")).to_contain_text("transferred")
        await expect(page.locator('tr[data-event="transferred"]')).to_contain_text(
            "Neighbouring Council (demo)"
        )
        await expect(page.get_by_role("button", name="Record decision")).to_have_count(0)
        await page.screenshot(path=str(artifacts / "referral-transferred.png"), full_page=True)
        await assert_accessible(page, "referral page (transferred)")

        # The referrer is told where it went; the email holds no child's details.
        def told() -> str | None:
            found = web_stack.mailbox.of_kind("outcome", referral["reference"])
            return found[0].body if found else None

        body = await eventually(told, within=30, what="the outcome email of the transfer")
        assert "transferred it to Neighbouring Council (demo)" in body
        assert "Moved out of area" not in body

        # They phoned with their record id: the front door records it.
        await page.get_by_label(re.compile("Record id in Neighbouring Council")).fill("NC-BROWSER-1")
        await page.get_by_role("button", name="Record acknowledgement").click()
        await page.wait_for_load_state()
        await expect(page.locator("[data-referral-status]")).to_have_attribute(
            "data-referral-status", "closed"
        )
        async with web_stack.api("manager") as http:
            done = (await http.get(f"/api/v1/referrals/{referral['id']}")).json()
        assert done["status"] == "closed" and done["record_id"] == "NC-BROWSER-1"


class TestAcknowledgementLink:
    """The link in an email acknowledges only when its button is pressed, and only once."""

    async def test_link_from_the_email(self, page: Page, web_stack: WebStack, artifacts: Path) -> None:
        referral = await submit(web_stack, "green")
        async with web_stack.api("front_door") as http:
            decided = await http.post(
                f"/api/v1/referrals/{referral['id']}/decision", json={"outcome": "early_help"}
            )
        assert decided.status_code == 200, decided.text

        def reminder() -> str | None:
            for message in web_stack.mailbox.of_kind("reminder", referral["reference"]):
                links = re.findall(r"https?://\S+/ack/\S+", message.body)
                if links:
                    return links[0]
            return None

        link = await eventually(reminder, within=30, what="the Early Help reminder with its link")
        await page.goto(link)
        await expect(page.get_by_role("heading", level=1)).to_contain_text(referral["reference"])
        await assert_accessible(page, "acknowledgement link")
        await page.screenshot(path=str(artifacts / "ack.png"), full_page=True)
        async with web_stack.api("manager") as http:
            still = (await http.get(f"/api/v1/referrals/{referral['id']}")).json()
        assert still["status"] == "awaiting_acknowledgement", "opening the link acknowledged it"

        await page.get_by_label("Record id in your team's system").fill("EH-BROWSER-1")
        await page.get_by_role("button", name="Acknowledge referral").click()
        await page.wait_for_load_state()
        await expect(page.locator("body")).to_contain_text("EH-BROWSER-1")
        async with web_stack.api("manager") as http:
            done = (await http.get(f"/api/v1/referrals/{referral['id']}")).json()
        assert done["status"] == "closed" and done["record_id"] == "EH-BROWSER-1"

        reused = await page.goto(link)
        assert reused is not None and reused.status == 409
        await expect(page.get_by_role("heading", level=1)).to_contain_text("already")
        await assert_accessible(page, "used link")

        expired = await page.goto(f"{web_stack.url}/ack/{_expired_token(referral['id'])}")
        assert expired is not None and expired.status == 410
        await expect(page.get_by_role("heading", level=1)).to_contain_text("expired")

        forged = await page.goto(link[:-4] + "AAAA")
        assert forged is not None and forged.status == 404


class TestSignIn:
    """Sign-in, a wrong password and sign-out."""

    async def test_sign_in_failure_then_success_then_sign_out(self, page: Page, web_stack: WebStack) -> None:
        await page.goto(web_stack.url + "/")
        assert "/sign-in" in page.url, "an anonymous visitor was not sent to sign in"
        await assert_accessible(page, "sign-in")
        await page.get_by_label("Email address").fill(web_stack.users["manager"][0])
        await page.get_by_label("Password").fill("not-the-password")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator(".govuk-error-summary")).to_be_visible()
        await assert_accessible(page, "sign-in with errors")
        await sign_in(page, web_stack, "manager")
        await expect(page.get_by_role("heading", level=1)).to_have_text("Open referrals")
        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_load_state()
        await page.goto(web_stack.url + "/")
        assert "/sign-in" in page.url


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _expired_token(referral_id: str) -> str:
    """A correctly signed link for hand-off 2 to Early Help, issued 40 days ago."""

    class Issued40DaysAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 40 * 24 * 3600

    signer = URLSafeTimedSerializer(SECRET_KEY, salt="referral-ack-link", signer=Issued40DaysAgo)
    return str(signer.dumps([referral_id, 2, "early_help"]))

"""A referral whose referrer's address bounced is flagged on the dashboard and its page."""

from __future__ import annotations

from sqlalchemy import insert

from models.db import create_engine
from models.tables import ReferralEvent
from tests.web.conftest import Page, Web, now_utc, queue_row


class TestReferrerEmailBounced:
    """The projection's `referrer_undeliverable` shows as a GOV.UK tag with a data attribute."""

    async def test_dashboard_and_referral_page_show_the_flag(self, web: Web) -> None:
        now = now_utc()
        bounced = queue_row(1, now=now) | {"referrer_undeliverable": True}
        fine = queue_row(2, now=now)
        await web.insert_referrals([bounced])
        await web.insert_referrals([fine])
        engine = create_engine(web.api.settings.resolved_database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    insert(ReferralEvent),
                    [
                        {
                            "referral_id": bounced["id"],
                            "seq": 1,
                            "type": "delivery_failed",
                            "at": now,
                            "handoff_seq": 1,
                            "team": "front_door",
                            "data": {
                                "kind": "escalation",
                                "to": ["a.example@police.example"],
                                "reply_code": 550,
                                "fallback": ["mash-manager@council.example"],
                            },
                        }
                    ],
                )
        finally:
            await engine.dispose()

        async with web.browser("manager") as http:
            dashboard = await http.get("/")
            assert dashboard.status_code == 200
            rows = {
                e["attrs"]["data-referral-id"]: e for e in Page(dashboard.text).with_attr("data-referral-id")
            }
            page = await http.get(f"/referrals/{bounced['id']}")
            other = await http.get(f"/referrals/{fine['id']}")

        assert rows[bounced["id"]]["attrs"]["data-referrer-undeliverable"] == "true"
        assert "Referrer email bounced" in rows[bounced["id"]]["text"]
        assert rows[fine["id"]]["attrs"]["data-referrer-undeliverable"] == "false"
        assert "bounced" not in rows[fine["id"]]["text"]
        assert page.status_code == 200 and other.status_code == 200
        (tag,) = Page(page.text).with_attr("data-referrer-undeliverable", "true")
        assert "Referrer email bounced" in tag["text"]
        assert Page(other.text).with_attr("data-referrer-undeliverable") == []
        # The chronology says what bounced, the reply code, and who got it instead.
        assert "Email refused by the mail server: escalation" in page.text
        assert "SMTP reply 550" in page.text and "Sent instead to mash-manager@council.example" in page.text

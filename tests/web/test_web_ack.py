"""/ack/{token} pages: GET only shows, POST acknowledges; expired, forged and used links are refused."""

from __future__ import annotations

import time

from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from models.enums import Team
from tests.api.conftest import SECRET
from tests.web.conftest import Page, Web
from web.links import ACK_LINK_MAX_AGE_SECONDS, AckLinks


class _Backdated(TimestampSigner):
    def get_timestamp(self) -> int:
        return int(time.time()) - ACK_LINK_MAX_AGE_SECONDS - 60


def expired_token(referral_id: str, handoff_seq: int, team: Team) -> str:
    """A correctly signed link made 30 days and a minute ago."""
    serializer = URLSafeTimedSerializer(SECRET, salt="referral-ack-link", signer=_Backdated)
    return serializer.dumps([referral_id, handoff_seq, team.value])


class TestAckPages:
    """The link in reminder and escalation emails."""

    async def test_get_shows_and_only_post_acknowledges(self, web: Web) -> None:
        created = await web.api.submit()
        await web.api.decide(created["id"], "early_help")
        token = AckLinks(SECRET, web.api.settings.public_url).token(created["id"], 2, Team.EARLY_HELP)
        async with web.anonymous() as http:
            form = await http.get(f"/ack/{token}")
            assert form.status_code == 200
            page = Page(form.text)
            assert page.h1 == [f"Acknowledge referral {created['reference']}"]
            assert page.title == f"Acknowledge referral {created['reference']} \u2013 Referral tracker"
            assert "Early Help" in form.text and "<time datetime=" in form.text
            assert 'id="record_id" name="record_id"' in form.text
            assert form.text.count('type="submit"') == 1  # one button
            assert "csrf_token" not in form.text  # the signed token is the authority
            assert "content-security-policy" in form.headers
            state = await web.api.get(f"/api/v1/referrals/{created['id']}", "manager")
            assert state.json()["status"] == "awaiting_acknowledgement"  # GET changed nothing

            blank = await http.post(f"/ack/{token}", data={"record_id": " "})
            assert blank.status_code == 422
            assert "There is a problem" in blank.text and 'href="#record_id"' in blank.text
            long = await http.post(f"/ack/{token}", data={"record_id": "x" * 101})
            assert long.status_code == 422 and "100 characters or fewer" in long.text

            done = await http.post(f"/ack/{token}", data={"record_id": "EH-555"})
            assert done.status_code == 200 and Page(done.text).h1 == ["Referral acknowledged"]
            assert f"Referral {created['reference']} is recorded as EH-555" in " ".join(done.text.split())
            state = await web.api.get(f"/api/v1/referrals/{created['id']}", "manager")
            assert state.json()["status"] == "closed" and state.json()["record_id"] == "EH-555"

            reused = await http.post(f"/ack/{token}", data={"record_id": "EH-556"})
            assert reused.status_code == 409 and "Someone has already acted on this referral" in reused.text
            opened = await http.get(f"/ack/{token}")
            assert opened.status_code == 409 and "Someone has already acted on this referral" in opened.text

    async def test_expired_forged_and_front_door_links(self, web: Web) -> None:
        created = await web.api.submit()
        await web.api.decide(created["id"], "early_help")
        expired = expired_token(created["id"], 2, Team.EARLY_HELP)
        forged = AckLinks("y" * 40, web.api.settings.public_url).token(created["id"], 2, Team.EARLY_HELP)
        front_door = AckLinks(SECRET, web.api.settings.public_url).token(created["id"], 1, Team.FRONT_DOOR)
        async with web.anonymous() as http:
            for method in ("GET", "POST"):
                data = {"record_id": "EH-1"} if method == "POST" else None
                gone = await http.request(method, f"/ack/{expired}", data=data)
                assert gone.status_code == 410 and "This link has expired" in gone.text, method
                for token in (forged, "not-a-token", expired[:-3] + "abc"):
                    bad = await http.request(method, f"/ack/{token}", data=data)
                    assert bad.status_code == 404 and "This link is not valid" in bad.text, (method, token)
                refused = await http.request(method, f"/ack/{front_door}", data=data)
                assert refused.status_code == 404 and "Front-door decisions" in refused.text
                assert refused.headers["content-type"].startswith("text/html")
        state = await web.api.get(f"/api/v1/referrals/{created['id']}", "manager")
        assert state.json()["status"] == "awaiting_acknowledgement"

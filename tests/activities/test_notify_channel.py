"""send_email through GOV.UK Notify: a local HTTP server that checks the JWT and body as Notify does."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.notify import NotifyActivities, compose
from activities.notify_channel import NotifyChannel, jwt_token, parse_api_key, retry_after
from activities.outbox import NotifyUnavailable
from models.payloads import EmailInput, EmailResult
from tests.activities.conftest import email_input, make_notify, outbox_row
from tests.notify_server import API_KEY, SECRET, SERVICE_ID, TEMPLATE_ID, FakeNotify, Scripted, running
from web.links import AckLinks

Sessions = async_sessionmaker[AsyncSession]
MANAGER, REFERRER = "earlyhelp-manager@council.example", "a.example@police.example"


@pytest_asyncio.fixture
async def notify_server() -> AsyncIterator[tuple[FakeNotify, str]]:
    """A fake Notify listening on 127.0.0.1, and its base URL."""
    fake = FakeNotify()
    async with running(fake) as url:
        yield fake, url


def channel(url: str, **changes: object) -> NotifyChannel:
    """The channel the worker builds from REFERRALS_NOTIFY_* settings."""
    service_id, secret = parse_api_key(API_KEY)
    options: dict[str, object] = {
        "service_id": service_id,
        "secret": secret,
        "base_url": url,
        "template_id": TEMPLATE_ID,
    }
    options.update(changes)
    return NotifyChannel(**options)  # type: ignore[arg-type]


def notify_acts(sessions: Sessions, links: AckLinks, url: str, **changes: object) -> NotifyActivities:
    """NotifyActivities whose outbox sends through the fake Notify."""
    acts = make_notify(sessions, links, None)
    acts.outbox.notify = channel(url, **changes)
    return acts


async def send(acts: NotifyActivities, input: EmailInput) -> EmailResult:
    """One attempt of the activity, as a worker runs it."""
    return await ActivityEnvironment().run(acts.send_email, input)


class TestJwt:
    """The token is Notify's: HS256 over {iss, iat}, signed with the key's secret part."""

    def test_api_key_parts(self) -> None:
        assert parse_api_key(API_KEY) == (SERVICE_ID, SECRET)
        # A key name may itself hold hyphens.
        assert parse_api_key(f"my-live-key-{SERVICE_ID}-{SECRET}") == (SERVICE_ID, SECRET)
        with pytest.raises(ValueError):
            parse_api_key("not-a-key")

    async def test_fake_refuses_bad_signature_and_stale_iat(
        self, notify_server: tuple[FakeNotify, str]
    ) -> None:
        _, url = notify_server
        body = {
            "email_address": MANAGER,
            "template_id": TEMPLATE_ID,
            "personalisation": {"subject": "s", "body": "b"},
        }
        async with httpx.AsyncClient() as client:
            for token, message in [
                (jwt_token(SERVICE_ID, "0" * 36), "signature"),
                (jwt_token(SERVICE_ID, SECRET, now=time.time() - 60), "30 seconds"),
                (jwt_token("00000000-0000-0000-0000-000000000000", SECRET), "service"),
            ]:
                r = await client.post(
                    f"{url}/v2/notifications/email", json=body, headers={"Authorization": f"Bearer {token}"}
                )
                assert r.status_code == 403 and message in r.json()["errors"][0]["message"], r.text
            good = await client.post(
                f"{url}/v2/notifications/email",
                json=body,
                headers={"Authorization": f"Bearer {jwt_token(SERVICE_ID, SECRET)}"},
            )
            assert good.status_code == 201, good.text

    def test_retry_after(self) -> None:
        assert retry_after("7") == 7.0
        assert retry_after(None) is None
        assert retry_after("86400") == 300.0  # never longer than the activity's own backoff cap


class TestSend:
    """One request per recipient, recorded as each is taken; a key is sent once."""

    async def test_sent_once_per_recipient_with_key_as_reference(
        self, sessions: Sessions, links: AckLinks, notify_server: tuple[FakeNotify, str]
    ) -> None:
        fake, url = notify_server
        acts = notify_acts(sessions, links, url)
        email = email_input()
        result = await send(acts, email)
        assert result.status == "sent" and result.rejected == []
        assert result.receipts, "Notify reports each delivery later: the workflow waits for them"
        subject, _ = compose(email, links)
        row = await outbox_row(sessions, email.key)
        assert row.subject == subject
        assert [n["email_address"] for n in fake.notifications] == [MANAGER, REFERRER]
        for n in fake.notifications:
            assert n["reference"] == email.key  # referral id, hand-off, step, repeat: no names
            assert n["template_id"] == TEMPLATE_ID
            # As composed for the outbox (the acknowledgement link is signed at that moment).
            assert n["personalisation"] == {"subject": row.subject, "body": row.body}
        assert row.status == "sent" and row.resends == 0
        assert row.provider_ids == {n["email_address"]: n["id"] for n in fake.notifications}
        # A retried activity (the same key) sends nothing more.
        again = await send(acts, email)
        assert again.status == "sent" and len(fake.notifications) == 2
        assert again.receipts

    async def test_kind_template_when_configured(
        self, sessions: Sessions, links: AckLinks, notify_server: tuple[FakeNotify, str]
    ) -> None:
        fake, url = notify_server
        acts = notify_acts(
            sessions, links, url, templates={"escalation": "00000000-0000-0000-0000-000000000001"}
        )
        result = await send(acts, email_input())
        # The fake knows only the generic template: the kind's own one is what was asked for.
        assert result.status == "rejected" and result.reply_code == 400
        assert not result.receipts, "nothing was taken: no receipt will come"
        assert fake.notifications == []


class TestRefusals:
    """400 and 403 are permanent: recorded like an SMTP 5xx, so the workflow sends the fallback copy."""

    async def test_400_for_one_recipient(
        self, sessions: Sessions, links: AckLinks, notify_server: tuple[FakeNotify, str]
    ) -> None:
        fake, url = notify_server
        fake.refuse.add(REFERRER)
        email = email_input()
        result = await send(notify_acts(sessions, links, url), email)
        assert result.status == "sent" and result.rejected == [REFERRER] and result.reply_code == 400
        row = await outbox_row(sessions, email.key)
        assert row.rejected == {REFERRER: 400} and list(row.provider_ids or {}) == [MANAGER]
        assert "team-only API key" in (row.last_error or "")

    async def test_400_for_every_recipient_is_rejected_and_the_copy_goes_through_notify(
        self, sessions: Sessions, links: AckLinks, notify_server: tuple[FakeNotify, str]
    ) -> None:
        fake, url = notify_server
        fake.refuse.add(REFERRER)
        acts = notify_acts(sessions, links, url)
        email = email_input(recipients=(REFERRER,))
        result = await send(acts, email)
        assert result.status == "rejected" and result.rejected == [REFERRER]
        # The workflow's fallback copy (the same message, another key) goes through Notify too.
        copy = email.model_copy(
            update={"key": f"{email.key}:fallback", "recipients": [MANAGER], "undelivered_to": [REFERRER]}
        )
        sent = await send(acts, copy)
        assert sent.status == "sent"
        (n,) = fake.to(MANAGER)
        assert n["reference"] == copy.key and "fallback copy" in n["personalisation"]["subject"]

    async def test_403_refuses_every_recipient(
        self, sessions: Sessions, links: AckLinks, notify_server: tuple[FakeNotify, str]
    ) -> None:
        fake, url = notify_server
        fake.script.append(Scripted(403, "AuthError", "Invalid token: API key revoked"))
        email = email_input()
        result = await send(notify_acts(sessions, links, url), email)
        assert result.status == "rejected" and result.rejected == [MANAGER, REFERRER]
        assert result.reply_code == 403 and fake.posts == 1
        assert (await outbox_row(sessions, email.key)).status == "rejected"

    async def test_a_bad_jwt_is_refused_by_the_server(
        self, sessions: Sessions, links: AckLinks, notify_server: tuple[FakeNotify, str]
    ) -> None:
        fake, url = notify_server
        result = await send(notify_acts(sessions, links, url, secret="0" * 36), email_input())
        assert result.status == "rejected" and result.reply_code == 403
        assert fake.notifications == [] and fake.auth_failures


class TestRetries:
    """429, 5xx and connection errors are retried by Temporal; nothing is sent twice."""

    async def test_429_honours_retry_after(
        self, sessions: Sessions, links: AckLinks, notify_server: tuple[FakeNotify, str]
    ) -> None:
        fake, url = notify_server
        fake.script.append(
            Scripted(
                429, "RateLimitError", "Exceeded rate limit for key type LIVE", headers={"Retry-After": "7"}
            )
        )
        acts = notify_acts(sessions, links, url)
        email = email_input()
        with pytest.raises(ApplicationError) as raised:
            await send(acts, email)
        assert raised.value.next_retry_delay == timedelta(seconds=7) and not raised.value.non_retryable
        row = await outbox_row(sessions, email.key)
        assert row.status == "pending" and row.attempts == 1 and "429" in (row.last_error or "")
        assert row.resends == 0
        assert (await send(acts, email)).status == "sent"
        assert sorted(n["email_address"] for n in fake.notifications) == sorted([MANAGER, REFERRER])

    async def test_500_after_the_first_recipient_retries_only_the_rest(
        self, sessions: Sessions, links: AckLinks, notify_server: tuple[FakeNotify, str]
    ) -> None:
        fake, url = notify_server
        fake.script += [Scripted(), Scripted(500, "Exception", "Internal server error")]
        acts = notify_acts(sessions, links, url)
        email = email_input()
        with pytest.raises(NotifyUnavailable):
            await send(acts, email)
        row = await outbox_row(sessions, email.key)
        assert row.status == "pending" and list(row.provider_ids or {}) == [MANAGER] and row.resends == 0
        assert (await send(acts, email)).status == "sent"
        assert [n["email_address"] for n in fake.notifications] == [MANAGER, REFERRER]

    async def test_notify_down_is_retried(self, sessions: Sessions, links: AckLinks) -> None:
        acts = notify_acts(sessions, links, "http://127.0.0.1:9")
        email = email_input()
        with pytest.raises(NotifyUnavailable):
            await send(acts, email)
        row = await outbox_row(sessions, email.key)
        assert row.status == "pending" and row.resends == 0  # never connected: nothing sent

    async def test_lost_answer_counts_a_resend_and_is_reconciled(
        self, sessions: Sessions, links: AckLinks, notify_server: tuple[FakeNotify, str]
    ) -> None:
        fake, url = notify_server
        # Notify takes the first recipient's message, but its answer never arrives in time.
        fake.script.append(Scripted(hold=2.0))
        acts = notify_acts(sessions, links, url, timeout=0.5)
        email = email_input()
        with pytest.raises(NotifyUnavailable):
            await send(acts, email)
        row = await outbox_row(sessions, email.key)
        assert row.status == "pending" and row.resends == 1 and not row.provider_ids
        assert len(fake.to(MANAGER)) == 1
        # The retry asks Notify what it holds under the key and does not send that one again.
        assert (await send(acts, email)).status == "sent"
        assert len(fake.to(MANAGER)) == 1 and len(fake.to(REFERRER)) == 1
        row = await outbox_row(sessions, email.key)
        assert row.provider_ids == {MANAGER: fake.to(MANAGER)[0]["id"], REFERRER: fake.to(REFERRER)[0]["id"]}

    async def test_an_attempt_stops_before_outliving_its_timeout(
        self,
        sessions: Sessions,
        links: AckLinks,
        notify_server: tuple[FakeNotify, str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        fake, url = notify_server
        # Requests may take 2 s each and the attempt has 2.3 s: after one slow answer, no room
        # is left for another request, which goes to the next attempt instead.
        monkeypatch.setattr("activities.outbox.NOTIFY_ATTEMPT_BUDGET", 2.3)
        fake.script.append(Scripted(hold=0.5))
        acts = notify_acts(sessions, links, url, timeout=2.0)
        email = email_input()
        with pytest.raises(NotifyUnavailable, match="time is used up"):
            await send(acts, email)
        row = await outbox_row(sessions, email.key)
        assert row.status == "pending" and list(row.provider_ids or {}) == [MANAGER] and row.resends == 0
        assert (await send(acts, email)).status == "sent"
        assert [n["email_address"] for n in fake.notifications] == [MANAGER, REFERRER]

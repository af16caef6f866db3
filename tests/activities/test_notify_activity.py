"""send_email against a real SMTP server (aiosmtpd) and the read model on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import threading
from datetime import UTC, datetime, timedelta

import aiosmtplib
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import ActivityEnvironment

from activities.notify import message_id
from activities.records import RecordActivities
from models.enums import EventType, MessageKind, Outcome, Risk, Status, Team
from models.payloads import (
    EmailInput,
    EmailResult,
    HandoffState,
    ProjectInput,
    ReferralEvent,
    ReferralState,
)
from models.tables import OutboxMessage
from tests.activities.conftest import (
    MAIL_FROM,
    PUBLIC_URL,
    REFERENCE,
    REFERRAL_ID,
    Received,
    SmtpSink,
    email_input,
    make_notify,
    outbox_row,
    outbox_rows,
)
from tests.conftest import POLICE, sample_details
from web.links import AckLinks

Sessions = async_sessionmaker[AsyncSession]

#: Ways a date of birth of 2015-03-01 could be written into a message.
DOB_FORMS = ("2015-03-01", "01/03/2015", "1/3/2015", "01 Mar 2015", "1 March 2015", "2015-3-1", "20150301")


async def send(
    notify_sessions: Sessions, links: AckLinks, sink: SmtpSink | None, input: EmailInput
) -> EmailResult:
    """One run of the activity, as a Temporal worker would run it."""
    acts = make_notify(notify_sessions, links, sink)
    return await ActivityEnvironment().run(acts.send_email, input)


async def project_sample_referral(sessions: Sessions) -> None:
    """Put the sample referral (with the child's name and birth date) in the read model."""
    opened = datetime(2026, 11, 23, 10, tzinfo=UTC)
    handoff = HandoffState(
        seq=2,
        team=Team.EARLY_HELP,
        team_name="Early Help",
        opened_at=opened,
        due_at=datetime(2026, 11, 26, 14, tzinfo=UTC),
        plan=[],
    )
    state = ReferralState(
        referral_id=REFERRAL_ID,
        reference=REFERENCE,
        fingerprint="f" * 64,
        force="Northamptonshire Police",
        police_reference="NP-2018-0501-0193",
        risk=Risk.GREEN,
        status=Status.AWAITING_ACKNOWLEDGEMENT,
        received_at=opened,
        handoffs=[handoff],
        events=[ReferralEvent(seq=1, type=EventType.RECEIVED, at=opened, actor=POLICE)],
        version=3,
    )
    project = ProjectInput(state=state, submitted_by=POLICE, details=sample_details())
    await ActivityEnvironment().run(RecordActivities(sessions).project_referral, project)


def assert_no_personal_data(message: Received) -> None:
    """The child's names and date of birth appear nowhere: raw bytes, headers or decoded body."""
    child = sample_details().children[0]
    assert child.given_name and child.date_of_birth
    texts = {
        "raw": message.raw.decode("utf-8", "replace").lower(),
        "headers": "\n".join(f"{k}: {v}" for k, v in message.message.items()).lower(),
        "body": message.body.lower(),
    }
    needles = [child.given_name.lower(), child.family_name.lower(), *DOB_FORMS]
    for where, text in texts.items():
        for needle in needles:
            assert needle.lower() not in text, f"{needle!r} found in the message {where}"


def ack_tokens(body: str) -> list[str]:
    """Tokens of every /ack/ link in a decoded body."""
    return re.findall(re.escape(PUBLIC_URL) + r"/ack/([A-Za-z0-9_.\-]+)", body)


class TestSendOverSmtp:
    """One escalation through a real SMTP server: headers, body, link and outbox row."""

    async def test_escalation_is_delivered_once_with_its_headers(
        self, sessions: Sessions, links: AckLinks, smtp: SmtpSink
    ) -> None:
        await project_sample_referral(sessions)
        input = email_input(MessageKind.ESCALATION, repeat=2)

        result = await send(sessions, links, smtp, input)

        assert len(smtp.received) == 1
        received = smtp.received[0]
        message = received.message
        expected_id = message_id(input.key, MAIL_FROM)
        assert message["Message-ID"] == expected_id
        assert result == EmailResult(message_id=expected_id, status="sent", recipients=input.recipients)
        subject = str(message["Subject"])
        assert subject.startswith(REFERENCE)
        assert "escalation" in subject.lower()
        assert "repeat 2" in subject
        assert message["From"] == MAIL_FROM
        to = {a.addr_spec for a in message["To"].addresses}
        assert to == set(input.recipients)
        assert received.mail_from == MAIL_FROM
        assert set(received.rcpt_tos) == set(input.recipients)
        assert message["X-Referral-Reference"] == REFERENCE

    async def test_escalation_link_acknowledges_the_right_handoff(
        self, sessions: Sessions, links: AckLinks, smtp: SmtpSink
    ) -> None:
        input = email_input(MessageKind.ESCALATION, handoff_seq=3, team=Team.SOCIAL_CARE)
        await send(sessions, links, smtp, input)

        (token,) = ack_tokens(smtp.received[0].body)
        claim = links.check(token)
        assert (claim.referral_id, claim.handoff_seq, claim.team) == (REFERRAL_ID, 3, Team.SOCIAL_CARE)
        # A link signed with another secret is refused, so the check above means something.
        other = AckLinks("another-secret", PUBLIC_URL)
        with pytest.raises(Exception, match="not valid"):
            other.check(token)

    @pytest.mark.parametrize(
        "input",
        [
            email_input(MessageKind.REMINDER, step=0, recipients=("earlyhelp@council.example",)),
            email_input(MessageKind.ESCALATION, repeat=1),
            email_input(
                MessageKind.OUTCOME,
                team=Team.FRONT_DOOR,
                team_name="Front door (MASH)",
                result=Outcome.EARLY_HELP.value,
                recipients=("a.example@police.example",),
            ),
        ],
        ids=["reminder", "escalation", "outcome"],
    )
    async def test_no_child_name_or_birth_date_leaves_the_network(
        self, sessions: Sessions, links: AckLinks, smtp: SmtpSink, input: EmailInput
    ) -> None:
        await project_sample_referral(sessions)  # the details are in the database...
        await send(sessions, links, smtp, input)
        (received,) = smtp.received  # ...and never in the message
        assert str(received.message["Subject"]).startswith(REFERENCE)
        assert input.kind.value in str(received.message["Subject"]).lower()
        assert_no_personal_data(received)

    async def test_outbox_row_is_sent(self, sessions: Sessions, links: AckLinks, smtp: SmtpSink) -> None:
        input = email_input()
        before = datetime.now(UTC)
        await send(sessions, links, smtp, input)

        row = await outbox_row(sessions, input.key)
        assert row.status == "sent"
        assert row.sent_at is not None and before <= row.sent_at <= datetime.now(UTC)
        assert row.attempts == 1
        assert row.last_error is None
        assert row.message_id == message_id(input.key, MAIL_FROM)
        assert (row.referral_id, row.reference, row.kind) == (REFERRAL_ID, REFERENCE, "escalation")
        assert row.recipients == input.recipients


class TestIdempotency:
    """A step is sent once per key, however often (or however concurrently) the activity runs."""

    async def test_second_run_sends_nothing(
        self, sessions: Sessions, links: AckLinks, smtp: SmtpSink
    ) -> None:
        input = email_input()
        first = await send(sessions, links, smtp, input)
        second = await send(sessions, links, smtp, input)

        assert len(smtp.received) == 1
        assert second == first
        assert second.status == "sent"
        rows = await outbox_rows(sessions)
        assert len(rows) == 1 and rows[0].attempts == 1

    async def test_each_repeat_of_a_step_is_its_own_message(
        self, sessions: Sessions, links: AckLinks, smtp: SmtpSink
    ) -> None:
        first = await send(sessions, links, smtp, email_input(repeat=1))
        second = await send(sessions, links, smtp, email_input(repeat=2))

        assert len(smtp.received) == 2
        assert first.message_id != second.message_id
        assert {r.message["Message-ID"] for r in smtp.received} == {first.message_id, second.message_id}
        assert len(await outbox_rows(sessions)) == 2

    @pytest.mark.parametrize("attempts", [2, 3])
    async def test_concurrent_attempts_deliver_once(
        self, sessions: Sessions, links: AckLinks, smtp: SmtpSink, attempts: int
    ) -> None:
        smtp.handler.delay = 0.3  # every attempt is in flight while the first one talks to SMTP
        input = email_input()

        results = await asyncio.gather(*(send(sessions, links, smtp, input) for _ in range(attempts)))

        assert smtp.handler.data_commands == 1, "the same step was handed to the mail server twice"
        assert len(smtp.received) == 1
        assert {r.message_id for r in results} == {message_id(input.key, MAIL_FROM)}
        assert {r.status for r in results} == {"sent"}
        (row,) = await outbox_rows(sessions)
        assert row.status == "sent" and row.attempts == 1

    async def test_a_stale_claim_of_a_crashed_attempt_is_taken_over(
        self, sessions: Sessions, links: AckLinks, smtp: SmtpSink
    ) -> None:
        """An attempt that claimed the row and died must not block the step forever."""
        input = email_input()
        await send(sessions, links, None, input)  # create the row (dev outbox marks it stored)...
        async with sessions() as session, session.begin():
            # ...then make it look like an attempt claimed it and crashed long ago.
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.key == input.key)
                .values(status="sending", sent_at=datetime.now(UTC) - timedelta(hours=1))
            )
        acts = make_notify(sessions, links, smtp, claim_lease=timedelta(seconds=30))

        result = await ActivityEnvironment().run(acts.send_email, input)

        assert result.status == "sent" and not result.receipts  # SMTP sends no receipts
        assert len(smtp.received) == 1
        row = await outbox_row(sessions, input.key)
        assert row.status == "sent"
        # The crashed holder may have delivered it before dying: counted as a possible resend.
        assert row.resends == 1

    async def test_a_live_claim_is_waited_for_not_duplicated(
        self, sessions: Sessions, links: AckLinks, smtp: SmtpSink
    ) -> None:
        """While another attempt holds a fresh claim, this one waits and then reports its result."""
        input = email_input()
        await send(sessions, links, None, input)
        async with sessions() as session, session.begin():
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.key == input.key)
                .values(status="sending", sent_at=datetime.now(UTC))
            )
        acts = make_notify(sessions, links, smtp, claim_lease=timedelta(seconds=30))
        waiting = asyncio.ensure_future(ActivityEnvironment().run(acts.send_email, input))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        async with sessions() as session, session.begin():
            # The other attempt finishes.
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.key == input.key)
                .values(status="sent", sent_at=datetime.now(UTC))
            )

        result = await asyncio.wait_for(waiting, timeout=10)

        assert result.status == "sent"
        assert smtp.received == []


class TestCancellation:
    """An acknowledgement cancels a send in flight: the claim is given back, not left to expire."""

    async def test_cancelled_send_releases_its_claim(
        self, sessions: Sessions, links: AckLinks, smtp: SmtpSink
    ) -> None:
        smtp.handler.delay = 0.5
        input = email_input()
        env = ActivityEnvironment()
        acts = make_notify(sessions, links, smtp)
        running = asyncio.ensure_future(env.run(acts.send_email, input))
        # Cancel while the message is with the server.
        assert await asyncio.to_thread(smtp.handler.data_started.wait, 10)
        assert (await outbox_row(sessions, input.key)).status == "sending"

        env.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

        row = await outbox_row(sessions, input.key)
        assert row.status == "pending" and row.sent_at is None
        # Cancelled after the data went: whether the server kept it is unknown.
        assert row.resends == 1
        smtp.handler.delay = 0
        result = await send(sessions, links, smtp, input)  # no wait for the lease
        assert result.status == "sent"


class TestUnknownOutcome:
    """SMTP cannot tell a lost "250 OK" from a failure (RFC 1047): such attempts are counted."""

    async def test_a_reply_lost_after_the_data_is_resent_and_counted(
        self, sessions: Sessions, links: AckLinks, smtp: SmtpSink
    ) -> None:
        smtp.handler.hang_up_after_data = 1
        input = email_input()

        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await send(sessions, links, smtp, input)
        row = await outbox_row(sessions, input.key)
        assert (row.status, row.resends) == ("pending", 1)

        result = await send(sessions, links, smtp, input)

        # The server kept both copies; they carry one Message-ID, and the row says it may be two.
        assert result.status == "sent"
        assert [r.message["Message-ID"] for r in smtp.received] == [result.message_id] * 2
        row = await outbox_row(sessions, input.key)
        assert (row.status, row.resends) == ("sent", 1)
        assert len(smtp.received) <= 1 + row.resends

    async def test_a_temporary_refusal_of_the_data_is_a_known_failure(
        self, sessions: Sessions, links: AckLinks, smtp: SmtpSink
    ) -> None:
        smtp.handler.reject = "451 4.3.0 Try again later"
        input = email_input()

        with pytest.raises(aiosmtplib.SMTPDataError):
            await send(sessions, links, smtp, input)

        row = await outbox_row(sessions, input.key)
        assert (row.status, row.resends) == ("pending", 0)
        assert row.last_error is not None and "451" in row.last_error

    async def test_a_delivered_message_is_recorded_before_quit(
        self, sessions: Sessions, links: AckLinks, smtp: SmtpSink
    ) -> None:
        """The record comes first: a crash while the server dawdles over QUIT is no resend."""
        input = email_input()
        smtp.handler.quit_gate = threading.Event()
        sending = asyncio.ensure_future(send(sessions, links, smtp, input))
        try:
            assert await asyncio.to_thread(smtp.handler.quit_started.wait, 10)
            row = await outbox_row(sessions, input.key)
            assert (row.status, row.resends) == ("sent", 0)
        finally:
            smtp.handler.quit_gate.set()
        assert (await asyncio.wait_for(sending, timeout=15)).status == "sent"


class TestSmtpDown:
    """Nothing listens: the activity fails (Temporal retries), the row keeps the error, nothing is lost."""

    async def test_outage_then_recovery_delivers_exactly_once(
        self, sessions: Sessions, links: AckLinks, smtp_down: SmtpSink
    ) -> None:
        input = email_input()
        for attempt in (1, 2):
            with pytest.raises((aiosmtplib.SMTPException, OSError)):
                await send(sessions, links, smtp_down, input)
            row = await outbox_row(sessions, input.key)
            assert row.status == "pending"
            assert row.attempts == attempt
            assert row.last_error is not None and "connect" in row.last_error.lower()
            assert row.sent_at is None
            assert row.resends == 0  # refused before any data: certainly not delivered

        await smtp_down.start_async()
        result = await send(sessions, links, smtp_down, input)
        again = await send(sessions, links, smtp_down, input)

        assert len(smtp_down.received) == 1
        assert result.status == again.status == "sent"
        assert smtp_down.received[0].message["Message-ID"] == result.message_id
        row = await outbox_row(sessions, input.key)
        assert row.status == "sent" and row.sent_at is not None
        assert row.attempts == 3
        assert len(await outbox_rows(sessions)) == 1


class TestPermanentRejection:
    """A 5xx on MAIL, RCPT or DATA is final: recorded on the row, returned, never sent again."""

    async def test_rejected_on_data_is_final(
        self, sessions: Sessions, links: AckLinks, smtp: SmtpSink
    ) -> None:
        smtp.handler.reject = "550 5.7.1 Relaying denied"
        input = email_input()

        result = await send(sessions, links, smtp, input)

        assert result.status == "rejected"
        assert result.rejected == list(input.recipients) and result.reply_code == 550
        assert smtp.handler.data_commands == 1 and smtp.received == []
        row = await outbox_row(sessions, input.key)
        assert row.status == "rejected" and row.attempts == 1
        assert row.last_error is not None and "550" in row.last_error and "Relaying denied" in row.last_error
        assert row.rejected == {address: 550 for address in input.recipients}
        # The same key again (a retried activity, a replayed workflow): nothing is sent.
        smtp.handler.reject = None
        again = await send(sessions, links, smtp, input)
        assert again == result
        assert smtp.handler.data_commands == 1 and smtp.received == []

    async def test_every_recipient_refused_is_final(
        self, sessions: Sessions, links: AckLinks, smtp: SmtpSink
    ) -> None:
        input = email_input()
        smtp.handler.refuse = frozenset(input.recipients)

        result = await send(sessions, links, smtp, input)

        assert result.status == "rejected" and result.reply_code == 550
        assert result.rejected == list(input.recipients)
        row = await outbox_row(sessions, input.key)
        assert row.status == "rejected" and row.attempts == 1
        assert row.last_error is not None and all(a in row.last_error for a in input.recipients)
        smtp.handler.refuse = frozenset()
        assert await send(sessions, links, smtp, input) == result
        assert smtp.received == [] and smtp.handler.data_commands == 0

    async def test_sender_refused_is_final(self, sessions: Sessions, links: AckLinks, smtp: SmtpSink) -> None:
        smtp.handler.reject_sender = "553 5.7.1 Sender address rejected"
        input = email_input()

        result = await send(sessions, links, smtp, input)

        assert result.status == "rejected" and result.reply_code == 553
        assert result.rejected == list(input.recipients)
        row = await outbox_row(sessions, input.key)
        assert row.status == "rejected" and row.last_error is not None and "553" in row.last_error
        smtp.handler.reject_sender = None
        assert await send(sessions, links, smtp, input) == result
        assert smtp.received == []

    async def test_temporary_refusals_are_still_retried(
        self, sessions: Sessions, links: AckLinks, smtp: SmtpSink
    ) -> None:
        input = email_input()
        smtp.handler.refuse = frozenset(input.recipients)
        smtp.handler.refuse_reply = "450 4.2.1 Mailbox busy, try later"
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await send(sessions, links, smtp, input)
        smtp.handler.refuse = frozenset()
        smtp.handler.reject = "451 4.3.0 Temporary failure"
        with pytest.raises(aiosmtplib.SMTPDataError):
            await send(sessions, links, smtp, input)
        row = await outbox_row(sessions, input.key)
        assert row.status == "pending" and row.attempts == 2 and row.rejected is None
        smtp.handler.reject = None
        result = await send(sessions, links, smtp, input)
        assert result.status == "sent" and result.rejected == []
        assert len(smtp.received) == 1


class TestRefusedRecipients:
    """A mail server may refuse some recipients: never silently (an escalation could vanish)."""

    async def test_partial_refusal_is_recorded_and_returned(
        self, sessions: Sessions, links: AckLinks, smtp: SmtpSink
    ) -> None:
        manager, referrer = "earlyhelp-manager@council.example", "a.example@police.example"
        smtp.handler.refuse = frozenset({referrer})
        input = email_input(recipients=(manager, referrer))

        result = await send(sessions, links, smtp, input)

        (received,) = smtp.received
        assert received.rcpt_tos == (manager,)
        assert result.status == "sent"
        assert result.rejected == [referrer] and result.reply_code == 550
        row = await outbox_row(sessions, input.key)
        assert row.status == "sent" and row.rejected == {referrer: 550}
        assert row.last_error is not None
        assert referrer in row.last_error and "550" in row.last_error
        assert manager not in row.last_error
        again = await send(sessions, links, smtp, input)  # the manager is not told twice
        assert again == result
        assert len(smtp.received) == 1

    async def test_fallback_copy_names_the_undelivered_address(
        self, sessions: Sessions, links: AckLinks, smtp: SmtpSink
    ) -> None:
        referrer = "a.example@police.example"
        original = email_input(recipients=(referrer,))
        copy = original.model_copy(
            update={
                "key": f"{original.key}:fallback",
                "recipients": ["ppu@police.example"],
                "undelivered_to": [referrer],
            }
        )

        result = await send(sessions, links, smtp, copy)

        assert result.status == "sent"
        (received,) = smtp.received
        assert received.rcpt_tos == ("ppu@police.example",)
        assert str(received.message["Subject"]).startswith(REFERENCE)
        assert "fallback" in str(received.message["Subject"])
        assert referrer in received.body and "escalation" not in received.body.split("\n")[0]
        assert received.message["Message-ID"] == message_id(copy.key, MAIL_FROM)
        assert_no_personal_data(received)


class TestDevOutbox:
    """Without SMTP the message is kept in the outbox table for the dev page."""

    async def test_stored_not_sent(self, sessions: Sessions, links: AckLinks, smtp: SmtpSink) -> None:
        input = email_input(MessageKind.REMINDER, step=0, recipients=("earlyhelp@council.example",))

        result = await send(sessions, links, None, input)
        again = await send(sessions, links, None, input)

        assert smtp.received == [] and smtp.handler.data_commands == 0
        assert result == again
        assert result.status == "stored"
        assert result.message_id == message_id(input.key, MAIL_FROM)
        (row,) = await outbox_rows(sessions)
        assert row.status == "stored"
        assert row.subject.startswith(REFERENCE) and "reminder" in row.subject
        assert "/ack/" in row.body and REFERENCE in row.body
        assert row.recipients == ["earlyhelp@council.example"]
        assert row.sent_at is not None

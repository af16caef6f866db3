"""Real components for the activity tests: an SMTP server on 127.0.0.1 and the read model.

The SMTP server is aiosmtpd in its own thread; it keeps every message it accepts (raw bytes,
envelope sender and recipients), so tests read exactly what a mail system would receive.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest
import pytest_asyncio
from aiosmtpd.controller import Controller
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.notify import NotifyActivities, SmtpTarget
from models.db import create_engine, session_factory
from models.enums import MessageKind, Team
from models.payloads import EmailInput
from models.tables import OutboxMessage
from web.links import AckLinks

MAIL_FROM = "referrals@council.example"
PUBLIC_URL = "https://referrals.council.example"
SECRET = "test-secret-for-ack-links"
REFERRAL_ID = "r0123456789abcdef"
REFERENCE = "RT-7K3M9Q"


@dataclass(frozen=True)
class Received:
    """One message the SMTP server accepted."""

    raw: bytes
    mail_from: str
    rcpt_tos: tuple[str, ...]

    @property
    def message(self) -> EmailMessage:
        """The parsed message (headers decoded, body transfer-decoded)."""
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def body(self) -> str:
        """The decoded plain-text body."""
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())  # type: ignore[attr-defined]


@dataclass
class SinkHandler:
    """aiosmtpd handler: stores each envelope; refuses the `refuse` recipients; rejects DATA with
    `reject` (e.g. "550 ...")."""

    received: list[Received] = field(default_factory=list)
    delay: float = 0.0
    reject: str | None = None
    data_commands: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    data_started: threading.Event = field(default_factory=threading.Event)
    refuse: frozenset[str] = frozenset()
    #: The reply to a refused RCPT TO (a 4xx to model "try again later").
    refuse_reply: str = "550 5.1.1 No such user here"
    #: A reply to MAIL FROM that refuses the sender (e.g. "553 ..."); None accepts it.
    reject_sender: str | None = None
    #: How many messages to take and then hang up on without answering (a lost "250 OK").
    hang_up_after_data: int = 0
    #: When set, QUIT is answered only once the test sets this event.
    quit_gate: threading.Event | None = None
    quit_started: threading.Event = field(default_factory=threading.Event)

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.quit_started.set()
        if self.quit_gate is not None:
            await asyncio.to_thread(self.quit_gate.wait, 10)
        return "221 Bye"

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if self.reject_sender is not None:
            return self.reject_sender
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.data_commands += 1
        self.data_started.set()
        if self.delay:
            # A slow server widens the window in which concurrent attempts could both send.
            await asyncio.sleep(self.delay)
        if self.reject is not None:
            return self.reject
        raw = envelope.original_content or envelope.content
        with self.lock:
            self.received.append(Received(bytes(raw), envelope.mail_from, tuple(envelope.rcpt_tos)))
            hang_up = self.hang_up_after_data > 0
            self.hang_up_after_data -= hang_up
        if hang_up:
            server.transport.abort()
        return "250 OK"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SmtpSink:
    """An SMTP server on a fixed local port that can be started late (to model an outage)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.handler = SinkHandler()
        self.controller: Controller | None = None

    @property
    def received(self) -> list[Received]:
        """Messages accepted so far."""
        with self.handler.lock:
            return list(self.handler.received)

    @property
    def target(self) -> SmtpTarget:
        """Where NotifyActivities should deliver."""
        return SmtpTarget.from_url(f"smtp://127.0.0.1:{self.port}")

    def start(self) -> None:
        """Listen on the port (blocking for a few milliseconds)."""
        assert self.controller is None
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    async def start_async(self) -> None:
        """Start without blocking the test's event loop."""
        await asyncio.to_thread(self.start)

    def stop(self) -> None:
        """Stop listening (idempotent)."""
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp_down() -> Iterator[SmtpSink]:
    """A sink on a free port, NOT started: connections are refused until the test starts it."""
    sink = SmtpSink(free_port())
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def smtp(smtp_down: SmtpSink) -> SmtpSink:
    """A running SMTP sink."""
    smtp_down.start()
    return smtp_down


@pytest_asyncio.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a fresh, migrated read model (SQLite, then PostgreSQL)."""
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def links() -> AckLinks:
    """The link signer the worker would build."""
    return AckLinks(SECRET, PUBLIC_URL)


def make_notify(
    sessions: async_sessionmaker[AsyncSession],
    links: AckLinks,
    sink: SmtpSink | None,
    **kwargs: Any,
) -> NotifyActivities:
    """NotifyActivities delivering to `sink`, or to the dev outbox when `sink` is None."""
    return NotifyActivities(
        sessions, links=links, mail_from=MAIL_FROM, smtp=sink.target if sink else None, **kwargs
    )


def email_input(
    kind: MessageKind = MessageKind.ESCALATION,
    *,
    handoff_seq: int = 2,
    step: int = 1,
    repeat: int = 0,
    team: Team = Team.EARLY_HELP,
    team_name: str = "Early Help",
    recipients: tuple[str, ...] = ("earlyhelp-manager@council.example", "a.example@police.example"),
    due_at: datetime | None = datetime(2026, 11, 26, 14, 0, tzinfo=UTC),
    result: str | None = None,
    record_id: str | None = None,
    referral_id: str = REFERRAL_ID,
    reference: str = REFERENCE,
) -> EmailInput:
    """An EmailInput as ReferralWorkflow builds it (same key format)."""
    step_name = "outcome" if kind == MessageKind.OUTCOME else str(step)
    return EmailInput(
        key=f"{referral_id}:{handoff_seq}:{step_name}:{repeat}",
        referral_id=referral_id,
        reference=reference,
        kind=kind,
        handoff_seq=handoff_seq,
        step=step,
        repeat=repeat,
        recipients=list(recipients),
        team=team,
        team_name=team_name,
        due_at=due_at,
        result=result,
        record_id=record_id,
    )


async def outbox_rows(sessions: async_sessionmaker[AsyncSession]) -> list[OutboxMessage]:
    """Every outbox row, oldest first."""
    async with sessions() as session:
        return list(await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


async def outbox_row(sessions: async_sessionmaker[AsyncSession], key: str) -> OutboxMessage:
    """The one outbox row of a key."""
    async with sessions() as session:
        row = (await session.scalars(select(OutboxMessage).where(OutboxMessage.key == key))).one()
        return row

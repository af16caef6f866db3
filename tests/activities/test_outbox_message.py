"""The outbox's messages: built with cached header classes, byte for byte what the stock policy makes."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime
from types import SimpleNamespace

import pytest

from activities.outbox import MESSAGE_POLICY, Outbox
from models.tables import OutboxMessage

ROWS = [
    OutboxMessage(
        recipients=["mash-manager@council.example", "pc.jones@police.example"],
        subject="Referral RT-7K2M9QXD: Early Help has not recorded it (escalation 2)",
        body="A referral was handed to Early Help 3 working days ago.\nPlease act.\n",
        message_id="<escalation.7k2m9qxd.2@referrals.council.example>",
        created_at=datetime(2026, 12, 7, 9, 30, tzinfo=UTC),
        reference="RT-7K2M9QXD",
    ),
    OutboxMessage(
        # Non-ASCII and long enough to fold: the header classes encode and fold it.
        recipients=["Siân Ó Dónaill <sian.odonaill@council.example>", "team@council.example"],
        subject="Rhybudd — atgyfeiriad heb ei gofnodi gan y tîm Cymorth Cynnar ers tri diwrnod gwaith "
        "(escalation 3 of 4, to the head of service)",
        body="Mae\u2019r atgyfeiriad yn aros.\n" * 40,
        message_id="<escalation.abc.3@referrals.council.example>",
        created_at=datetime(2026, 12, 7, 9, 30, tzinfo=UTC),
        reference=None,
    ),
]


def stock_message(sender: str, row: OutboxMessage) -> EmailMessage:
    """What `Outbox._message` built before the cache: the same steps on email.policy.default."""
    message = EmailMessage(policy=default_policy)
    message["From"] = sender
    message["To"] = ", ".join(row.recipients)
    message["Subject"] = row.subject
    message["Message-ID"] = row.message_id
    message["Date"] = format_datetime(row.created_at)
    if row.reference:
        message["X-Referral-Reference"] = row.reference
    message.set_content(row.body)
    return message


@pytest.mark.parametrize("row", ROWS, ids=["ascii", "welsh-folded"])
def test_messages_are_byte_for_byte_the_stock_policys(row: OutboxMessage) -> None:
    sender = "Referral tracker <referrals@council.example>"
    ours = Outbox._message(SimpleNamespace(mail_from=sender), row)  # type: ignore[arg-type]
    assert ours.policy is MESSAGE_POLICY
    stock = stock_message(sender, row)
    # As aiosmtplib flattens for DATA: the message's own policy with CRLF line ends.
    wire = ours.as_bytes(policy=ours.policy.clone(linesep="\r\n"))
    assert wire == stock.as_bytes(policy=stock.policy.clone(linesep="\r\n"))
    assert wire == ours.as_bytes(policy=default_policy.clone(linesep="\r\n"))
    headers = wire.split(b"\r\n\r\n", 1)[0]
    assert headers.isascii()  # 8-bit names and subjects encoded, as the RFC requires
    assert (b"=?utf-8?" in headers) == (not row.subject.isascii())
    parsed = email.message_from_bytes(wire, policy=default_policy)
    assert parsed["Subject"] == row.subject
    assert parsed["Message-ID"] == row.message_id


def test_header_classes_are_built_once_per_name() -> None:
    registry = MESSAGE_POLICY.header_factory
    assert isinstance(registry, HeaderRegistry)
    assert registry["Subject"] is registry["subject"] is registry["SUBJECT"]
    assert registry["To"] is not registry["Subject"]
    # The stock registry builds a new class at every lookup: the cost the cache removes.
    stock = HeaderRegistry()
    assert stock["Subject"] is not stock["Subject"]
    assert registry["Subject"].__mro__[1:] == stock["Subject"].__mro__[1:]

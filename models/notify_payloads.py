"""Temporal payload of a GOV.UK Notify delivery receipt, signalled to the referral's workflow."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from models.enums import MessageKind
from models.payloads import Strict

#: Notify's final statuses of an email, as its delivery-status callback reports them.
DeliveryStatus = Literal["delivered", "permanent-failure", "temporary-failure", "technical-failure"]


class DeliveryStatusInput(Strict):
    """One recipient's delivery status for one message of the referral (the `delivery_status` signal)."""

    #: The message's outbox key: referral, hand-off, step, repeat (and `:fallback...` for a copy).
    key: str
    handoff_seq: int
    kind: MessageKind
    step: int
    repeat: int
    #: True when the message was itself a fallback copy (a bounce of it is recorded, nothing more).
    fallback_copy: bool = False
    recipient: str
    status: DeliveryStatus
    notification_id: str
    completed_at: datetime | None = None

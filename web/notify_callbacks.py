"""GOV.UK Notify's delivery-status callbacks: `POST /api/v1/integrations/notify/callbacks`.

Notify calls this with the bearer token configured on its callbacks page
(REFERRALS_NOTIFY_CALLBACK_TOKEN) and a JSON receipt for one email: `{id, reference, to, status,
created_at, completed_at, sent_at, notification_type}`. The outbox row is found by `reference`
(the message's key, which the outbox sends as Notify's reference) or by Notify's id; the status
is kept on the row, and the referral's workflow is signalled so that the receipt enters its
chronology (the workflow is the chronology's only writer) and a permanent failure reaches the
fallback recipients.

Without a configured token no caller can be authenticated: every request is 401, as for a token
nobody holds. The token is checked before the body is read, so a caller without it learns
nothing about the body's shape.
"""

from __future__ import annotations

import asyncio
import hmac
from datetime import datetime
from typing import Literal
from uuid import UUID

import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Text, cast, select
from temporalio.service import RPCError, RPCStatusCode

from models import identity
from models.enums import MessageKind
from models.notify_payloads import DeliveryStatus, DeliveryStatusInput
from models.tables import OutboxMessage
from web.deps import RETRY_AFTER, SessionDep
from web.errors import API_PREFIX, ApiError, error_responses, parse_body
from workflows.referral import ReferralWorkflow

log = structlog.get_logger(__name__)

router = APIRouter(prefix=API_PREFIX)

#: How long a signal to the referral's workflow may take before Notify is told to try again.
SIGNAL_TIMEOUT = 10.0


class NotifyCallbackCreate(BaseModel):
    """Notify's delivery receipt for one email (fields Notify adds later are ignored)."""

    model_config = ConfigDict(extra="ignore")

    id: UUID
    reference: str | None = Field(default=None, max_length=200)
    to: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    status: DeliveryStatus
    created_at: datetime | None = None
    completed_at: datetime | None = None
    sent_at: datetime | None = None
    notification_type: Literal["email", "sms", "letter"] = "email"


class NotifyCallbackRead(BaseModel):
    """What became of a receipt."""

    #: False when this status was already recorded for this recipient (Notify called twice).
    recorded: bool
    #: True when the receipt went to the referral's chronology (False: not a referral's
    #: message, or its workflow has finished).
    chronology: bool


def _authorised(request: Request) -> None:
    expected: str | None = request.app.state.settings.notify_callback_token
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # Compared in constant time, and always compared, so timing says nothing about the token.
    given = token.strip().encode() if scheme.lower() == "bearer" else b""
    valid = hmac.compare_digest(given, (expected or "\0").encode())
    if not expected or not valid:
        raise ApiError(
            401, "unauthorized", "send Notify's callback bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


_BODY_SCHEMA = NotifyCallbackCreate.model_json_schema()


@router.post(
    "/integrations/notify/callbacks",
    response_model=NotifyCallbackRead,
    responses=error_responses(401, 404, 422, 503),
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _BODY_SCHEMA}}}
    },
)
async def notify_callback(request: Request, session: SessionDep) -> NotifyCallbackRead:
    """A GOV.UK Notify delivery receipt: kept on the message and put in the referral's chronology."""
    _authorised(request)
    receipt = parse_body(await request.body(), NotifyCallbackCreate, "receipt")
    if receipt.notification_type != "email":
        return NotifyCallbackRead(recorded=False, chronology=False)
    row = await _message(session, receipt)
    if row is None:
        raise ApiError(404, "not_found", "no message of ours has this reference or notification id")
    recipient = next((a for a in row.recipients if a.lower() == receipt.to.lower()), receipt.to)
    seen: list[str] = list((row.provider_status or {}).get(recipient) or [])
    if receipt.status in seen:
        # Recorded before, and signalled before it was recorded (below): nothing more to do.
        return NotifyCallbackRead(recorded=False, chronology=False)
    # Signal first, record after: a failed signal leaves the status unrecorded, so Notify's
    # retry signals again (the workflow ignores a receipt it already holds).
    chronology = await _signal(request, row, recipient, receipt)
    row.provider_status = {**(row.provider_status or {}), recipient: [*seen, receipt.status]}
    ids = dict(row.provider_ids or {})
    ids.setdefault(recipient, str(receipt.id))
    row.provider_ids = ids
    log.info("notify.receipt", key=row.key, status=receipt.status, chronology=chronology)
    return NotifyCallbackRead(recorded=True, chronology=chronology)


async def _message(session: SessionDep, receipt: NotifyCallbackCreate) -> OutboxMessage | None:
    """The outbox row by its key (Notify's reference), else by Notify's id; locked for the update."""
    if receipt.reference:
        query = select(OutboxMessage).where(OutboxMessage.key == receipt.reference)
        row = (await session.execute(query.with_for_update())).scalar_one_or_none()
        if row is not None:
            return row
    # A UUID holds no LIKE wildcards; the JSON text holds each id quoted.
    by_id = select(OutboxMessage).where(cast(OutboxMessage.provider_ids, Text).like(f'%"{receipt.id}"%'))
    return (await session.execute(by_id.with_for_update())).scalars().first()


def _signal_input(
    row: OutboxMessage, recipient: str, receipt: NotifyCallbackCreate
) -> DeliveryStatusInput | None:
    """The workflow's signal for a referral's message; None for another message (the reconciler's)."""
    parts = row.key.split(":")
    if not row.referral_id or len(parts) < 4 or parts[0] != row.referral_id:
        return None
    try:
        kind = MessageKind(row.kind)
        step = 0 if parts[2] == "outcome" else int(parts[2])
        seq, repeat = int(parts[1]), int(parts[3])
    except ValueError:
        return None
    return DeliveryStatusInput(
        key=row.key,
        handoff_seq=seq,
        kind=kind,
        step=step,
        repeat=repeat,
        fallback_copy=len(parts) > 4,
        recipient=recipient,
        status=receipt.status,
        notification_id=str(receipt.id),
        completed_at=receipt.completed_at,
    )


async def _signal(
    request: Request, row: OutboxMessage, recipient: str, receipt: NotifyCallbackCreate
) -> bool:
    """Tell the referral's workflow; False when there is none to tell (finished, or not a referral's)."""
    signal = _signal_input(row, recipient, receipt)
    if signal is None:
        return False
    client = request.app.state.commands.client
    handle = client.get_workflow_handle(identity.workflow_id(row.referral_id))
    try:
        await asyncio.wait_for(handle.signal(ReferralWorkflow.delivery_status, signal), SIGNAL_TIMEOUT)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            # The referral's workflow has finished: the status is kept on the message only.
            log.warning("notify.receipt_after_close", key=row.key, status=receipt.status)
            return False
        raise ApiError(503, "unavailable", "Temporal is unavailable; retry", headers=RETRY_AFTER) from exc
    except TimeoutError as exc:
        raise ApiError(503, "unavailable", "Temporal did not answer; retry", headers=RETRY_AFTER) from exc
    return True

"""Early Help's case system pushes a record: `POST /api/v1/integrations/early-help/records`.

The case system (e.g. Liquidlogic EHM, Mosaic) calls this when a case is opened for one of our
referrals, with `{"reference": "RT-…", "record_id": "EHM-…"}`. The request is signed with the
secret held in the environment variable the policy names (`[integrations.early_help]
webhook_secret_env`):

    X-Signature-Timestamp: <unix seconds>
    X-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

A request more than five minutes old (or ahead), or one already accepted (the same signature),
is refused: a captured request cannot be replayed. A request refused for an outage (503) is not
recorded, so the case system may retry it as it was. The record acknowledges the referral's Early
Help hand-off through the workflow, exactly as the team would (409 when it is not awaiting Early
Help). Without a configured secret, every request is 401.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from datetime import UTC, datetime, timedelta

import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from config import ConfigError
from models.early_help_payloads import CASE_SYSTEM
from models.enums import Team
from models.payloads import AcknowledgeInput, RecordId
from models.policy import CaseSystemPolicy
from models.tables import Referral, WebhookReceipt
from web.deps import Commands, SessionDep
from web.errors import API_PREFIX, ApiError, error_responses, parse_body

log = structlog.get_logger(__name__)

router = APIRouter(prefix=API_PREFIX)

#: How far a request's timestamp may be from our clock (either way).
WINDOW = timedelta(minutes=5)
#: Receipts kept to refuse replays: longer than the window.
KEEP_RECEIPTS = timedelta(days=1)
NOTE = "Pushed by the Early Help case system"


def webhook_secret(policy: CaseSystemPolicy, environ: dict[str, str] | None = None) -> bytes | None:
    """The webhook's HMAC key from the environment variable the policy names (None: webhook off)."""
    if policy.webhook_secret_env is None:
        return None
    value = (os.environ if environ is None else environ).get(policy.webhook_secret_env, "")
    if len(value) < 32:
        raise ConfigError(
            f"{policy.webhook_secret_env}: not set or shorter than 32 characters (the policy's "
            "integrations.early_help.webhook_secret_env names it for the case system's webhook)"
        )
    return value.encode()


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The X-Signature value for a body sent at `timestamp` (what the case system computes)."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class CaseRecordCreate(BaseModel):
    """A record the case system opened for one of our referrals."""

    model_config = ConfigDict(extra="forbid")

    reference: str
    record_id: RecordId


class CaseRecordRead(BaseModel):
    """The referral the record acknowledged."""

    id: str
    reference: str
    status: str


_BODY_SCHEMA = CaseRecordCreate.model_json_schema()


def _verified(request: Request, body: bytes, now: datetime) -> str:
    """The request's signature once checked (401 otherwise)."""
    secret: bytes | None = request.app.state.case_system_secret
    timestamp = request.headers.get("x-signature-timestamp", "")
    given = request.headers.get("x-signature", "")
    expected = signature(secret or b"\0", timestamp, body)
    # Always compared, in constant time, so timing says nothing about the secret.
    valid = hmac.compare_digest(given.encode(), expected.encode())
    if secret is None or not valid:
        raise _unsigned("sign the request with the case system's secret")
    try:
        sent = datetime.fromtimestamp(int(timestamp), UTC)
    except (ValueError, OverflowError, OSError):
        raise _unsigned("X-Signature-Timestamp must be unix seconds") from None
    if abs(now - sent) > WINDOW:
        raise _unsigned("the request is too old (or from the future)")
    return given


def _unsigned(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": 'HMAC realm="early-help"'})


@router.post(
    "/integrations/early-help/records",
    response_model=CaseRecordRead,
    responses=error_responses(401, 404, 409, 422, 503),
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _BODY_SCHEMA}}}
    },
)
async def case_record(request: Request, session: SessionDep, commands: Commands) -> CaseRecordRead:
    """The case system holds a record for a referral: its Early Help hand-off is acknowledged."""
    now = datetime.now(UTC)
    body = await request.body()
    signed = _verified(request, body, now)
    record = parse_body(body, CaseRecordCreate, "record")
    digest = hashlib.sha256(signed.encode()).hexdigest()
    if await session.scalar(select(WebhookReceipt.id).where(WebhookReceipt.digest == digest)) is not None:
        raise ApiError(409, "replayed", "this request was received before")
    referral = await session.scalar(select(Referral).where(Referral.reference == record.reference))
    if referral is None:
        raise ApiError(404, "not_found", "no referral has this reference")
    await session.commit()  # hold no transaction while the workflow answers
    ack = AcknowledgeInput(team=Team.EARLY_HELP, record_id=record.record_id, note=NOTE, actor=CASE_SYSTEM)
    # A refusal (409) or an outage (503) raises here and records nothing: the same request,
    # retried by the case system after an outage, is still accepted.
    result = await commands.acknowledge(referral.id, ack)
    # Accepted: the signature is kept (a day, longer than it is valid) so it is never replayed.
    await session.execute(delete(WebhookReceipt).where(WebhookReceipt.received_at < now - KEEP_RECEIPTS))
    session.add(WebhookReceipt(digest=digest, received_at=now))
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()  # the same request, twice at once: the workflow took it once
    log.info("case_system.record_pushed", reference=record.reference)
    return CaseRecordRead(id=referral.id, reference=referral.reference, status=result.state.status.value)

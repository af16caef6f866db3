"""POST /api/v1/referrals:batch: many referrals at once, each answered on its own.

Every item goes through exactly what POST /referrals does: the same body validation, the same
closed-duplicate check against the read model and the same update-with-start keyed by force and
police reference. So an item is either held by Temporal or not at all, and a retried batch lands
every item on the workflow it created the first time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import structlog
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.service import RPCError

from commands import CommandError, ReferralCommands
from models import repository
from models.enums import Role
from models.identity import fingerprint
from models.identity import referral_id as referral_id_for
from models.payloads import Actor, ReferralDetails
from models.schemas import ReferralCreate
from models.tables import Referral, User
from web.access import same_force
from web.deps import (
    DATABASE_DOWN,
    Commands,
    CurrentUser,
    ReadsApart,
    ReadsApartDep,
    SessionDep,
    abandon,
    actor_of,
    require,
)
from web.errors import API_PREFIX, ApiError, field_errors

log = structlog.get_logger(__name__)

router = APIRouter(prefix=API_PREFIX)

#: Items per request: a batch must finish well within a proxy's request timeout.
MAX_BATCH = 500
#: Items submitted to Temporal at once. The embedded dev server levels off at 10-25 intakes/s
#: end to end on two cores (BENCHMARKS.md); more in flight only queues there and makes a batch's
#: first answers slower.
BATCH_CONCURRENCY = 8
RETRY_AFTER = "5"


class ItemStatus(StrEnum):
    """What became of one item of a batch."""

    CREATED = "created"
    DUPLICATE = "duplicate"
    INVALID = "invalid"
    CONFLICT = "conflict"
    UNAVAILABLE = "unavailable"


class BatchCreate(BaseModel):
    """Body of POST /referrals:batch."""

    model_config = ConfigDict(extra="forbid")

    # Items are not typed as ReferralCreate here: a whole batch would then be refused for one bad
    # item. Each is validated on its own below and an invalid one is reported in its result.
    referrals: Annotated[
        list[Any],
        Field(
            min_length=1,
            max_length=MAX_BATCH,
            description=(
                f"1 to {MAX_BATCH} referrals, each the body of POST /referrals (ReferralCreate). "
                "Each is validated on its own: an invalid item is reported in its result."
            ),
        ),
    ]


class BatchItemRead(BaseModel):
    """The result of one item, in the order sent."""

    index: int
    status: ItemStatus
    id: str | None = None
    reference: str | None = None
    #: Invalid items: each bad field (dotted, as POST /referrals names them) and what is wrong.
    errors: dict[str, str] = Field(default_factory=dict)
    message: str | None = None


class BatchSummary(BaseModel):
    """How many items ended in each status."""

    total: int
    created: int
    duplicate: int
    invalid: int
    conflict: int
    unavailable: int


class BatchRead(BaseModel):
    """Body of a batch's answer: one result per item, in order, and the counts."""

    results: list[BatchItemRead]
    summary: BatchSummary


@dataclass
class _Valid:
    index: int
    body: ReferralCreate
    details: ReferralDetails
    referral_id: str = field(init=False)

    def __post_init__(self) -> None:
        self.referral_id = referral_id_for(self.details.force, self.details.police_reference)


def _validate(index: int, item: Any) -> _Valid | BatchItemRead:
    if not isinstance(item, dict):
        return BatchItemRead(
            index=index,
            status=ItemStatus.INVALID,
            errors={"body": "each referral must be a JSON object"},
        )
    try:
        body = ReferralCreate.model_validate(item)
    except ValidationError as exc:
        return BatchItemRead(index=index, status=ItemStatus.INVALID, errors=field_errors(exc))
    return _Valid(index, body, body.to_details())


def _check_force(user: User, valid: Iterable[_Valid]) -> None:
    """403 for the whole batch when a police user names another force: nothing is submitted."""
    if user.role != Role.POLICE.value:
        return
    others = {
        f"referrals.{v.index}.force": "not your force"
        for v in valid
        if not same_force(user.force, v.details.force)
    }
    if others:
        raise ApiError(403, "forbidden", "police users refer for their own force only", fields=others)


async def _closed(reads: ReadsApart, session: AsyncSession, ids: list[str]) -> dict[str, Referral]:
    """Closed referrals among `ids`, from the read model (empty while it does not answer).

    Apart from the request's session, given up on after DATABASE_WAIT without waiting for
    psycopg's own cancellation, as the single intake's duplicate lookup is (web.deps.ReadsApart).
    """
    if not ids:
        return {}
    try:
        return await reads.read(lambda own: repository.closed_referrals(own, ids))
    except DATABASE_DOWN:
        # As for POST /referrals: the workflow refuses a duplicate of an open or recently closed
        # referral itself, so only one closed past Temporal's retention could slip by.
        log.warning("intake.read_model_unavailable", check="closed_duplicate", batch=True)
        await abandon(session)
        return {}
    finally:
        await reads.release()


def _temporal_unreachable(exc: BaseException) -> bool:
    # A lazily connected client raises a bare RuntimeError when the server cannot be reached.
    return isinstance(exc, RuntimeError) and str(exc).startswith("Failed client connect")


class _Intake:
    """Submits a batch's valid items with bounded concurrency, stopping when Temporal is away."""

    def __init__(self, commands: ReferralCommands, actor: Actor, closed: dict[str, Referral]) -> None:
        self.commands = commands
        self.actor = actor
        self.closed = closed
        self.slots = asyncio.Semaphore(BATCH_CONCURRENCY)
        # Items with one key go one after the other, so the first sent is the one created.
        self.keys: dict[str, asyncio.Lock] = {}
        self.away: str | None = None

    async def run(self, item: _Valid) -> BatchItemRead:
        lock = self.keys.setdefault(item.referral_id, asyncio.Lock())
        async with lock, self.slots:
            if self.away is not None:
                # Not sent: the client retries it; the key makes that retry land once.
                return BatchItemRead(index=item.index, status=ItemStatus.UNAVAILABLE, message=self.away)
            return await self._submit(item)

    async def _submit(self, item: _Valid) -> BatchItemRead:
        row = self.closed.get(item.referral_id)
        if row is not None:
            # The SQL key outlives Temporal's retention: closed referrals are answered from here.
            if row.fingerprint != fingerprint(item.details):
                return self._conflict(item, "this police reference was already used with different content")
            return BatchItemRead(
                index=item.index, status=ItemStatus.DUPLICATE, id=row.id, reference=row.reference
            )
        try:
            result = await self.commands.submit(item.details, actor=self.actor, received_at=datetime.now(UTC))
        except CommandError as exc:
            if exc.code == "unavailable":
                return self._unavailable(item, exc.message)
            return self._conflict(item, exc.message)
        except RPCError as exc:
            log.warning("temporal.unavailable", status=str(exc.status), batch=True)
            return self._unavailable(item, "Temporal is unreachable; retry")
        except (OSError, TimeoutError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and not _temporal_unreachable(exc):
                raise
            log.warning("temporal.unavailable", error=type(exc).__name__, batch=True)
            return self._unavailable(item, "Temporal is unreachable; retry")
        status = ItemStatus.CREATED if result.created else ItemStatus.DUPLICATE
        return BatchItemRead(
            index=item.index, status=status, id=result.state.referral_id, reference=result.state.reference
        )

    def _conflict(self, item: _Valid, message: str) -> BatchItemRead:
        return BatchItemRead(
            index=item.index,
            status=ItemStatus.CONFLICT,
            id=item.referral_id,
            errors={"police_reference": message},
            message=message,
        )

    def _unavailable(self, item: _Valid, message: str) -> BatchItemRead:
        self.away = self.away or message
        return BatchItemRead(index=item.index, status=ItemStatus.UNAVAILABLE, message=message)

    async def guarded(self, item: _Valid) -> BatchItemRead:
        """One item's result; a bug costs that item (logged, retryable), never the batch."""
        try:
            return await self.run(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("batch.unexpected_error", error=type(exc).__name__)
            return BatchItemRead(
                index=item.index,
                status=ItemStatus.UNAVAILABLE,
                message="unexpected error; it has been logged; retry",
            )


def _summary(results: list[BatchItemRead]) -> BatchSummary:
    counts = {s.value: 0 for s in ItemStatus}
    for r in results:
        counts[r.status.value] += 1
    return BatchSummary(total=len(results), **counts)


@router.post(
    "/referrals:batch",
    response_model=BatchRead,
    responses={
        200: {
            "description": "One result per item, in order (also when Temporal is unavailable)",
            "headers": {
                "Retry-After": {
                    "description": "Present when an item is unavailable: seconds before retrying those",
                    "schema": {"type": "string"},
                }
            },
        }
    },
)
async def submit_batch(
    body: BatchCreate,
    user: CurrentUser,
    reads: ReadsApartDep,
    session: SessionDep,
    commands: Commands,
) -> JSONResponse:
    """Submit up to 500 referrals; each item is created, duplicate, invalid, conflict or unavailable."""
    require(user, Role.POLICE, Role.FRONT_DOOR)
    checked = [_validate(i, item) for i, item in enumerate(body.referrals)]
    valid = [c for c in checked if isinstance(c, _Valid)]
    _check_force(user, valid)
    closed = await _closed(reads, session, sorted({v.referral_id for v in valid}))
    intake = _Intake(commands, actor_of(user), closed)
    submitted = await asyncio.gather(*(intake.guarded(v) for v in valid))
    by_index = {r.index: r for r in submitted}
    results = [c if isinstance(c, BatchItemRead) else by_index[c.index] for c in checked]
    read = BatchRead(results=results, summary=_summary(results))
    if read.summary.unavailable:
        log.warning("batch.unavailable", items=read.summary.unavailable, total=read.summary.total)
    headers = {"Retry-After": RETRY_AFTER} if read.summary.unavailable else None
    log.info("batch.done", **read.summary.model_dump())
    return JSONResponse(read.model_dump(mode="json"), status_code=200, headers=headers)

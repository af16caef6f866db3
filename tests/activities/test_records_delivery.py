"""The projection carries the workflow's `referrer_undeliverable` flag into the referral row."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import ActivityEnvironment

from activities.records import RecordActivities
from models.enums import EventType
from models.payloads import ProjectInput, ReferralEvent
from models.tables import Referral
from tests.activities.conftest import REFERRAL_ID
from tests.activities.test_records_activity import EH_DUE, EVENTS, state
from tests.conftest import POLICE, sample_details

Sessions = async_sessionmaker[AsyncSession]


async def project(sessions: Sessions, version: int, *, bounced: bool) -> None:
    """One projection of the sample referral at `version`, flagged or not."""
    snapshot = state(version, EVENTS[:version]).model_copy(update={"referrer_undeliverable": bounced})
    if bounced:
        failed = ReferralEvent(
            seq=version + 1,
            type=EventType.DELIVERY_FAILED,
            at=EH_DUE,
            data={"kind": "escalation", "to": ["a.example@police.example"], "reply_code": 550},
        )
        snapshot = snapshot.model_copy(update={"events": [*snapshot.events, failed], "version": version + 1})
    input = ProjectInput(state=snapshot, submitted_by=POLICE, details=sample_details())
    await ActivityEnvironment().run(RecordActivities(sessions).project_referral, input)


async def flag(sessions: Sessions) -> bool:
    """The row's flag as the dashboard reads it."""
    async with sessions() as session:
        value = await session.scalar(
            select(Referral.referrer_undeliverable).where(Referral.id == REFERRAL_ID)
        )
        assert value is not None
        return value


class TestReferrerUndeliverable:
    """The flag follows the workflow's state, never moving a row backwards."""

    async def test_flag_is_projected(self, sessions: Sessions) -> None:
        await project(sessions, 4, bounced=False)
        assert await flag(sessions) is False
        await project(sessions, 4, bounced=True)
        assert await flag(sessions) is True
        # An older projection retried late does not clear it.
        await project(sessions, 3, bounced=False)
        assert await flag(sessions) is True

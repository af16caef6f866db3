"""The `reproject` signal: the workflow writes its whole state into SQL again (reconciler repair)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import pytest_asyncio
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.deadlines import DeadlineActivities
from activities.records import RecordActivities
from commands import ReferralCommands
from models import identity
from models.db import create_engine, session_factory
from models.enums import EventType, Outcome
from models.payloads import DecisionInput
from models.policy import load_policy
from models.tables import Referral, ReferralEvent
from tests.conftest import FRONT_DOOR, POLICE, sample_details
from tests.workflows.conftest import FakeSideEffects
from workflows.referral import ReferralWorkflow

Sessions = async_sessionmaker[AsyncSession]


@pytest_asyncio.fixture
async def sessions(database_url: str) -> AsyncIterator[Sessions]:
    """The real read model (SQLite, then PostgreSQL)."""
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def row_and_events(sessions: Sessions, referral_id: str) -> tuple[int | None, int]:
    """The referral row's version (None when missing) and how many events it has."""
    async with sessions() as session:
        version = await session.scalar(select(Referral.version).where(Referral.id == referral_id))
        count = await session.scalar(
            select(func.count()).select_from(ReferralEvent).where(ReferralEvent.referral_id == referral_id)
        )
        return version, int(count or 0)


async def test_a_deleted_row_comes_back_on_reproject(
    env: WorkflowEnvironment, sessions: Sessions, received_at: datetime
) -> None:
    queue = f"test-{uuid.uuid4()}"
    fakes = FakeSideEffects()
    worker = Worker(
        env.client,
        task_queue=queue,
        workflows=[ReferralWorkflow],
        activities=[
            DeadlineActivities(load_policy()).plan_handoff,
            fakes.send_email,
            RecordActivities(sessions).project_referral,
        ],
    )
    async with worker:
        commands = ReferralCommands(env.client, queue)
        intake = await commands.submit(
            sample_details(f"NP-REPROJECT-{uuid.uuid4().hex[:8]}"), actor=POLICE, received_at=received_at
        )
        rid = intake.state.referral_id
        decided = await commands.decide(rid, DecisionInput(outcome=Outcome.EARLY_HELP, actor=FRONT_DOOR))
        assert decided.projected
        # The outcome email to the referrer goes out beside the next hand-off: let it land and be
        # listed, so that nothing but the reprojection happens from here on.
        for _ in range(100):
            state = await commands.state(rid)
            sent = any(e.type == EventType.EMAIL_SENT for e in state.events)
            if sent and await row_and_events(sessions, rid) == (state.version, len(state.events)):
                break
            await asyncio.sleep(0.05)
        assert await row_and_events(sessions, rid) == (state.version, len(state.events))
        before = state.version

        # Behind the system's back: the row and its chronology vanish.
        async with sessions() as session, session.begin():
            await session.execute(delete(ReferralEvent).where(ReferralEvent.referral_id == rid))
            await session.execute(delete(Referral).where(Referral.id == rid))
        assert await row_and_events(sessions, rid) == (None, 0)

        await env.client.get_workflow_handle(identity.workflow_id(rid)).signal(ReferralWorkflow.reproject)
        for _ in range(100):
            if (await row_and_events(sessions, rid))[0] is not None:
                break
            await asyncio.sleep(0.05)
        state = await commands.state(rid)
        assert await row_and_events(sessions, rid) == (state.version, len(state.events))
        async with sessions() as session:
            row = await session.get(Referral, rid)
            assert row is not None and row.details is not None
            assert row.details["children"][0]["family_name"] == "Quixotic"
            assert row.awaiting_team == "early_help"
        assert state.version == before, "a reprojection is not an event"
        # Left running, its timers would fire with no worker and stall the shared test server's
        # clock for the tests after this one.
        await env.client.get_workflow_handle(identity.workflow_id(rid)).terminate("test over")

"""PurgeWorkflow on the time-skipping server with the real purge activity and a real read model."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.retention import RetentionActivities
from models.db import create_engine, session_factory
from models.retention_payloads import PurgeResult, PurgeWorkflowInput
from tests.retention_seed import days_ago, personal_left, seed, snapshot
from workflows.retention import PurgeWorkflow

Sessions = async_sessionmaker[AsyncSession]
RETENTION = 30


@pytest_asyncio.fixture
async def sessions(database_url: str) -> AsyncIterator[Sessions]:
    """Sessions on a fresh, migrated read model (SQLite, then PostgreSQL)."""
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def run_purge(
    env: WorkflowEnvironment, sessions: Sessions, input: PurgeWorkflowInput
) -> tuple[PurgeResult, WorkflowHandle[PurgeWorkflow, PurgeResult]]:
    """Start PurgeWorkflow on a fresh queue with the real activity; its result and first run."""
    queue = f"purge-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[PurgeWorkflow],
        activities=[RetentionActivities(sessions).purge_closed_referrals],
    ):
        handle = await env.client.start_workflow(
            PurgeWorkflow.run,
            input,
            id=f"purge-{uuid.uuid4()}",
            task_queue=queue,
            execution_timeout=timedelta(minutes=5),
        )
        return await handle.result(), handle


async def test_purges_batch_by_batch_across_continue_as_new(
    env: WorkflowEnvironment, sessions: Sessions
) -> None:
    # The workflow's "now" is the server's clock: ages are relative to the wall clock.
    old = [
        await seed(sessions, n, received=days_ago(RETENTION + 60), closed=days_ago(RETENTION + n))
        for n in range(1, 6)
    ]
    young = await seed(sessions, 6, received=days_ago(RETENTION + 60), closed=days_ago(RETENTION - 2))
    open_ = await seed(sessions, 7, received=days_ago(RETENTION * 10), closed=None)
    kept = {s.referral_id: await snapshot(sessions, s.referral_id) for s in (young, open_)}

    # Two per batch, two batches per run: 2 + 2, continue-as-new, then 1 and done.
    input = PurgeWorkflowInput(retention_days=RETENTION, batch_size=2, batches_per_run=2)
    result, handle = await run_purge(env, sessions, input)

    assert result.referrals == 5
    assert result.events == 5 * 3
    assert result.outbox_messages == 5
    first_run = env.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    assert (await first_run.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW
    for s in old:
        snap = await snapshot(sessions, s.referral_id)
        assert snap["referral"]["purged_at"] is not None
        assert personal_left(snap) == []
        assert len(snap["events"]) == 7
    for referral_id, snap in kept.items():
        assert await snapshot(sessions, referral_id) == snap

    again, _ = await run_purge(env, sessions, PurgeWorkflowInput(retention_days=RETENTION))
    assert again == PurgeResult()


async def test_nothing_due_finishes_in_one_batch(env: WorkflowEnvironment, sessions: Sessions) -> None:
    young = await seed(sessions, 1, received=days_ago(RETENTION), closed=days_ago(RETENTION - 1))
    before = await snapshot(sessions, young.referral_id)

    result, handle = await run_purge(env, sessions, PurgeWorkflowInput(retention_days=RETENTION))

    assert result == PurgeResult()
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    assert await snapshot(sessions, young.referral_id) == before

"""ensure_schedules on a real Temporal dev server: one daily purge Schedule, kept up to date."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from temporalio.client import (
    Client,
    ScheduleActionStartWorkflow,
    ScheduleOverlapPolicy,
    ScheduleRange,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.retention import RetentionActivities
from codec import data_converter
from config import Settings
from models.db import create_engine, session_factory
from models.retention_payloads import PurgeWorkflowInput
from tests.conftest import TEMPORAL_CLI, fresh_database_url
from tests.retention_seed import days_ago, personal_left, seed, snapshot
from worker import PURGE_SCHEDULE_ID, ensure_schedules
from workflows.retention import PurgeWorkflow

pytestmark = pytest.mark.slow

SECRET = "schedule-test-secret-" + "x" * 32
LONDON = ZoneInfo("Europe/London")


@pytest_asyncio.fixture
async def client() -> AsyncIterator[Client]:
    """A fresh dev server per test (the schedule id is fixed), with the project's encrypting converter."""
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_CLI),
        data_converter=data_converter(encryption_key=None, secret=SECRET),
        dev_server_extra_args=["--log-level", "error"],
    ) as env:
        yield env.client


def settings(**values: object) -> Settings:
    """Settings as the worker would have them, with `values` overriding the defaults."""
    return Settings(**{"secret_key": SECRET, "task_queue": "referrals-test", **values})  # type: ignore[arg-type]


async def decoded_input(client: Client) -> PurgeWorkflowInput:
    """The schedule's workflow input, decrypted with the client's converter."""
    action = (await client.get_schedule_handle(PURGE_SCHEDULE_ID).describe()).schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    [value] = await client.data_converter.decode(list(action.args), [PurgeWorkflowInput])
    assert isinstance(value, PurgeWorkflowInput)
    return value


async def test_creates_the_daily_schedule(client: Client) -> None:
    await ensure_schedules(client, settings())

    description = await client.get_schedule_handle(PURGE_SCHEDULE_ID).describe()
    schedule = description.schedule
    [calendar] = schedule.spec.calendars
    assert (list(calendar.hour), list(calendar.minute)) == ([ScheduleRange(2)], [ScheduleRange(30)])
    assert schedule.spec.time_zone_name == "Europe/London"
    assert schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    action = schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert (action.workflow, action.task_queue) == ("PurgeWorkflow", "referrals-test")
    assert await decoded_input(client) == PurgeWorkflowInput(retention_days=2192)
    # The input is encrypted like every other payload, and holds only a number of days anyway.
    assert all(b"2192" not in payload.data for payload in action.args)
    # Daily at 02:30 UK time, through the clock changes.
    upcoming = description.info.next_action_times
    assert len(upcoming) >= 2
    assert all((t.astimezone(LONDON).hour, t.astimezone(LONDON).minute) == (2, 30) for t in upcoming)
    assert upcoming[1] - upcoming[0] in {timedelta(hours=h) for h in (23, 24, 25)}


async def test_twice_is_fine_and_changes_nothing(client: Client) -> None:
    await ensure_schedules(client, settings())
    first = await client.get_schedule_handle(PURGE_SCHEDULE_ID).describe()

    await ensure_schedules(client, settings())

    second = await client.get_schedule_handle(PURGE_SCHEDULE_ID).describe()
    assert second.info.last_updated_at == first.info.last_updated_at
    assert second.schedule.spec == first.schedule.spec
    assert [s async for s in await client.list_schedules()] != []


async def test_new_settings_update_the_schedule_and_keep_a_pause(client: Client) -> None:
    await ensure_schedules(client, settings())
    handle = client.get_schedule_handle(PURGE_SCHEDULE_ID)
    await handle.pause(note="paused by the operator during a migration")

    # A new retention period alone changes the workflow's input, not the times.
    await ensure_schedules(client, settings(retention_days=3000))
    assert await decoded_input(client) == PurgeWorkflowInput(retention_days=3000)

    await ensure_schedules(client, settings(purge_time="04:15", retention_days=3000))

    description = await handle.describe()
    [calendar] = description.schedule.spec.calendars
    assert (list(calendar.hour), list(calendar.minute)) == ([ScheduleRange(4)], [ScheduleRange(15)])
    assert await decoded_input(client) == PurgeWorkflowInput(retention_days=3000)
    assert description.info.last_updated_at is not None
    assert description.schedule.state.paused


async def test_a_triggered_run_purges_the_read_model(client: Client, tmp_path: Path) -> None:
    """The scheduled action, decrypted by a worker, runs the real purge against SQLite."""
    urls = fresh_database_url("sqlite", tmp_path)
    url = next(urls)
    engine = create_engine(url)
    sessions = session_factory(engine)
    try:
        old = await seed(sessions, 1, received=days_ago(40), closed=days_ago(31))
        young = await seed(sessions, 2, received=days_ago(40), closed=days_ago(29))
        young_before = await snapshot(sessions, young.referral_id)
        config = settings(retention_days=30, task_queue=f"purge-{uuid.uuid4()}")
        await ensure_schedules(client, config)
        async with Worker(
            client,
            task_queue=config.task_queue,
            workflows=[PurgeWorkflow],
            activities=[RetentionActivities(sessions).purge_closed_referrals],
        ):
            await client.get_schedule_handle(PURGE_SCHEDULE_ID).trigger()
            deadline = datetime.now(UTC) + timedelta(seconds=30)
            while (await snapshot(sessions, old.referral_id))["referral"]["purged_at"] is None:
                assert datetime.now(UTC) < deadline, "the triggered purge did not run"
                await asyncio.sleep(0.2)
        assert personal_left(await snapshot(sessions, old.referral_id)) == []
        assert await snapshot(sessions, young.referral_id) == young_before
    finally:
        await engine.dispose()

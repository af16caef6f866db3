"""On the real dev server: sends that fell due while no worker ran go out when one returns.

The time-skipping server cannot model this (it stops the clock while a workflow task waits
for a worker), so this test uses real time with a policy of seconds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.deadlines import DeadlineActivities
from commands import CommandError, ReferralCommands
from models.enums import EventType, Outcome, Team
from models.payloads import DecisionInput
from models.policy import parse_policy
from tests.conftest import FRONT_DOOR, POLICE, ROOT, TEMPORAL_CLI, sample_details
from tests.workflows.conftest import FakeSideEffects
from workflows.referral import ReferralWorkflow

pytestmark = pytest.mark.slow

# The demo policy squeezed to seconds: reminder at 2 s, escalation at 3 s, repeats at 4-7 s.
FAST = (
    (ROOT / "policies" / "demo.toml")
    .read_text()
    .replace('"PT60S"', '"PT3S"')
    .replace('"due - PT20S"', '"due - PT1S"')
    .replace('"due + PT30S"', '"due + PT1S"')
    .replace('repeat_every = "PT30S"', 'repeat_every = "PT1S"')
)


@pytest_asyncio.fixture(scope="module")
async def local_client() -> AsyncIterator[Client]:
    """A real Temporal dev server from the pip-installed CLI."""
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_CLI),
        data_converter=pydantic_data_converter,
        dev_server_extra_args=["--log-level", "error"],
    ) as env:
        yield env.client


async def test_missed_repeats_collapse_after_worker_returns(local_client: Client) -> None:
    policy = parse_policy(FAST, "fast.toml")
    fakes = FakeSideEffects()
    deadlines = DeadlineActivities(policy)
    queue = f"away-{uuid.uuid4()}"

    def worker() -> Worker:
        return Worker(
            local_client,
            task_queue=queue,
            workflows=[ReferralWorkflow],
            activities=[deadlines.plan_handoff, fakes.send_email, fakes.project_referral],
        )

    commands = ReferralCommands(local_client, queue)
    async with worker():
        intake = await commands.submit(sample_details("NP-AWAY"), actor=POLICE, received_at=datetime.now(UTC))
        rid = intake.state.referral_id
        decided = await commands.decide(rid, DecisionInput(outcome=Outcome.EARLY_HELP, actor=FRONT_DOOR))
    handoff = decided.state.current
    assert handoff is not None and handoff.team == Team.EARLY_HELP
    last = max(s.at for s in handoff.plan)
    # No worker while the whole Early Help ladder falls due.
    await asyncio.sleep((last - datetime.now(UTC)).total_seconds() + 1.5)
    assert [s for s in fakes.emails if s.email.team == Team.EARLY_HELP] == []

    async with worker():
        # Wait for the collapsed send to be recorded (its email goes out before the level rises),
        # then give any wrongly repeated send time to show before reading the state once more.
        for _ in range(300):
            state = await commands.state(rid)
            collapsed_seen = any(e.type == EventType.STEPS_COLLAPSED for e in state.events)
            if collapsed_seen and state.current is not None and state.current.escalation_level >= 2:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        state = await commands.state(rid)
    sent = [(s.email.step, s.email.repeat) for s in fakes.emails if s.email.team == Team.EARLY_HELP]
    last_repeat = max(s.repeat for s in handoff.plan if s.step == 2)
    assert last_repeat == 3
    assert sent == [(0, 0), (1, 0), (2, 3)], "each step sent once after the outage, missed repeats collapsed"
    collapsed = [e for e in state.events if e.type == EventType.STEPS_COLLAPSED]
    assert [e.data["repeats"] for e in collapsed] == [["0", "1", "2"]]
    assert state.current is not None and state.current.escalation_level == 2


async def test_commands_time_out_without_a_worker_and_a_retry_is_safe(local_client: Client) -> None:
    queue = f"nobody-{uuid.uuid4()}"
    impatient = ReferralCommands(local_client, queue, update_timeout=timedelta(seconds=2))
    details = sample_details("NP-NO-WORKER")
    received = datetime.now(UTC)
    with pytest.raises(CommandError) as refused:
        await impatient.submit(details, actor=POLICE, received_at=received)
    assert refused.value.code == "unavailable"
    # The workflow is durable in Temporal already; once a worker serves its queue, the first
    # attempt and the retry resolve to one referral with one intake.
    fakes = FakeSideEffects()
    deadlines = DeadlineActivities(parse_policy(FAST, "fast.toml"))
    async with Worker(
        local_client,
        task_queue=queue,
        workflows=[ReferralWorkflow],
        activities=[deadlines.plan_handoff, fakes.send_email, fakes.project_referral],
    ):
        retried = await ReferralCommands(local_client, queue).submit(
            details, actor=POLICE, received_at=received
        )
        state = await impatient.state(retried.state.referral_id)
    assert len(state.handoffs) == 1
    assert [e.type for e in state.events].count(EventType.RECEIVED) == 1

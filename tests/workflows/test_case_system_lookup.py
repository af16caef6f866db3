"""ReferralWorkflow asks Early Help's case system for a record while the hand-off is open."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest_asyncio
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.deadlines import DeadlineActivities
from commands import ReferralCommands
from models.early_help_payloads import CASE_SYSTEM, LookupInput, LookupResult
from models.enums import EventType, Outcome, Status, Team
from models.payloads import AcknowledgeInput, DecisionInput, ReferralState
from models.policy import default_policy_text, parse_policy
from tests.conftest import EARLY_HELP, FRONT_DOOR, POLICE, sample_details
from tests.workflows.conftest import Harness, time_skipping_server
from workflows.referral import ReferralWorkflow

POLL = timedelta(minutes=15)
CASE_SYSTEM_POLICY = parse_policy(
    default_policy_text()
    + """
[integrations.early_help]
lookup_url = "https://ehm.example/api/cases?police_reference={police_reference}"
record_id_path = "cases.0.id"
poll_every = "PT15M"
"""
)


@dataclass
class FakeCaseSystem:
    """Answers lookups from a script: None (not yet), a record id, or an error."""

    answers: list[str | Exception | None] = field(default_factory=list)
    asked: list[LookupInput] = field(default_factory=list)

    @activity.defn(name="lookup_case_record")
    async def lookup(self, input: LookupInput) -> LookupResult:
        self.asked.append(input)
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, Exception):
            raise answer
        return LookupResult(record_id=answer)


@dataclass
class CaseSystemHarness:
    """A worker whose policy configures a case system, on its own task queue."""

    base: Harness
    commands: ReferralCommands
    case_system: FakeCaseSystem

    async def to_early_help(self, police_reference: str) -> str:
        now = await self.base.env.get_current_time()
        intake = await self.commands.submit(sample_details(police_reference), actor=POLICE, received_at=now)
        rid = intake.state.referral_id
        await self.commands.decide(rid, DecisionInput(outcome=Outcome.EARLY_HELP, actor=FRONT_DOOR))
        return rid

    async def final(self, rid: str, within: timedelta = timedelta(hours=6)) -> ReferralState:
        """The referral's state once its workflow has completed, skipping time a little at a time.

        Completed, not merely closed: a worker stopped while the workflow still sends its
        outcome email would leave the shared test server waiting on that activity.
        """
        handle = self.base.client.get_workflow_handle(f"referral-{rid}")
        waited = timedelta(0)
        while (await handle.describe()).status != WorkflowExecutionStatus.COMPLETED:
            assert waited < within, f"still {(await self.commands.state(rid)).status.value} after {waited}"
            await self.base.env.sleep(timedelta(minutes=5))
            waited += timedelta(minutes=5)
        return await self.commands.state(rid)


@pytest_asyncio.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this module's own: its tests skip hours of time (see conftest's `env`)."""
    async with time_skipping_server() as environment:
        yield environment


@pytest_asyncio.fixture
async def lookup(harness: Harness) -> AsyncIterator[CaseSystemHarness]:
    case_system = FakeCaseSystem()
    queue = f"test-{uuid.uuid4()}"
    worker = Worker(
        harness.client,
        task_queue=queue,
        workflows=[ReferralWorkflow],
        activities=[
            DeadlineActivities(CASE_SYSTEM_POLICY).plan_handoff,
            harness.fakes.send_email,
            harness.fakes.project_referral,
            case_system.lookup,
        ],
    )
    async with worker:
        yield CaseSystemHarness(harness, ReferralCommands(harness.client, queue), case_system)


def acknowledgements(state: ReferralState) -> list[tuple[str, str | int | list[str] | None]]:
    return [
        (e.actor.user_id if e.actor else "", e.data.get("record_id"))
        for e in state.events
        if e.type == EventType.ACKNOWLEDGED
    ]


async def test_a_record_found_in_the_case_system_acknowledges_the_hand_off(
    lookup: CaseSystemHarness,
) -> None:
    lookup.case_system.answers = [None, None, "EHM-4471"]
    rid = await lookup.to_early_help("NP-LOOKUP-FOUND")

    state = await lookup.final(rid)  # time skips from poll to poll until the record turns up

    assert state.status == Status.CLOSED and state.record_id == "EHM-4471"
    assert acknowledgements(state) == [(CASE_SYSTEM.user_id, "EHM-4471")]
    early_help = state.handoffs[-1]
    assert early_help.team == Team.EARLY_HELP
    assert early_help.closed_at is not None
    # Found at the third poll: 45 minutes after the hand-off opened, no sooner.
    assert early_help.closed_at - early_help.opened_at >= 3 * POLL
    assert len(lookup.case_system.asked) == 3
    assert {a.police_reference for a in lookup.case_system.asked} == {"NP-LOOKUP-FOUND"}
    # The ladder stopped: nothing was escalated after the record was found.
    escalations = [s for s in lookup.base.fakes.of_kind("escalation") if s.email.referral_id == rid]
    assert all(s.at <= early_help.closed_at for s in escalations)


async def test_the_team_acknowledging_first_stops_the_lookups(lookup: CaseSystemHarness) -> None:
    rid = await lookup.to_early_help("NP-LOOKUP-MANUAL")
    await lookup.base.env.sleep(POLL + timedelta(minutes=1))  # one lookup, nothing found
    asked = len(lookup.case_system.asked)
    assert asked >= 1

    await lookup.commands.acknowledge(
        rid, AcknowledgeInput(team=Team.EARLY_HELP, record_id="EH-9", actor=EARLY_HELP)
    )
    lookup.case_system.answers = ["EHM-LATE"] * 5
    state = await lookup.final(rid)

    assert acknowledgements(state) == [(EARLY_HELP.user_id, "EH-9")]
    assert state.record_id == "EH-9"
    assert len(lookup.case_system.asked) == asked, "the case system was asked after the acknowledgement"


async def test_a_case_system_that_fails_is_asked_again_at_the_next_interval(
    lookup: CaseSystemHarness,
) -> None:
    down = RuntimeError("case system unavailable")
    lookup.case_system.answers = [down, down, down, "EHM-77"]  # the first poll's three attempts fail
    rid = await lookup.to_early_help("NP-LOOKUP-DOWN")

    state = await lookup.final(rid)

    assert state.record_id == "EHM-77"
    assert acknowledgements(state) == [(CASE_SYSTEM.user_id, "EHM-77")]
    early_help = state.handoffs[-1]
    assert early_help.closed_at is not None
    assert early_help.closed_at - early_help.opened_at >= 2 * POLL


async def test_no_case_system_no_lookups(harness: Harness) -> None:
    now = await harness.env.get_current_time()
    intake = await harness.commands.submit(sample_details("NP-NO-LOOKUP"), actor=POLICE, received_at=now)
    rid = intake.state.referral_id
    decided = await harness.commands.decide(rid, DecisionInput(outcome=Outcome.EARLY_HELP, actor=FRONT_DOOR))
    assert decided.state.handoffs[-1].lookup_every is None
    await harness.commands.acknowledge(
        rid, AcknowledgeInput(team=Team.EARLY_HELP, record_id="EH-1", actor=EARLY_HELP)
    )
    handle = harness.client.get_workflow_handle(f"referral-{rid}")
    while (await handle.describe()).status != WorkflowExecutionStatus.COMPLETED:
        await harness.env.sleep(timedelta(minutes=1))


async def test_a_worker_without_the_lookup_does_not_keep_the_referral_open(harness: Harness) -> None:
    """The case system taken out of the policy while a plan still asks: the worker refuses the
    lookups (not registered), the workflow waits for the next interval, the referral finishes."""
    queue = f"test-{uuid.uuid4()}"
    worker = Worker(
        harness.client,
        task_queue=queue,
        workflows=[ReferralWorkflow],
        # No lookup_case_record: the worker fails its tasks as not registered.
        activities=[
            DeadlineActivities(CASE_SYSTEM_POLICY).plan_handoff,
            harness.fakes.send_email,
            harness.fakes.project_referral,
        ],
    )
    async with worker:
        unserved = CaseSystemHarness(harness, ReferralCommands(harness.client, queue), FakeCaseSystem())
        rid = await unserved.to_early_help("NP-LOOKUP-UNSERVED")
        await harness.env.sleep(POLL + timedelta(minutes=1))  # a lookup is waiting for a worker
        await unserved.commands.acknowledge(
            rid, AcknowledgeInput(team=Team.EARLY_HELP, record_id="EH-3", actor=EARLY_HELP)
        )

        state = await unserved.final(rid, within=timedelta(hours=1))

    assert state.record_id == "EH-3"

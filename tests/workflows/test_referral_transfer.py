"""A transfer to another authority on the time-skipping server: its ladder in working time, then
its acknowledgement closes the referral; refused when the front door is not awaiting a decision."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.notify import compose
from commands import CommandError
from models import identity
from models.enums import TRANSFERRED, EventType, MessageKind, Outcome, Risk, Role, Status, Team
from models.payloads import AcknowledgeInput, Actor, DecisionInput, ReferralState, TransferInput
from tests.conftest import EARLY_HELP, FRONT_DOOR, POLICE, sample_details
from tests.workflows.conftest import Harness, time_skipping_server
from tests.workflows.test_referral_workflow import next_weekday, skip_to
from web.links import AckLinks
from workflows.referral import ReferralWorkflow

LONDON = ZoneInfo("Europe/London")
REFERRER = "a.example@police.example"
THEIR_FRONT_DOOR = "mash@northnorthants.example"
THEIR_MANAGER = "mash-manager@northnorthants.example"
OUR_MANAGER = "mash-manager@council.example"
NNC = "North Northamptonshire Council"
#: The other authority acknowledging through its emailed link, as web/ack.py records it.
BY_LINK = Actor(user_id="ack-link:x:2", name=f"emailed link ({NNC})", role=Role.FRONT_DOOR)

pytestmark = pytest.mark.policy("england.toml")  # lists NNC and WNC


@pytest_asyncio.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """A server of this module's own: its tests skip days (see conftest's `env`)."""
    async with time_skipping_server() as environment:
        yield environment


def transfer_to(code: str = "NNC", name: str = NNC, note: str = "Family moved to Corby") -> TransferInput:
    """The front door's transfer, as the API builds it from the policy."""
    return TransferInput(authority=code, authority_name=name, note=note, actor=FRONT_DOOR)


class TestTransfer:
    async def test_ladder_to_the_other_authority_in_working_time_then_its_acknowledgement_closes(
        self, harness: Harness
    ) -> None:
        now = await harness.env.get_current_time()
        start = await skip_to(harness, next_weekday(now, 1, 10))  # a Tuesday, 10:00
        intake = await harness.commands.submit(
            sample_details("NP-TRANSFER-1", risk="red"), actor=POLICE, received_at=start
        )
        rid = intake.state.referral_id
        await skip_to(harness, start + timedelta(hours=1))

        moved = await harness.commands.transfer(rid, transfer_to())

        state = moved.state
        assert state.status == Status.AWAITING_ACKNOWLEDGEMENT
        front, other = state.handoffs
        assert (front.team, front.result, front.authority, front.authority_name) == (
            Team.FRONT_DOOR,
            TRANSFERRED,
            "NNC",
            NNC,
        )
        assert front.closed_by == FRONT_DOOR and front.note == "Family moved to Corby"
        assert (other.team, other.authority, other.authority_name, other.team_name) == (
            Team.OTHER_AUTHORITY,
            "NNC",
            NNC,
            NNC,
        )
        assert state.current is other and state.outcome is None
        transferred = next(e for e in state.events if e.type == EventType.TRANSFERRED)
        assert transferred.actor == FRONT_DOOR and transferred.team == Team.FRONT_DOOR
        assert transferred.data == {
            "authority": "NNC",
            "authority_name": NNC,
            "note": "Family moved to Corby",
        }
        opened = [e for e in state.events if e.type == EventType.HANDOFF_OPENED][-1]
        assert opened.data["authority"] == "NNC" and opened.data["team_email"] == THEIR_FRONT_DOOR

        # The referrer hears where it went.
        await harness.env.sleep(timedelta(seconds=5))
        feedback = harness.fakes.of_kind("outcome")
        assert [(s.email.recipients, s.email.result, s.email.authority_name) for s in feedback] == [
            ([REFERRER], TRANSFERRED, NNC)
        ]

        # Two working days past the deadline: reminded, escalated, escalated again.
        await skip_to(harness, other.due_at + timedelta(days=4))
        ladder = [s for s in harness.fakes.emails if s.email.team == Team.OTHER_AUTHORITY]
        reminders = [s for s in ladder if s.email.kind == MessageKind.REMINDER]
        escalations = [s for s in ladder if s.email.kind == MessageKind.ESCALATION]
        assert [r.email.recipients for r in reminders] == [[THEIR_FRONT_DOOR]]
        assert len(escalations) >= 2
        assert all(
            e.email.recipients == [THEIR_FRONT_DOOR, THEIR_MANAGER, OUR_MANAGER, REFERRER]
            for e in escalations
        )
        planned = {(p.step, p.repeat): p.at for p in other.plan}
        for sent in ladder:
            at = planned[(sent.email.step, sent.email.repeat)]
            assert sent.at >= at
            local = at.astimezone(LONDON)
            assert local.weekday() < 5 and 9 <= local.hour < 17, local
            assert sent.email.authority_name == NNC and sent.email.team_name == NNC
        # The transfer's own clock (1 working day), not the front door's red one (4 working hours).
        policy = harness.deadlines.policy
        assert other.due_at == harness.deadlines.calendar.add(
            other.opened_at, policy.handoff(Team.OTHER_AUTHORITY).due_for(Risk.RED)
        )
        assert other.due_at - other.opened_at >= timedelta(hours=20)

        # Nothing in any of it names the child or says what happened.
        links = AckLinks("s" * 40, "https://referrals.example")
        child = sample_details().children[0]
        for sent in harness.fakes.emails:
            subject, body = compose(sent.email, links)
            for secret in (child.family_name, child.given_name, str(child.date_of_birth), "Corby"):
                assert secret and secret not in subject + body, secret
        assert NNC in compose(feedback[0].email, links)[0]

        acked = await harness.commands.acknowledge(
            rid, AcknowledgeInput(team=Team.OTHER_AUTHORITY, record_id="NNC-2026-0042", actor=BY_LINK)
        )
        assert acked.state.status == Status.CLOSED
        assert acked.state.record_id == "NNC-2026-0042"
        assert acked.state.handoffs[-1].result == "acknowledged"
        sent_before = len(harness.fakes.of_kind("escalation"))
        await harness.env.sleep(timedelta(days=30))
        assert len(harness.fakes.of_kind("escalation")) == sent_before, "escalated after acknowledgement"
        last = harness.fakes.of_kind("outcome")[-1].email
        assert (last.team, last.record_id, last.recipients) == (
            Team.OTHER_AUTHORITY,
            "NNC-2026-0042",
            [REFERRER],
        )
        assert "North Northamptonshire Council recorded it as NNC-2026-0042" in compose(last, links)[0]

        # The run, with its new branches, replays deterministically.
        handle = harness.client.get_workflow_handle(identity.workflow_id(rid), result_type=ReferralState)
        final = await handle.result()
        assert final.status == Status.CLOSED and EventType.CLOSED in [e.type for e in final.events]
        history: WorkflowHistory = await handle.fetch_history()
        replayed = await Replayer(
            workflows=[ReferralWorkflow], data_converter=pydantic_data_converter
        ).replay_workflow(history)
        assert replayed.replay_failure is None

    async def test_refused_unless_awaiting_the_front_doors_decision(self, harness: Harness) -> None:
        now = await harness.env.get_current_time()
        intake = await harness.commands.submit(sample_details("NP-TRANSFER-2"), actor=POLICE, received_at=now)
        rid = intake.state.referral_id
        # Another authority's acknowledgement is refused while the front door decides.
        with pytest.raises(CommandError) as early:
            await harness.commands.acknowledge(
                rid, AcknowledgeInput(team=Team.OTHER_AUTHORITY, record_id="X-1", actor=BY_LINK)
            )
        assert early.value.code == "not_awaiting"

        await harness.commands.decide(rid, DecisionInput(outcome=Outcome.EARLY_HELP, actor=FRONT_DOOR))
        with pytest.raises(CommandError) as refused:
            await harness.commands.transfer(rid, transfer_to())
        assert refused.value.code == "not_awaiting"
        assert "awaiting early_help" in refused.value.message
        state = await harness.commands.state(rid)
        assert EventType.TRANSFERRED not in [e.type for e in state.events]
        assert [h.team for h in state.handoffs] == [Team.FRONT_DOOR, Team.EARLY_HELP]

    async def test_after_a_transfer_nothing_else_the_front_door_does_is_taken(self, harness: Harness) -> None:
        now = await harness.env.get_current_time()
        intake = await harness.commands.submit(sample_details("NP-TRANSFER-3"), actor=POLICE, received_at=now)
        rid = intake.state.referral_id
        moved = await harness.commands.transfer(rid, transfer_to("WNC", "West Northamptonshire Council", ""))
        assert moved.state.current is not None and moved.state.current.authority == "WNC"
        for attempt in (
            harness.commands.transfer(rid, transfer_to()),
            harness.commands.decide(rid, DecisionInput(outcome=Outcome.NO_FURTHER_ACTION, actor=FRONT_DOOR)),
            harness.commands.acknowledge(
                rid, AcknowledgeInput(team=Team.EARLY_HELP, record_id="EH-1", actor=EARLY_HELP)
            ),
        ):
            with pytest.raises(CommandError) as refused:
                await attempt
            assert refused.value.code == "not_awaiting"
            assert "awaiting other_authority" in refused.value.message
        # No note: none recorded in the event.
        event = next(e for e in moved.state.events if e.type == EventType.TRANSFERRED)
        assert event.data == {"authority": "WNC", "authority_name": "West Northamptonshire Council"}
        # The front door records the other authority's acknowledgement (given by phone).
        acked = await harness.commands.acknowledge(
            rid,
            AcknowledgeInput(team=Team.OTHER_AUTHORITY, record_id="WNC-7", note="phoned", actor=FRONT_DOOR),
        )
        assert acked.state.status == Status.CLOSED
        assert acked.state.handoffs[-1].closed_by == FRONT_DOOR

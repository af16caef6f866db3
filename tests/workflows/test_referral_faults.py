"""ReferralWorkflow under faults: mail server down, acknowledgement mid-retry, worker away."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio import activity
from temporalio.worker import Worker

from commands import ReferralCommands
from models.enums import EventType, Outcome, Status, Team
from models.payloads import AcknowledgeInput, DecisionInput, HandoffPlan, PlanHandoffInput, ProjectInput
from tests.conftest import EARLY_HELP, FRONT_DOOR, POLICE, sample_details
from tests.workflows.conftest import Harness
from workflows.referral import ReferralWorkflow


async def submitted_to_early_help(h: Harness, police_reference: str) -> str:
    """A referral decided to Early Help at the server's current time; returns its id."""
    now = await h.env.get_current_time()
    intake = await h.commands.submit(sample_details(police_reference), actor=POLICE, received_at=now)
    rid = intake.state.referral_id
    await h.commands.decide(rid, DecisionInput(outcome=Outcome.EARLY_HELP, actor=FRONT_DOOR))
    return rid


@pytest.mark.policy("demo.toml")
class TestMailServerDown:
    """Sends are retried until delivered and recorded once; an acknowledgement cancels a stuck send."""

    async def test_failed_sends_are_retried_and_recorded_once(self, harness: Harness) -> None:
        harness.fakes.failing_sends = 4
        rid = await submitted_to_early_help(harness, "NP-SMTP-RETRY")
        await harness.env.sleep(timedelta(minutes=5))
        state = await harness.commands.state(rid)
        sent = [e for e in state.events if e.type == EventType.EMAIL_SENT and e.team == Team.EARLY_HELP]
        keys = [(e.data["step"], e.data["repeat"]) for e in sent]
        assert harness.fakes.attempts > len(harness.fakes.emails), (
            "no send ever failed: the test proves nothing"
        )
        assert len(keys) == len(set(keys)), "a ladder send was recorded twice"
        current = state.current
        assert current is not None
        assert {(s.step, s.repeat) for s in current.plan} == set(keys), "a ladder send was lost"
        assert current.escalation_level == sum(1 for s in current.plan if s.kind.value == "escalation")

    async def test_acknowledgement_cancels_a_send_waiting_to_retry(self, harness: Harness) -> None:
        harness.fakes.failing_sends = 10**6  # SMTP stays down
        rid = await submitted_to_early_help(harness, "NP-SMTP-DOWN")
        await harness.env.sleep(timedelta(minutes=2))
        assert harness.fakes.of_kind("escalation") == []
        acked = await harness.commands.acknowledge(
            rid, AcknowledgeInput(team=Team.EARLY_HELP, record_id="EH-9", actor=EARLY_HELP)
        )
        assert acked.state.status == Status.CLOSED
        harness.fakes.failing_sends = 0  # the server comes back
        await harness.env.sleep(timedelta(minutes=10))
        assert harness.fakes.of_kind("escalation") == [], "a stale escalation went out after acknowledgement"
        assert harness.fakes.of_kind("reminder") == []
        handle = harness.client.get_workflow_handle_for(ReferralWorkflow.run, f"referral-{rid}")
        final = await handle.result()
        assert final.status == Status.CLOSED


class TestDecisionBeforeTheFrontDoorOpens:
    """A decision sent while the front door's deadline is still being planned is not refused."""

    async def test_the_decision_waits_for_the_hand_off_and_applies(self, harness: Harness) -> None:
        planned = asyncio.Event()

        @activity.defn(name="plan_handoff")
        async def slow_plan(input: PlanHandoffInput) -> HandoffPlan:
            await planned.wait()  # the calendar is slow (a worker busy, a database away)
            return await harness.deadlines.plan_handoff(input)

        queue = f"test-{uuid.uuid4()}"
        commands = ReferralCommands(harness.client, queue)
        worker = Worker(
            harness.client,
            task_queue=queue,
            workflows=[ReferralWorkflow],
            activities=[slow_plan, harness.fakes.send_email, harness.fakes.project_referral],
        )
        async with worker:
            now = await harness.env.get_current_time()
            intake = await commands.submit(sample_details("NP-EARLY-DECISION"), actor=POLICE, received_at=now)
            rid = intake.state.referral_id
            assert intake.state.handoffs == [], "the hand-off opened before the test could decide early"
            deciding = asyncio.ensure_future(
                commands.decide(rid, DecisionInput(outcome=Outcome.NO_FURTHER_ACTION, actor=FRONT_DOOR))
            )
            await asyncio.sleep(1.0)
            assert not deciding.done(), "the decision was answered before its hand-off existed"

            planned.set()
            decided = await asyncio.wait_for(deciding, timeout=30)

        assert decided.state.outcome == Outcome.NO_FURTHER_ACTION
        (front_door,) = decided.state.handoffs
        assert front_door.team == Team.FRONT_DOOR and front_door.result == Outcome.NO_FURTHER_ACTION.value


class TestLocalTryFails:
    """A projection whose local try fails (the database away) goes to the server and still lands."""

    async def test_the_projection_is_handed_to_the_server_and_applied_once_back(
        self, harness: Harness
    ) -> None:
        failures = {"left": 3}  # every attempt of the local try (LOCAL_RETRY) fails
        projections = harness.fakes.projections

        @activity.defn(name="project_referral")
        async def flaky_projection(input: ProjectInput) -> None:
            if failures["left"] > 0:
                failures["left"] -= 1
                raise ConnectionRefusedError("database unreachable (fake)")
            projections.append(input)

        queue = f"test-{uuid.uuid4()}"
        worker = Worker(
            harness.client,
            task_queue=queue,
            workflows=[ReferralWorkflow],
            activities=[harness.deadlines.plan_handoff, harness.fakes.send_email, flaky_projection],
        )
        commands = ReferralCommands(harness.client, queue)
        async with worker:
            now = await harness.env.get_current_time()
            intake = await commands.submit(sample_details("NP-LOCAL-FAILS"), actor=POLICE, received_at=now)
            rid = intake.state.referral_id
            decided = await commands.decide(rid, DecisionInput(outcome=Outcome.EARLY_HELP, actor=FRONT_DOOR))
            # Closed, not left open: its ladder's timers would fire during later tests' skips.
            await commands.acknowledge(
                rid, AcknowledgeInput(team=Team.EARLY_HELP, record_id="EH-LOCAL", actor=EARLY_HELP)
            )
            handle = harness.client.get_workflow_handle(f"referral-{rid}")
            await handle.result()
            history = await handle.fetch_history()

        assert failures["left"] == 0, "the local try never failed: the test proves nothing"
        assert decided.projected, "the decision is listed, through the server's activity"
        scheduled = [
            e.activity_task_scheduled_event_attributes.activity_type.name
            for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")
        ]
        assert "project_referral" in scheduled, "the failed local try was not handed to the server"
        mine = [p for p in projections if p.state.referral_id == rid]
        seqs = [e.seq for p in mine for e in p.state.events]
        assert seqs == sorted(set(seqs)), "an event was projected twice or out of order"
        assert mine[-1].state.version >= decided.state.version

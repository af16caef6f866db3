"""Notify's delivery receipts, signalled to the workflow: recorded once; a bounce goes to the fallback."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from commands import ReferralCommands
from models import identity
from models.enums import EventType, MessageKind, Outcome
from models.notify_payloads import DeliveryStatus, DeliveryStatusInput
from models.payloads import DecisionInput, EmailInput, ReferralEvent, ReferralState
from tests.conftest import FRONT_DOOR, POLICE, sample_details
from tests.workflows.conftest import FakeSideEffects, Harness, time_skipping_server
from tests.workflows.test_referral_delivery_failure import MASH_MANAGER, PPU, REFERRER, policy_with_fallback
from web.chronology import describe
from workflows.referral import ReferralWorkflow


@pytest_asyncio.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this module's own: its tests leave referrals open with ladder
    timers pending (see conftest's `env`)."""
    async with time_skipping_server() as environment:
        yield environment


@pytest_asyncio.fixture
async def receipts(env: WorkflowEnvironment) -> AsyncIterator[Harness]:
    """A worker whose policy names a fallback mailbox; every email is taken by the (fake) channel."""
    queue = f"test-{uuid.uuid4()}"
    h = Harness(
        env.client, ReferralCommands(env.client, queue), FakeSideEffects(), env, queue, policy_with_fallback()
    )
    async with h.worker():
        yield h


def receipt(email: EmailInput, status: DeliveryStatus, recipient: str = REFERRER) -> DeliveryStatusInput:
    """What the callback endpoint signals for one recipient of `email`."""
    return DeliveryStatusInput(
        key=email.key,
        handoff_seq=email.handoff_seq,
        kind=email.kind,
        step=email.step,
        repeat=email.repeat,
        recipient=recipient,
        status=status,
        notification_id=str(uuid.uuid4()),
    )


async def until(h: Harness, rid: str, done: Callable[[ReferralState], bool]) -> ReferralState:
    """The workflow's state once `done` holds (signals are handled asynchronously)."""
    for _ in range(100):
        state = await h.commands.state(rid)
        if done(state):
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached: {[e.type.value for e in state.events]}")


def statuses(state: ReferralState) -> list[str]:
    """The status of every delivery_status event, in order."""
    return [str(e.data["status"]) for e in state.events if e.type == EventType.DELIVERY_STATUS]


class TestDeliveryStatus:
    """Each receipt is an event of the chronology; a permanent failure sends the fallback copy once."""

    async def test_receipts_recorded_once_and_bounce_falls_back(self, receipts: Harness) -> None:
        h = receipts
        now = await h.env.get_current_time()
        intake = await h.commands.submit(sample_details("NP-RECEIPTS"), actor=POLICE, received_at=now)
        rid = intake.state.referral_id
        await h.commands.decide(rid, DecisionInput(outcome=Outcome.EARLY_HELP, actor=FRONT_DOOR))
        for _ in range(100):
            if h.fakes.of_kind("outcome"):
                break
            await asyncio.sleep(0.05)
        (outcome,) = [s.email for s in h.fakes.of_kind("outcome")]
        handle = h.client.get_workflow_handle(identity.workflow_id(rid))

        delivered = receipt(outcome, "delivered")
        await handle.signal(ReferralWorkflow.delivery_status, delivered)
        await handle.signal(ReferralWorkflow.delivery_status, delivered)  # Notify calling back twice
        for status in ("temporary-failure", "technical-failure"):
            await handle.signal(ReferralWorkflow.delivery_status, receipt(outcome, status))  # type: ignore[arg-type]
        state = await until(h, rid, lambda s: len(statuses(s)) >= 3)
        assert statuses(state) == ["delivered", "temporary-failure", "technical-failure"]
        first = next(e for e in state.events if e.type == EventType.DELIVERY_STATUS)
        assert first.handoff_seq == 1 and first.data["to"] == [REFERRER] and first.data["kind"] == "outcome"
        assert not state.referrer_undeliverable

        bounced = receipt(outcome, "permanent-failure")
        await handle.signal(ReferralWorkflow.delivery_status, bounced)
        await handle.signal(ReferralWorkflow.delivery_status, bounced)
        state = await until(
            h, rid, lambda s: any(e.type == EventType.EMAIL_SENT and e.data.get("copy") for e in s.events)
        )
        assert state.referrer_undeliverable
        bounce = [e for e in state.events if e.type == EventType.DELIVERY_STATUS][-1]
        assert bounce.data["status"] == "permanent-failure" and bounce.data["fallback"] == [MASH_MANAGER, PPU]
        copies = [s.email for s in h.fakes.emails if s.email.undelivered_to]
        (copy,) = copies
        assert copy.key == f"{outcome.key}:bounce1" and copy.kind == MessageKind.OUTCOME
        assert copy.recipients == [MASH_MANAGER, PPU] and copy.undelivered_to == [REFERRER]

        # A bounce of the copy itself is recorded, never copied again.
        await handle.signal(
            ReferralWorkflow.delivery_status,
            receipt(copy, "permanent-failure", MASH_MANAGER).model_copy(update={"fallback_copy": True}),
        )
        state = await until(h, rid, lambda s: len(statuses(s)) == 5)
        assert len([s for s in h.fakes.emails if s.email.undelivered_to]) == 1
        assert statuses(state).count("permanent-failure") == 2

    async def test_described_in_words(self, receipts: Harness) -> None:
        event = ReferralEvent(
            seq=9,
            type=EventType.DELIVERY_STATUS,
            at=await receipts.env.get_current_time(),
            handoff_seq=1,
            data={
                "kind": "outcome",
                "step": 0,
                "repeat": 0,
                "to": [REFERRER],
                "status": "permanent-failure",
                "notification_id": "n-1",
                "fallback": [MASH_MANAGER, PPU],
            },
        )
        entry = describe(event, lambda team: team or "", lambda at: at.isoformat())
        assert entry.what == "Email bounced (permanent failure): outcome"
        assert entry.recipients == [REFERRER]
        assert f"Sent instead to {MASH_MANAGER}, {PPU}" in entry.details

"""Notify's receipt of an outcome email after the referral has closed: the bounce still falls back.

With GOV.UK Notify a message is accepted first and delivered (or bounced) later. A no-further-action
referral closes once its outcome email is accepted, so the workflow, its status already closed,
waits (bounded) for that email's receipt before it finishes: a bounce then sends the fallback copy.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from commands import CommandError, ReferralCommands
from models import identity
from models.enums import EventType, Outcome, Status
from models.payloads import DecisionInput, EmailInput, EmailResult, ReferralState
from tests.conftest import FRONT_DOOR, POLICE, sample_details
from tests.workflows.conftest import FakeSideEffects, Harness, time_skipping_server
from tests.workflows.test_referral_delivery_failure import MASH_MANAGER, PPU, REFERRER, policy_with_fallback
from tests.workflows.test_referral_delivery_status import receipt
from workflows.referral import ReferralWorkflow
from workflows.referral_emails import RECEIPT_WAIT


@pytest_asyncio.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """A server of this module's own: one test skips the days a receipt may take."""
    async with time_skipping_server() as environment:
        yield environment


class NotifyLikeChannel(FakeSideEffects):
    """Every email is accepted with receipts to follow, as GOV.UK Notify accepts them."""

    @activity.defn(name="send_email")
    async def send_email(self, input: EmailInput) -> EmailResult:
        """Accepted; the delivery receipt comes later."""
        result = await super().send_email(input)
        return result.model_copy(update={"receipts": True})


@pytest_asyncio.fixture
async def notify(env: WorkflowEnvironment) -> AsyncIterator[Harness]:
    """A worker whose policy names a fallback mailbox and whose channel sends receipts."""
    queue = f"test-{uuid.uuid4()}"
    fakes = NotifyLikeChannel()
    h = Harness(env.client, ReferralCommands(env.client, queue), fakes, env, queue, policy_with_fallback())
    async with h.worker():
        yield h


async def closed_without_action(h: Harness, police_reference: str) -> tuple[str, EmailInput]:
    """A referral decided no further action: closed, and its outcome email accepted."""
    now = await h.env.get_current_time()
    intake = await h.commands.submit(sample_details(police_reference), actor=POLICE, received_at=now)
    rid = intake.state.referral_id
    decided = await h.commands.decide(rid, DecisionInput(outcome=Outcome.NO_FURTHER_ACTION, actor=FRONT_DOOR))
    assert decided.state.status == Status.CLOSED
    (outcome,) = [s.email for s in h.fakes.of_kind("outcome")]
    return rid, outcome


async def running(h: Harness, rid: str) -> bool:
    described = await h.client.get_workflow_handle(identity.workflow_id(rid)).describe()
    return described.status == WorkflowExecutionStatus.RUNNING


class TestLateReceipts:
    """A closed referral's workflow stays for its outcome emails' receipts, then finishes."""

    async def test_a_bounce_after_the_close_sends_the_fallback_copy(self, notify: Harness) -> None:
        h = notify
        rid, outcome = await closed_without_action(h, "NP-LATE-BOUNCE")
        await asyncio.sleep(0.5)
        assert await running(h, rid), "closed, but waiting for the outcome email's receipt"
        # Commands meanwhile are refused as for any closed referral, not as "not awaiting".
        with pytest.raises(CommandError) as refused:
            await h.commands.decide(rid, DecisionInput(outcome=Outcome.EARLY_HELP, actor=FRONT_DOOR))
        assert refused.value.code == "closed"
        handle = h.client.get_workflow_handle(identity.workflow_id(rid), result_type=ReferralState)
        await handle.signal(ReferralWorkflow.delivery_status, receipt(outcome, "permanent-failure"))
        state: ReferralState = await asyncio.wait_for(handle.result(), 30)
        assert state.status == Status.CLOSED
        (copy,) = [s.email for s in h.fakes.emails if s.email.undelivered_to]
        assert copy.key == f"{outcome.key}:bounce1"
        assert copy.recipients == [MASH_MANAGER, PPU] and copy.undelivered_to == [REFERRER]
        bounce = next(e for e in state.events if e.type == EventType.DELIVERY_STATUS)
        assert bounce.data["fallback"] == [MASH_MANAGER, PPU]
        assert state.referrer_undeliverable
        # The chronology's last projection holds the bounce and the copy.
        projected = [e.type for p in h.fakes.projections for e in p.state.events]
        assert EventType.DELIVERY_STATUS in projected
        assert projected.count(EventType.EMAIL_SENT) == 2

    async def test_a_delivered_receipt_lets_it_finish(self, notify: Harness) -> None:
        h = notify
        rid, outcome = await closed_without_action(h, "NP-LATE-DELIVERED")
        handle = h.client.get_workflow_handle(identity.workflow_id(rid), result_type=ReferralState)
        await handle.signal(ReferralWorkflow.delivery_status, receipt(outcome, "delivered"))
        state: ReferralState = await asyncio.wait_for(handle.result(), 30)
        assert [e.data["status"] for e in state.events if e.type == EventType.DELIVERY_STATUS] == [
            "delivered"
        ]
        assert not [s for s in h.fakes.emails if s.email.undelivered_to]

    async def test_without_a_receipt_it_finishes_after_the_wait(self, notify: Harness) -> None:
        h = notify
        rid, _ = await closed_without_action(h, "NP-LATE-SILENT")
        handle = h.client.get_workflow_handle(identity.workflow_id(rid), result_type=ReferralState)
        await asyncio.sleep(0.5)
        await h.env.sleep(RECEIPT_WAIT - timedelta(hours=1))
        assert await running(h, rid), "still waiting an hour before the wait ends"
        await h.env.sleep(timedelta(hours=2))
        state: ReferralState = await asyncio.wait_for(handle.result(), 30)
        assert state.status == Status.CLOSED
        assert len(h.fakes.emails) == 1, "nothing sent after the outcome"

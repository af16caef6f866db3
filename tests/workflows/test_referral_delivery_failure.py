"""A permanently rejected email is recorded and sent once to the fallback; the ladder goes on."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from activities.deadlines import DeadlineActivities
from commands import ReferralCommands
from models.enums import EventType, Outcome, Team
from models.payloads import AcknowledgeInput, DecisionInput, ReferralState
from models.policy import default_policy_text, parse_policy
from tests.conftest import EARLY_HELP, FRONT_DOOR, POLICE, sample_details
from tests.workflows.conftest import FakeSideEffects, Harness

REFERRER = "a.example@police.example"
PPU = "ppu@police.example"
EH_MANAGER = "earlyhelp-manager@council.example"
MASH_MANAGER = "mash-manager@council.example"


def policy_with_fallback() -> DeadlineActivities:
    """The built-in policy with the force's public protection unit as fallback mailbox."""
    text = default_policy_text()
    commented = f'# fallback_email = "{PPU}"'
    assert commented in text
    return DeadlineActivities(parse_policy(text.replace(commented, commented[2:]), "fallback.toml"))


@pytest_asyncio.fixture
async def fallback(env: WorkflowEnvironment) -> AsyncIterator[Harness]:
    """A worker whose policy names a fallback mailbox and whose mail server refuses the referrer."""
    queue = f"test-{uuid.uuid4()}"
    fakes = FakeSideEffects(rejecting=frozenset({REFERRER}))
    h = Harness(env.client, ReferralCommands(env.client, queue), fakes, env, queue, policy_with_fallback())
    async with h.worker():
        yield h


def failures(state: ReferralState) -> list[dict[str, str | int | list[str] | None]]:
    """Data of every delivery_failed event."""
    return [e.data for e in state.events if e.type == EventType.DELIVERY_FAILED]


class TestRejectedEscalation:
    """The referrer's address bounces: the manager and the PPU are told, once per message."""

    async def test_fallback_once_per_message_and_ladder_continues(
        self, fallback: Harness, received_at: datetime
    ) -> None:
        h = fallback
        now = await h.env.get_current_time()
        intake = await h.commands.submit(sample_details("NP-BOUNCE"), actor=POLICE, received_at=now)
        rid = intake.state.referral_id
        decided = await h.commands.decide(rid, DecisionInput(outcome=Outcome.EARLY_HELP, actor=FRONT_DOOR))
        handoff = decided.state.current
        assert handoff is not None and handoff.fallback == [EH_MANAGER, PPU]
        # The referrer's copy of the outcome bounced already (the outcome goes to the referrer).
        # Between two sends: an acknowledgement racing a send's cancellation wedges the
        # time-skipping server (ACTIVITY_UNKNOWN) for every later test of the session.
        until = handoff.due_at + timedelta(days=4, hours=1)
        await h.env.sleep(until - await h.env.get_current_time())

        state = await h.commands.state(rid)
        escalations = [s.email for s in h.fakes.of_kind("escalation") if not s.email.undelivered_to]
        assert len(escalations) >= 2, "the ladder went on after the first bounce"
        copies = [s.email for s in h.fakes.emails if s.email.undelivered_to]
        keys = [c.key for c in copies]
        assert len(keys) == len(set(keys)), "each fallback copy sent exactly once"
        for original in escalations:
            (copy,) = [c for c in copies if c.key == f"{original.key}:fallback"]
            assert copy.recipients == [EH_MANAGER, PPU] and copy.undelivered_to == [REFERRER]
            assert copy.kind == original.kind and copy.step == original.step
        escalation_failures = [d for d in failures(state) if d["kind"] == "escalation"]
        assert len(escalation_failures) == len(escalations)
        assert all(
            d["to"] == [REFERRER] and d["reply_code"] == 550 and d["fallback"] == [EH_MANAGER, PPU]
            for d in escalation_failures
        )
        assert state.referrer_undeliverable
        assert state.current is not None and state.current.escalation_level == len(escalations)
        assert h.fakes.projections[-1].state.referrer_undeliverable

        acked = await h.commands.acknowledge(
            rid, AcknowledgeInput(team=Team.EARLY_HELP, record_id="EH-1", actor=EARLY_HELP)
        )
        await h.client.get_workflow_handle(f"referral-{rid}").result()
        assert acked.state.referrer_undeliverable

    async def test_rejected_fallback_is_recorded_and_nothing_more(
        self, fallback: Harness, received_at: datetime
    ) -> None:
        h = fallback
        h.fakes.rejecting = frozenset({REFERRER, PPU})
        intake = await h.commands.submit(sample_details("NP-BOUNCE-2"), actor=POLICE, received_at=received_at)
        rid = intake.state.referral_id
        await h.commands.decide(rid, DecisionInput(outcome=Outcome.NO_FURTHER_ACTION, actor=FRONT_DOOR))
        state: ReferralState = await h.client.get_workflow_handle(
            f"referral-{rid}", result_type=ReferralState
        ).result()

        outcome = [s.email for s in h.fakes.of_kind("outcome")]
        assert [(m.recipients, m.undelivered_to) for m in outcome] == [
            ([REFERRER], []),
            ([MASH_MANAGER, PPU], [REFERRER]),
        ]
        assert [(d["to"], d.get("copy")) for d in failures(state)] == [
            ([REFERRER], None),
            ([PPU], "fallback"),
        ]
        types = [e.type for e in state.events]
        assert types[-1] == EventType.CLOSED
        assert types.count(EventType.DELIVERY_FAILED) == 2
        assert state.referrer_undeliverable

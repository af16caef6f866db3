"""Record histories of real ReferralWorkflow runs into tests/histories/ for the replay test.

Run from the repository root: `.venv/bin/python -m scripts.record_histories [NAME ...]`.
It uses the time-skipping test server that pip installed (nothing is downloaded), the real
calendar activity and the same fake email and projection activities as the workflow tests,
with the plain pydantic data converter: histories hold only the fake sample referral.

Re-record only on purpose: a history recorded by older workflow code is what proves that
the current code still replays it (CI replays every file).
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.deadlines import DeadlineActivities
from commands import ReferralCommands
from models import identity
from models.enums import DeclineReason, EventType, Outcome, Role, Team
from models.payloads import (
    AcknowledgeInput,
    Actor,
    DecisionInput,
    DeclineInput,
    ReferralState,
    TransferInput,
)
from models.policy import Policy, default_policy_text, load_policy, parse_policy
from tests.conftest import EARLY_HELP, FRONT_DOOR, POLICE, ROOT, TEMPORAL_TEST_SERVER, sample_details
from tests.workflows.conftest import FakeSideEffects, Harness

HISTORIES = ROOT / "tests" / "histories"
SOCIAL_CARE = Actor(user_id="u-sc", name="SC Worker", role=Role.SOCIAL_CARE)

Scenario = Callable[[Harness], Awaitable[str]]


def _harness(env: WorkflowEnvironment, policy: Policy, fakes: FakeSideEffects) -> Harness:
    queue = f"record-{uuid.uuid4()}"
    return Harness(
        env.client, ReferralCommands(env.client, queue), fakes, env, queue, DeadlineActivities(policy)
    )


def _handle(client: Client, referral_id: str) -> WorkflowHandle[object, ReferralState]:
    return client.get_workflow_handle(identity.workflow_id(referral_id), result_type=ReferralState)


async def _finish(h: Harness, referral_id: str) -> str:
    """Wait for the workflow to close; its id (the history is fetched by the caller)."""
    await _handle(h.client, referral_id).result()
    return referral_id


async def no_further_action(h: Harness) -> str:
    """The front door decides no further action; the referral closes after the outcome email."""
    now = await h.env.get_current_time()
    intake = await h.commands.submit(sample_details("NP-REC-NFA"), actor=POLICE, received_at=now)
    rid = intake.state.referral_id
    await h.commands.decide(rid, DecisionInput(outcome=Outcome.NO_FURTHER_ACTION, actor=FRONT_DOOR))
    return await _finish(h, rid)


async def early_help_acknowledged(h: Harness) -> str:
    """Early Help is reminded, then acknowledges with its record id."""
    now = await h.env.get_current_time()
    intake = await h.commands.submit(sample_details("NP-REC-EH"), actor=POLICE, received_at=now)
    rid = intake.state.referral_id
    decided = await h.commands.decide(rid, DecisionInput(outcome=Outcome.EARLY_HELP, actor=FRONT_DOOR))
    assert decided.state.current is not None
    reminder = min(s.at for s in decided.state.current.plan)
    await h.env.sleep(reminder - await h.env.get_current_time() + timedelta(minutes=1))
    assert h.fakes.of_kind("reminder"), "the reminder went out"
    ack = AcknowledgeInput(team=Team.EARLY_HELP, record_id="EH-000123", actor=EARLY_HELP)
    await h.commands.acknowledge(rid, ack)
    return await _finish(h, rid)


async def early_help_declined(h: Harness) -> str:
    """Early Help declines (consent), the front door decides again: social care acknowledges."""
    now = await h.env.get_current_time()
    intake = await h.commands.submit(sample_details("NP-REC-DECLINE"), actor=POLICE, received_at=now)
    rid = intake.state.referral_id
    await h.commands.decide(rid, DecisionInput(outcome=Outcome.EARLY_HELP, actor=FRONT_DOOR))
    await h.commands.decline(
        rid, DeclineInput(reason=DeclineReason.CONSENT_DECLINED, note="family declined", actor=EARLY_HELP)
    )
    await h.commands.decide(rid, DecisionInput(outcome=Outcome.SOCIAL_CARE, actor=FRONT_DOOR))
    ack = AcknowledgeInput(team=Team.SOCIAL_CARE, record_id="SC-000456", actor=SOCIAL_CARE)
    await h.commands.acknowledge(rid, ack)
    return await _finish(h, rid)


async def escalation_ladder(h: Harness) -> str:
    """Early Help never answers: reminder, escalation, repeats over days; then acknowledges."""
    now = await h.env.get_current_time()
    intake = await h.commands.submit(sample_details("NP-REC-LADDER"), actor=POLICE, received_at=now)
    rid = intake.state.referral_id
    decided = await h.commands.decide(rid, DecisionInput(outcome=Outcome.EARLY_HELP, actor=FRONT_DOOR))
    assert decided.state.current is not None
    # Two hours past a ladder instant: the time-skipping server strands a workflow task that
    # cancels a timer fired while the task was with the worker (temporalio/sdk-java#3088).
    until = decided.state.current.due_at + timedelta(days=6, hours=2)
    await h.env.sleep(until - await h.env.get_current_time())
    repeats = [s.email.repeat for s in h.fakes.of_kind("escalation")]
    assert max(repeats) >= 2, f"repeats went out: {repeats}"
    ack = AcknowledgeInput(team=Team.EARLY_HELP, record_id="EH-000789", actor=EARLY_HELP)
    await h.commands.acknowledge(rid, ack)
    return await _finish(h, rid)


async def collapsed_repeats(h: Harness) -> str:
    """Demo policy (seconds); SMTP down past several repeats, so the missed ones collapse into one."""
    now = await h.env.get_current_time()
    intake = await h.commands.submit(sample_details("NP-REC-COLLAPSE"), actor=POLICE, received_at=now)
    rid = intake.state.referral_id
    await h.commands.decide(rid, DecisionInput(outcome=Outcome.EARLY_HELP, actor=FRONT_DOOR))
    # Seven failed attempts back off 1, 2, 4 ... 64 s: the reminder (due - 20 s) is stuck for
    # about two minutes, past the escalation at "due" and repeats 0-2 of the next step
    # (due + 30 s, every 30 s), which then go out together.
    h.fakes.failing_sends = 7
    await h.env.sleep(timedelta(minutes=6))
    state = await h.commands.state(rid)
    assert EventType.STEPS_COLLAPSED in [e.type for e in state.events], "missed repeats collapsed"
    ack = AcknowledgeInput(team=Team.EARLY_HELP, record_id="EH-000321", actor=EARLY_HELP)
    await h.commands.acknowledge(rid, ack)
    return await _finish(h, rid)


async def duplicate_submission(h: Harness) -> str:
    """The same referral submitted twice lands on one workflow; then no further action."""
    now = await h.env.get_current_time()
    details = sample_details("NP-REC-DUP")
    first = await h.commands.submit(details, actor=POLICE, received_at=now)
    second = await h.commands.submit(details, actor=POLICE, received_at=now)
    assert first.created and not second.created
    rid = first.state.referral_id
    await h.commands.decide(rid, DecisionInput(outcome=Outcome.NO_FURTHER_ACTION, actor=FRONT_DOOR))
    return await _finish(h, rid)


async def delivery_fallback(h: Harness) -> str:
    """The referrer's address bounces (550): delivery_failed, fallback copies; then acknowledged.

    Recorded after the "delivery-fallback" patch: the other histories predate it.
    """
    h.fakes.rejecting = frozenset({"a.example@police.example"})
    now = await h.env.get_current_time()
    intake = await h.commands.submit(sample_details("NP-REC-BOUNCE"), actor=POLICE, received_at=now)
    rid = intake.state.referral_id
    decided = await h.commands.decide(rid, DecisionInput(outcome=Outcome.EARLY_HELP, actor=FRONT_DOOR))
    assert decided.state.current is not None
    # Between ladder sends: an acknowledgement racing a send's cancellation wedges the
    # time-skipping test server (ACTIVITY_UNKNOWN), whatever the workflow does.
    until = decided.state.current.due_at + timedelta(days=2, hours=1)
    await h.env.sleep(until - await h.env.get_current_time())
    state = await h.commands.state(rid)
    assert state.referrer_undeliverable and EventType.DELIVERY_FAILED in [e.type for e in state.events]
    ack = AcknowledgeInput(team=Team.EARLY_HELP, record_id="EH-000555", actor=EARLY_HELP)
    await h.commands.acknowledge(rid, ack)
    return await _finish(h, rid)


async def transferred(h: Harness) -> str:
    """The front door transfers to another authority, which is reminded, escalated to, then
    acknowledges through its link. Recorded after transfers were added."""
    now = await h.env.get_current_time()
    intake = await h.commands.submit(sample_details("NP-REC-TRANSFER"), actor=POLICE, received_at=now)
    rid = intake.state.referral_id
    transfer = TransferInput(
        authority="NNC", authority_name="North Northamptonshire Council", note="moved", actor=FRONT_DOOR
    )
    moved = await h.commands.transfer(rid, transfer)
    assert moved.state.current is not None and moved.state.current.team == Team.OTHER_AUTHORITY
    until = moved.state.current.due_at + timedelta(hours=1)
    await h.env.sleep(until - await h.env.get_current_time())
    by_link = Actor(user_id=f"ack-link:{rid}:2", name="emailed link", role=Role.FRONT_DOOR)
    ack = AcknowledgeInput(team=Team.OTHER_AUTHORITY, record_id="NNC-000777", actor=by_link)
    await h.commands.acknowledge(rid, ack)
    return await _finish(h, rid)


def _default() -> Policy:
    return load_policy()


def _demo() -> Policy:
    return load_policy(ROOT / "policies" / "demo.toml")


def _england() -> Policy:
    return load_policy(ROOT / "policies" / "england.toml")


def _with_fallback() -> Policy:
    text = default_policy_text()
    return parse_policy(text.replace('# fallback_email = "', 'fallback_email = "'), "fallback.toml")


#: name -> (scenario, its policy)
SCENARIOS: dict[str, tuple[Scenario, Callable[[], Policy]]] = {
    "no_further_action": (no_further_action, _default),
    "early_help_acknowledged": (early_help_acknowledged, _default),
    "early_help_declined": (early_help_declined, _default),
    "escalation_ladder": (escalation_ladder, _default),
    "collapsed_repeats": (collapsed_repeats, _demo),
    "duplicate_submission": (duplicate_submission, _default),
    "delivery_fallback": (delivery_fallback, _with_fallback),
    "transferred": (transferred, _england),
    # Recorded after the "local-activities" patch: planning and projections as markers.
    "local_escalation_ladder": (escalation_ladder, _default),
    "local_early_help_declined": (early_help_declined, _default),
}


async def record(names: list[str]) -> dict[str, WorkflowHistory]:
    """Run each named scenario on a fresh time-skipping server; its history by name."""
    histories = {}
    for name in names:
        scenario, policy_of = SCENARIOS[name]
        policy = policy_of()
        # A fresh server per scenario: a long time skip after other workflows closed on the
        # same test server has been seen to wedge it ("invalid history builder state").
        async with await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=str(TEMPORAL_TEST_SERVER), data_converter=pydantic_data_converter
        ) as env:
            h = _harness(env, policy, FakeSideEffects())
            async with h.worker():
                rid = await asyncio.wait_for(scenario(h), timeout=120)
            histories[name] = await _handle(env.client, rid).fetch_history()
    return histories


def write(histories: dict[str, WorkflowHistory], out: Path = HISTORIES) -> None:
    """Write each history as `<name>.json`, indented so a re-recording reads as a diff."""
    out.mkdir(parents=True, exist_ok=True)
    for name, history in histories.items():
        path = out / f"{name}.json"
        path.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n", encoding="utf-8")
        print(f"{path.relative_to(ROOT)}: {len(history.events)} events")


def main() -> None:
    """Record the scenarios named on the command line (all by default)."""
    names = sys.argv[1:] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        sys.exit(f"unknown scenario(s): {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
    write(asyncio.run(record(names)))


if __name__ == "__main__":
    main()

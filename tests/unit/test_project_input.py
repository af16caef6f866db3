"""The projection's argument: frozen when the workflow schedules it, as the converter writes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio.converter import DataConverter

from codec import data_converter
from models.enums import EventType, Outcome, Status, StepKind, Team
from models.payloads import (
    HandoffState,
    PlannedSend,
    ProjectInput,
    ReferralEvent,
    ReferralInput,
    ReferralState,
)
from tests.conftest import FRONT_DOOR, POLICE, sample_details

AT = datetime(2026, 12, 4, 16, 30, tzinfo=UTC)


def _state() -> ReferralState:
    details = sample_details()
    state = ReferralState.received(
        ReferralInput(
            referral_id="r-1",
            reference="REF-0001",
            fingerprint="f" * 64,
            received_at=AT,
            submitted_by=POLICE,
            details=details,
        )
    )
    state.status = Status.AWAITING_ACKNOWLEDGEMENT
    state.outcome = Outcome.EARLY_HELP
    sends = [
        PlannedSend(
            step=step,
            repeat=repeat,
            at=AT + timedelta(days=step),
            kind=StepKind.REMINDER,
            recipients=["eh@council.example"],
        )
        for step in range(3)
        for repeat in range(2)
    ]
    state.handoffs.append(
        HandoffState(
            seq=2,
            team=Team.EARLY_HELP,
            team_name="Early Help — Tîm Cymorth Cynnar",
            opened_at=AT,
            due_at=AT + timedelta(days=3),
            plan=sends,
            fallback=["duty@council.example"],
            lookup_every=timedelta(hours=4),
            done=[(0, 0)],
        )
    )
    state.events.extend(
        ReferralEvent(
            seq=seq, type=kind, at=AT, actor=FRONT_DOOR, handoff_seq=2, data={"recipients": ["a@b.example"]}
        )
        for seq, kind in enumerate((EventType.RECEIVED, EventType.DECIDED, EventType.HANDOFF_OPENED), start=1)
    )
    state.version = 3
    return state


def test_frozen_is_the_model_with_only_the_new_events() -> None:
    state = _state()
    new = state.events[1:]
    frozen = ProjectInput.frozen(state, new, POLICE, sample_details())

    back = ProjectInput.model_validate(frozen)
    assert back.state == state.model_copy(update={"events": new})
    assert [e.seq for e in back.state.events] == [2, 3]
    assert back.submitted_by == POLICE
    assert back.details == sample_details()
    # The workflow's own state keeps every event.
    assert [e.seq for e in state.events] == [1, 2, 3]


def test_later_changes_to_the_state_do_not_reach_the_frozen_argument() -> None:
    state = _state()
    frozen = ProjectInput.frozen(state, list(state.events), POLICE, sample_details())
    before = ProjectInput.model_validate(frozen)

    # What the workflow does after scheduling: close the hand-off, mark a send, add an event.
    handoff = state.handoffs[-1]
    handoff.closed_at = AT + timedelta(hours=1)
    handoff.record_id = "EH-1"
    handoff.done.append((1, 0))
    handoff.plan[0].recipients.append("late@council.example")
    state.events[0].data["recipients"].append("late@police.example")  # type: ignore[union-attr]
    state.events.append(ReferralEvent(seq=4, type=EventType.ACKNOWLEDGED, at=AT))
    state.status = Status.CLOSED
    state.version = 4

    assert ProjectInput.model_validate(frozen) == before
    assert before.state.status == Status.AWAITING_ACKNOWLEDGEMENT
    assert before.state.handoffs[-1].record_id is None
    assert before.state.handoffs[-1].done == [(0, 0)]
    assert before.state.events[0].data["recipients"] == ["a@b.example"]


def test_the_payload_is_the_models_byte_for_byte() -> None:
    state = _state()
    model = ProjectInput(
        state=state.model_copy(update={"events": state.events[2:]}),
        submitted_by=POLICE,
        details=sample_details(),
    )
    frozen = ProjectInput.frozen(state, state.events[2:], POLICE, sample_details())

    plain: DataConverter = data_converter(encryption_key=None, secret="s" * 32)
    [from_model] = plain.payload_converter.to_payloads([model])
    [from_frozen] = plain.payload_converter.to_payloads([frozen])
    assert from_frozen == from_model
    [decoded] = plain.payload_converter.from_payloads([from_frozen], [ProjectInput])
    assert decoded == model

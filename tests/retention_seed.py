"""Referrals for the retention tests, written by the real projection and email activities.

Every piece of personal data below is distinctive, so a test can search a whole read-model row
for it: the child's name (also typed into notes, as workers do), the referrer's email address.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import ActivityEnvironment

from activities.notify import NotifyActivities
from activities.records import RecordActivities
from models.enums import EventType, MessageKind, Outcome, Risk, Status, StepKind, Team
from models.payloads import (
    EmailInput,
    HandoffState,
    PlannedSend,
    ProjectInput,
    ReferralEvent,
    ReferralState,
)
from models.tables import OutboxMessage, Referral
from models.tables import ReferralEvent as EventRow
from tests.conftest import EARLY_HELP, FRONT_DOOR, POLICE, sample_details
from web.links import AckLinks

Sessions = async_sessionmaker[AsyncSession]

REFERRER_EMAIL = "a.example@police.example"
#: Strings that must not survive a purge anywhere in the referral's rows.
PERSONAL = [
    "Zebedee",
    "Quixotic",
    "2015-03-01",
    REFERRER_EMAIL,
    "01604 000000",
    "drug supply",
    "Spoke to mother",
    "family agreed",
]
CLOSED_VERSION = 7


@dataclass(frozen=True)
class Seeded:
    """A referral written to the read model, with what a late projection of it would carry."""

    referral_id: str
    reference: str
    police_reference: str
    state: ReferralState

    def projection(self, version: int) -> ProjectInput:
        """The projection the workflow would send at `version` (no new events)."""
        state = self.state.model_copy(update={"version": version, "events": []})
        return ProjectInput(state=state, submitted_by=POLICE, details=sample_details(self.police_reference))


def _plan(at: datetime, team_email: str) -> list[PlannedSend]:
    return [
        PlannedSend(
            step=0, repeat=0, at=at - timedelta(hours=1), kind=StepKind.REMINDER, recipients=[team_email]
        ),
        PlannedSend(
            step=1, repeat=0, at=at, kind=StepKind.ESCALATION, recipients=[team_email, REFERRER_EMAIL]
        ),
    ]


def _state(n: int, received: datetime, closed: datetime | None) -> ReferralState:
    """Referral number `n`: received, decided (Early Help), escalated, acknowledged, closed at `closed`;
    or, with `closed` None, still awaiting the front door's decision."""
    decided = received + timedelta(hours=3)
    acked = closed or received
    front = HandoffState(
        seq=1,
        team=Team.FRONT_DOOR,
        team_name="Front door (MASH)",
        opened_at=received,
        due_at=received + timedelta(days=1),
        plan=_plan(received + timedelta(days=1), "mash@council.example"),
        closed_at=decided if closed else None,
        result=Outcome.EARLY_HELP.value if closed else None,
        closed_by=FRONT_DOOR if closed else None,
        note="family agreed; Zebedee Quixotic is at Blatherwycke school" if closed else "",
    )
    events = [
        ReferralEvent(seq=1, type=EventType.RECEIVED, at=received, actor=POLICE),
        ReferralEvent(
            seq=2,
            type=EventType.HANDOFF_OPENED,
            at=received,
            handoff_seq=1,
            team=Team.FRONT_DOOR,
            data={"due_at": front.due_at.isoformat(), "team_email": "mash@council.example"},
        ),
    ]
    common: dict[str, Any] = {
        "referral_id": f"r{n:031d}",
        "reference": f"RT-2020-{n:06d}",
        "fingerprint": f"{n:064d}",
        "force": "Northamptonshire Police",
        "police_reference": f"NP-RET-{n:04d}",
        "risk": Risk.GREEN,
        "received_at": received,
    }
    if closed is None:
        return ReferralState(
            **common, status=Status.AWAITING_DECISION, handoffs=[front], events=events, version=2
        )
    early = HandoffState(
        seq=2,
        team=Team.EARLY_HELP,
        team_name="Early Help",
        opened_at=decided,
        due_at=decided + timedelta(days=3),
        plan=_plan(decided + timedelta(days=3), "earlyhelp@council.example"),
        done=[(1, 0)],
        escalation_level=1,
        closed_at=acked,
        result="acknowledged",
        record_id=f"EH-{n}",
        closed_by=EARLY_HELP,
        note="Spoke to mother of Zebedee",
    )
    events += [
        ReferralEvent(
            seq=3,
            type=EventType.DECIDED,
            at=decided,
            actor=FRONT_DOOR,
            handoff_seq=1,
            team=Team.FRONT_DOOR,
            data={"outcome": "early_help", "note": "family agreed; Zebedee is at risk"},
        ),
        ReferralEvent(
            seq=4,
            type=EventType.HANDOFF_OPENED,
            at=decided,
            handoff_seq=2,
            team=Team.EARLY_HELP,
            data={"due_at": early.due_at.isoformat(), "team_email": "earlyhelp@council.example"},
        ),
        ReferralEvent(
            seq=5,
            type=EventType.EMAIL_SENT,
            at=early.due_at,
            handoff_seq=2,
            team=Team.EARLY_HELP,
            data={
                "kind": "escalation",
                "step": 1,
                "repeat": 0,
                "to": ["earlyhelp-manager@council.example", REFERRER_EMAIL],
                "message_id": f"<r{n}:2:1:0@council.example>",
                "status": "sent",
            },
        ),
        ReferralEvent(
            seq=6,
            type=EventType.ACKNOWLEDGED,
            at=acked,
            actor=EARLY_HELP,
            handoff_seq=2,
            team=Team.EARLY_HELP,
            data={"record_id": f"EH-{n}", "note": "Spoke to mother of Zebedee"},
        ),
        ReferralEvent(seq=7, type=EventType.CLOSED, at=acked),
    ]
    return ReferralState(
        **common,
        status=Status.CLOSED,
        outcome=Outcome.EARLY_HELP,
        record_id=f"EH-{n}",
        closed_at=closed,
        handoffs=[front, early],
        events=events,
        version=CLOSED_VERSION,
    )


async def seed(sessions: Sessions, n: int, *, received: datetime, closed: datetime | None) -> Seeded:
    """Project referral `n` as the workflow would, and send its escalation to the dev outbox."""
    state = _state(n, received, closed)
    env = ActivityEnvironment()
    await env.run(
        RecordActivities(sessions).project_referral,
        ProjectInput(state=state, submitted_by=POLICE, details=sample_details(state.police_reference)),
    )
    notify = NotifyActivities(
        sessions,
        links=AckLinks("retention-test-secret", "https://referrals.example"),
        mail_from="r@x.example",
        smtp=None,
    )
    handoff = state.handoffs[-1]
    await env.run(
        notify.send_email,
        EmailInput(
            key=f"{state.referral_id}:{handoff.seq}:1:0",
            referral_id=state.referral_id,
            reference=state.reference,
            kind=MessageKind.ESCALATION,
            handoff_seq=handoff.seq,
            step=1,
            repeat=0,
            recipients=[f"{handoff.team.value}-manager@council.example", REFERRER_EMAIL],
            team=handoff.team,
            team_name=handoff.team_name,
            due_at=handoff.due_at,
        ),
    )
    return Seeded(state.referral_id, state.reference, state.police_reference, state)


def days_ago(days: float, now: datetime | None = None) -> datetime:
    """An instant `days` before `now` (default: the wall clock)."""
    return (now or datetime.now(UTC)) - timedelta(days=days)


async def snapshot(sessions: Sessions, referral_id: str) -> dict[str, Any]:
    """Everything the read model holds for one referral, as plain JSON-able values."""
    async with sessions() as session:
        row = await session.get(Referral, referral_id)
        assert row is not None
        events = list(
            await session.scalars(
                select(EventRow).where(EventRow.referral_id == referral_id).order_by(EventRow.seq)
            )
        )
        outbox = list(
            await session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.referral_id == referral_id)
                .order_by(OutboxMessage.id)
            )
        )
    return {
        "referral": _columns(row),
        "events": [_columns(e) for e in events],
        "outbox": [_columns(m) for m in outbox],
    }


def _columns(obj: Any) -> dict[str, Any]:
    return {c.key: getattr(obj, c.key) for c in obj.__table__.columns}


def personal_left(snap: dict[str, Any]) -> list[str]:
    """The personal strings still present anywhere in a snapshot."""
    text = json.dumps(snap, default=str)
    return [s for s in PERSONAL if s in text]

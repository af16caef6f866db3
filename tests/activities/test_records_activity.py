"""project_referral on SQLite and PostgreSQL: idempotent, ordered, never backwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import ActivityEnvironment

from activities.records import ROW_COLUMNS, RecordActivities, referral_row
from models.enums import EventType, Outcome, Risk, Status, Team
from models.payloads import (
    HandoffState,
    PlannedSend,
    ProjectInput,
    ReferralEvent,
    ReferralState,
)
from models.tables import Referral
from models.tables import ReferralEvent as EventRow
from tests.activities.conftest import REFERENCE, REFERRAL_ID
from tests.conftest import EARLY_HELP, FRONT_DOOR, POLICE, sample_details

Sessions = async_sessionmaker[AsyncSession]

RECEIVED = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # a Wednesday
FRONT_DUE = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
DECIDED = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
EH_DUE = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
ACKED = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)


def front_door(closed: bool) -> HandoffState:
    """The front door's hand-off, open or decided (Early Help)."""
    return HandoffState(
        seq=1,
        team=Team.FRONT_DOOR,
        team_name="Front door (MASH)",
        opened_at=RECEIVED,
        due_at=FRONT_DUE,
        plan=[
            PlannedSend(
                step=0,
                repeat=0,
                at=FRONT_DUE - timedelta(hours=1),
                kind="reminder",
                recipients=["mash@council.example"],
            )
        ],
        closed_at=DECIDED if closed else None,
        result=Outcome.EARLY_HELP.value if closed else None,
        closed_by=FRONT_DOOR if closed else None,
    )


def early_help(closed: bool) -> HandoffState:
    """Early Help's hand-off, open or acknowledged with a record id."""
    return HandoffState(
        seq=2,
        team=Team.EARLY_HELP,
        team_name="Early Help",
        opened_at=DECIDED,
        due_at=EH_DUE,
        plan=[],
        escalation_level=0 if closed else 1,
        closed_at=ACKED if closed else None,
        result="acknowledged" if closed else None,
        record_id="EH-2026-118" if closed else None,
        closed_by=EARLY_HELP if closed else None,
    )


#: The chronology of a referral that is received, passed to Early Help and acknowledged.
EVENTS = [
    ReferralEvent(seq=1, type=EventType.RECEIVED, at=RECEIVED, actor=POLICE),
    ReferralEvent(seq=2, type=EventType.HANDOFF_OPENED, at=RECEIVED, handoff_seq=1, team=Team.FRONT_DOOR),
    ReferralEvent(
        seq=3,
        type=EventType.DECIDED,
        at=DECIDED,
        actor=FRONT_DOOR,
        handoff_seq=1,
        team=Team.FRONT_DOOR,
        data={"outcome": "early_help", "note": "family agreed"},
    ),
    ReferralEvent(seq=4, type=EventType.HANDOFF_OPENED, at=DECIDED, handoff_seq=2, team=Team.EARLY_HELP),
    ReferralEvent(
        seq=5,
        type=EventType.EMAIL_SENT,
        at=EH_DUE,
        handoff_seq=2,
        team=Team.EARLY_HELP,
        data={"kind": "escalation", "to": ["earlyhelp-manager@council.example", "a.example@police.example"]},
    ),
    ReferralEvent(
        seq=6,
        type=EventType.ACKNOWLEDGED,
        at=ACKED,
        actor=EARLY_HELP,
        handoff_seq=2,
        team=Team.EARLY_HELP,
        data={"record_id": "EH-2026-118"},
    ),
    ReferralEvent(seq=7, type=EventType.CLOSED, at=ACKED),
]


def state(version: int, events: list[ReferralEvent]) -> ReferralState:
    """The workflow's state after `version` events (the chronology is dense, so they match)."""
    base: dict[str, Any] = {
        "referral_id": REFERRAL_ID,
        "reference": REFERENCE,
        "fingerprint": "a" * 64,
        "force": "Northamptonshire Police",
        "police_reference": "NP-2018-0501-0193",
        "risk": Risk.GREEN,
        "received_at": RECEIVED,
        "events": events,
        "version": version,
    }
    if version <= 2:
        return ReferralState(**base, status=Status.AWAITING_DECISION, handoffs=[front_door(False)])
    if version <= 5:
        return ReferralState(
            **base,
            status=Status.AWAITING_ACKNOWLEDGEMENT,
            outcome=Outcome.EARLY_HELP,
            handoffs=[front_door(True), early_help(False)],
        )
    return ReferralState(
        **base,
        status=Status.CLOSED,
        outcome=Outcome.EARLY_HELP,
        record_id="EH-2026-118",
        closed_at=ACKED,
        handoffs=[front_door(True), early_help(True)],
    )


def projection(version: int, since: int = 0) -> ProjectInput:
    """What the workflow projects at `version`: its state with the events after `since`."""
    return ProjectInput(
        state=state(version, [e for e in EVENTS if since < e.seq <= version]),
        submitted_by=POLICE,
        details=sample_details(),
    )


async def project(sessions: Sessions, input: ProjectInput) -> None:
    """One run of the activity."""
    await ActivityEnvironment().run(RecordActivities(sessions).project_referral, input)


async def referral_rows(sessions: Sessions) -> list[dict[str, Any]]:
    """Every referral row as a plain dict."""
    async with sessions() as session:
        result = await session.execute(select(Referral.__table__))
        return [dict(row) for row in result.mappings()]


async def event_rows(sessions: Sessions) -> list[dict[str, Any]]:
    """Every event row, in sequence order."""
    async with sessions() as session:
        result = await session.execute(
            select(EventRow.__table__).order_by(EventRow.referral_id, EventRow.seq)
        )
        return [dict(row) for row in result.mappings()]


class TestFirstProjection:
    """The first projection inserts the referral with its details and its first events."""

    async def test_inserts_row_details_and_events(self, sessions: Sessions) -> None:
        await project(sessions, projection(2))

        (row,) = await referral_rows(sessions)
        assert row["id"] == REFERRAL_ID and row["reference"] == REFERENCE
        assert (row["force"], row["police_reference"]) == ("Northamptonshire Police", "NP-2018-0501-0193")
        assert row["status"] == "awaiting_decision"
        assert row["risk"] == "green"
        assert row["awaiting_team"] == "front_door"
        assert row["due_at"] == FRONT_DUE
        assert row["received_at"] == RECEIVED
        assert row["version"] == 2
        assert row["closed_at"] is None and row["outcome"] is None and row["record_id"] is None
        assert row["details"] == sample_details().model_dump(mode="json")
        assert row["details"]["children"][0]["given_name"] == "Zebedee"
        assert row["submitted_by"] == POLICE.model_dump(mode="json")
        assert [h["team"] for h in row["handoffs"]] == ["front_door"]
        assert row["handoffs"][0]["plan"][0]["recipients"] == ["mash@council.example"]

        events = await event_rows(sessions)
        assert [(e["seq"], e["type"]) for e in events] == [(1, "received"), (2, "handoff_opened")]
        assert events[0]["actor"] == POLICE.model_dump(mode="json")
        assert events[0]["at"] == RECEIVED
        assert (events[1]["handoff_seq"], events[1]["team"]) == (1, "front_door")


class TestIdempotentProjection:
    """A retried activity (same input) changes nothing, not even updated_at."""

    async def test_same_input_twice(self, sessions: Sessions) -> None:
        await project(sessions, projection(2))
        before_rows, before_events = await referral_rows(sessions), await event_rows(sessions)

        await project(sessions, projection(2))
        await project(sessions, projection(2))

        assert await referral_rows(sessions) == before_rows
        assert await event_rows(sessions) == before_events
        assert len(before_events) == 2


class TestUpsertColumns:
    """The upsert, built once, updates exactly the columns that follow the workflow's state."""

    def test_row_columns_are_the_projected_ones(self) -> None:
        # A column added to referral_row but not to ROW_COLUMNS would be written once, at the
        # first projection, and never updated again.
        assert tuple(referral_row(state(7, EVENTS))) == ROW_COLUMNS

    async def test_a_newer_version_updates_every_row_column(self, sessions: Sessions) -> None:
        await project(sessions, projection(2))
        await project(sessions, projection(7, since=2))

        (row,) = await referral_rows(sessions)
        expected = referral_row(state(7, EVENTS))
        del expected["updated_at"]  # the activity's own clock
        assert {name: row[name] for name in expected} == expected


class TestNeverBackwards:
    """An older version after a newer one (a late retry) does not move the row back."""

    async def test_older_version_is_ignored(self, sessions: Sessions) -> None:
        await project(sessions, projection(2))
        await project(sessions, projection(5, since=2))
        after_newer = await referral_rows(sessions)
        assert after_newer[0]["version"] == 5
        assert after_newer[0]["awaiting_team"] == "early_help"

        await project(sessions, projection(2))  # the late one

        rows = await referral_rows(sessions)
        assert rows == after_newer
        assert rows[0]["status"] == "awaiting_acknowledgement"
        assert rows[0]["due_at"] == EH_DUE
        assert rows[0]["escalation_level"] == 1
        assert [e["seq"] for e in await event_rows(sessions)] == [1, 2, 3, 4, 5]

    async def test_closed_referral_is_not_reopened(self, sessions: Sessions) -> None:
        await project(sessions, projection(7))
        await project(sessions, projection(5))

        (row,) = await referral_rows(sessions)
        assert row["status"] == "closed" and row["version"] == 7


class TestChronology:
    """Events from successive projections keep one dense sequence per referral."""

    async def test_events_appended_across_calls(self, sessions: Sessions) -> None:
        await project(sessions, projection(2))
        await project(sessions, projection(4, since=2))
        await project(sessions, projection(5, since=4))
        await project(sessions, projection(5, since=4))  # retried
        await project(sessions, projection(7, since=5))

        events = await event_rows(sessions)
        assert [e["seq"] for e in events] == list(range(1, 8))
        assert [e["type"] for e in events] == [e.type.value for e in EVENTS]
        assert events[2]["data"] == {"outcome": "early_help", "note": "family agreed"}
        assert events[4]["data"]["to"] == ["earlyhelp-manager@council.example", "a.example@police.example"]
        assert events[5]["actor"] == EARLY_HELP.model_dump(mode="json")
        assert {e["referral_id"] for e in events} == {REFERRAL_ID}

    async def test_projection_with_no_new_events(self, sessions: Sessions) -> None:
        await project(sessions, projection(2))
        await project(
            sessions, ProjectInput(state=state(3, []), submitted_by=POLICE, details=sample_details())
        )

        (row,) = await referral_rows(sessions)
        assert row["version"] == 3 and row["status"] == "awaiting_acknowledgement"
        assert len(await event_rows(sessions)) == 2


class TestClosed:
    """A closed state: status closed, nobody awaited, no deadline, the outcome kept."""

    async def test_closed_state(self, sessions: Sessions) -> None:
        await project(sessions, projection(2))
        await project(sessions, projection(7, since=2))

        (row,) = await referral_rows(sessions)
        assert row["status"] == "closed"
        assert row["awaiting_team"] is None
        assert row["due_at"] is None
        assert row["escalation_level"] == 0
        assert row["closed_at"] == ACKED
        assert row["outcome"] == "early_help"
        assert row["record_id"] == "EH-2026-118"
        assert [h["result"] for h in row["handoffs"]] == ["early_help", "acknowledged"]
        assert row["details"] == sample_details().model_dump(mode="json")

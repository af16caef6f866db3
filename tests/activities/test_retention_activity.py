"""purge_closed_referrals on SQLite and PostgreSQL: personal details go, the event trail stays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import ActivityEnvironment

from activities.records import RecordActivities
from activities.retention import RetentionActivities, purge_read_model
from models.retention_payloads import PurgeInput, PurgeResult
from models.tables import Referral
from tests.retention_seed import CLOSED_VERSION, Seeded, days_ago, personal_left, seed, snapshot

Sessions = async_sessionmaker[AsyncSession]

NOW = datetime(2033, 1, 10, 3, 0, tzinfo=UTC)
RETENTION = 2192


async def purge(sessions: Sessions, *, now: datetime = NOW, batch_size: int = 500) -> PurgeResult:
    """One activity call, as the workflow makes it."""
    activities = RetentionActivities(sessions)
    return await ActivityEnvironment().run(
        activities.purge_closed_referrals,
        PurgeInput(now=now, retention_days=RETENTION, batch_size=batch_size),
    )


class Referrals:
    """An old closed referral, a younger closed one, and an open one older than both."""

    def __init__(self, old: Seeded, young: Seeded, open_: Seeded) -> None:
        self.old, self.young, self.open = old, young, open_

    @classmethod
    async def seed(cls, sessions: Sessions) -> Referrals:
        """Write the three referrals through the real projection and email activities."""
        old = await seed(
            sessions, 1, received=days_ago(RETENTION + 40, NOW), closed=days_ago(RETENTION + 1, NOW)
        )
        young = await seed(
            sessions, 2, received=days_ago(RETENTION + 40, NOW), closed=days_ago(RETENTION - 1, NOW)
        )
        open_ = await seed(sessions, 3, received=days_ago(RETENTION * 2, NOW), closed=None)
        return cls(old, young, open_)


async def details_is_sql_null(sessions: Sessions, referral_id: str) -> bool:
    """Whether `details` is SQL NULL (not a JSON "null"), so `details IS NULL` finds purged rows."""
    async with sessions() as session:
        found = await session.scalar(
            select(Referral.id).where(Referral.id == referral_id, Referral.details.is_(None))
        )
    return found == referral_id


class TestPurge:
    """A closed referral past retention loses every personal detail and keeps its trail."""

    async def test_old_closed_referral_is_purged(self, sessions: Sessions) -> None:
        seeded = await Referrals.seed(sessions)
        before = await snapshot(sessions, seeded.old.referral_id)
        assert personal_left(before), "the seed must hold personal data for this test to mean anything"

        result = await purge(sessions)

        assert result == PurgeResult(referrals=1, events=3, outbox_messages=1)
        after = await snapshot(sessions, seeded.old.referral_id)
        assert personal_left(after) == []
        row = after["referral"]
        assert row["details"] is None
        assert await details_is_sql_null(sessions, seeded.old.referral_id)
        assert row["purged_at"] is not None
        # The non-personal trail: identity, outcome, the receiving team's record, instants.
        for kept in (
            "id",
            "reference",
            "force",
            "police_reference",
            "fingerprint",
            "status",
            "outcome",
            "record_id",
            "received_at",
            "closed_at",
            "version",
            "handed_to",
            "submitted_by",
        ):
            assert row[kept] == before["referral"][kept], kept
        for old_h, new_h in zip(before["referral"]["handoffs"], row["handoffs"], strict=True):
            assert new_h["note"] == ""
            assert [s["recipients"] for s in new_h["plan"]] == [[] for _ in old_h["plan"]]
            assert {k: v for k, v in new_h.items() if k not in {"note", "plan"}} == {
                k: v for k, v in old_h.items() if k not in {"note", "plan"}
            }
            assert [{**s, "recipients": []} for s in old_h["plan"]] == new_h["plan"]

    async def test_events_remain_without_notes_or_addresses(self, sessions: Sessions) -> None:
        seeded = await Referrals.seed(sessions)
        before = (await snapshot(sessions, seeded.old.referral_id))["events"]

        await purge(sessions)

        after = (await snapshot(sessions, seeded.old.referral_id))["events"]
        assert [(e["seq"], e["type"], e["at"], e["team"]) for e in after] == [
            (e["seq"], e["type"], e["at"], e["team"]) for e in before
        ]
        by_type = {e["type"]: e["data"] for e in after}
        assert by_type["decided"] == {"outcome": "early_help"}
        assert by_type["acknowledged"] == {"record_id": "EH-1"}
        assert "to" not in by_type["email_sent"]
        assert by_type["email_sent"]["step"] == 1
        assert by_type["email_sent"]["kind"] == "escalation"
        # Events without notes or addresses (received, hand-off opened with its due instant, closed)
        # are exactly as they were.
        untouched = {"received", "handoff_opened", "closed"}
        assert [e for e in after if e["type"] in untouched] == [e for e in before if e["type"] in untouched]

    async def test_outbox_keeps_key_kind_subject_status(self, sessions: Sessions) -> None:
        seeded = await Referrals.seed(sessions)
        [before] = (await snapshot(sessions, seeded.old.referral_id))["outbox"]
        assert before["recipients"] and before["body"]

        await purge(sessions)

        [after] = (await snapshot(sessions, seeded.old.referral_id))["outbox"]
        assert after["recipients"] == []
        assert after["body"] == ""
        assert after["last_error"] is None
        for kept in ("key", "kind", "subject", "status", "message_id", "created_at", "sent_at", "reference"):
            assert after[kept] == before[kept], kept
        assert seeded.old.reference in after["subject"]

    async def test_younger_and_open_referrals_are_untouched(self, sessions: Sessions) -> None:
        seeded = await Referrals.seed(sessions)
        young = await snapshot(sessions, seeded.young.referral_id)
        open_ = await snapshot(sessions, seeded.open.referral_id)

        await purge(sessions)

        assert await snapshot(sessions, seeded.young.referral_id) == young
        assert await snapshot(sessions, seeded.open.referral_id) == open_
        # Two days later the young one has come of age; the open one, ten years on, never does:
        # only closure starts the clock.
        assert (await purge(sessions, now=NOW + timedelta(days=2))).referrals == 1
        assert personal_left(await snapshot(sessions, seeded.young.referral_id)) == []
        assert (await purge(sessions, now=NOW + timedelta(days=3650))).referrals == 0
        assert await snapshot(sessions, seeded.open.referral_id) == open_

    async def test_referral_closed_exactly_at_the_cutoff_is_kept(self, sessions: Sessions) -> None:
        seeded = await Referrals.seed(sessions)
        closed_at = seeded.old.state.closed_at
        assert closed_at is not None
        result = await purge(sessions, now=closed_at + timedelta(days=RETENTION))
        assert result.referrals == 0

    async def test_batches_cover_everything_due(self, sessions: Sessions) -> None:
        for n in range(10, 15):
            await seed(
                sessions, n, received=days_ago(RETENTION + 40, NOW), closed=days_ago(RETENTION + n, NOW)
            )
        results = [await purge(sessions, batch_size=2) for _ in range(4)]
        assert [r.referrals for r in results] == [2, 2, 1, 0]


class TestIdempotent:
    """Running the purge again purges nothing more and never fails."""

    async def test_second_run_purges_nothing(self, sessions: Sessions) -> None:
        seeded = await Referrals.seed(sessions)
        await purge(sessions)
        once = {s.referral_id: await snapshot(sessions, s.referral_id) for s in (seeded.old, seeded.young)}

        assert await purge(sessions) == PurgeResult()

        for referral_id, snap in once.items():
            assert await snapshot(sessions, referral_id) == snap

    async def test_purge_of_an_empty_read_model(self, sessions: Sessions) -> None:
        assert await purge(sessions) == PurgeResult()


class TestLateProjection:
    """A projection arriving after the purge does not bring the details back."""

    @pytest.mark.parametrize("version", [CLOSED_VERSION, CLOSED_VERSION + 1])
    async def test_details_stay_purged(self, sessions: Sessions, version: int) -> None:
        seeded = await Referrals.seed(sessions)
        await purge(sessions)

        await ActivityEnvironment().run(
            RecordActivities(sessions).project_referral, seeded.old.projection(version)
        )

        after = await snapshot(sessions, seeded.old.referral_id)
        assert after["referral"]["details"] is None
        assert after["referral"]["purged_at"] is not None
        if version == CLOSED_VERSION:
            # Not newer: the row is left exactly as the purge left it.
            assert personal_left(after) == []

    async def test_newer_projection_does_not_restore_handoff_notes(self, sessions: Sessions) -> None:
        seeded = await Referrals.seed(sessions)
        await purge(sessions)

        await ActivityEnvironment().run(
            RecordActivities(sessions).project_referral, seeded.old.projection(CLOSED_VERSION + 1)
        )

        assert personal_left(await snapshot(sessions, seeded.old.referral_id)) == []


class TestCommand:
    """The function behind `referrals purge`: the same purge, with a dry run that changes nothing."""

    async def test_dry_run_counts_then_purge_purges(self, sessions: Sessions, database_url: str) -> None:
        seeded = await Referrals.seed(sessions)
        before = await snapshot(sessions, seeded.old.referral_id)

        dry = await purge_read_model(database_url, retention_days=RETENTION, dry_run=True, now=NOW)
        assert dry.referrals == 1
        assert dry.line().startswith("would purge 1 referral(s) closed before ")
        assert await snapshot(sessions, seeded.old.referral_id) == before

        done = await purge_read_model(database_url, retention_days=RETENTION, now=NOW, batch_size=1)
        assert done.referrals == 1
        assert done.line().startswith("purged 1 referral(s)")
        assert personal_left(await snapshot(sessions, seeded.old.referral_id)) == []

        again = await purge_read_model(database_url, retention_days=RETENTION, now=NOW)
        assert again.referrals == 0

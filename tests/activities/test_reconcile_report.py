"""The reconciler's report (email to administrators, once per run) and its metric lines."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from activities.reconcile import ReconcileActivities, reconcile_metrics
from models.reconcile_payloads import ReportInput
from models.tables import OutboxMessage, ReconcileFinding, ReconcileRun
from tests.activities.conftest import MAIL_FROM, SmtpSink

ADMINS = ["duty@council.example", "ops@council.example"]
NO_CLIENT = cast(Client, object())  # the report reads only the read model


async def seed(sessions: async_sessionmaker[AsyncSession], run_id: str, **kinds: bool) -> None:
    """Findings of one run (kind -> repaired) and the run's own row."""
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        for n, (kind, repaired) in enumerate(kinds.items()):
            session.add(
                ReconcileFinding(
                    found_at=now,
                    run_id=run_id,
                    kind=kind,
                    referral_id=f"{n:032x}",
                    workflow_id=f"referral-{n:032x}",
                    detail="seeded",
                    repaired=repaired,
                )
            )
        session.add(
            ReconcileRun(
                run_id=run_id,
                finished_at=now,
                rows_examined=3,
                workflows_examined=3,
                findings=len(kinds),
                next_row_cursor=None,
            )
        )


def activities(
    sessions: async_sessionmaker[AsyncSession], smtp: SmtpSink | None, **kwargs: Any
) -> ReconcileActivities:
    """The reconciler's activities as the worker builds them, minus Temporal."""
    return ReconcileActivities(
        sessions,
        NO_CLIENT,
        mail_from=MAIL_FROM,
        smtp=smtp.target if smtp else None,
        **{"admin_emails": ADMINS, **kwargs},
    )


async def test_the_report_is_sent_once_per_run(
    sessions: async_sessionmaker[AsyncSession], smtp: SmtpSink
) -> None:
    await seed(sessions, "run-1", workflow_not_running=False, missing_row=True)
    reconcile = activities(sessions, smtp)

    assert await reconcile.report(ReportInput(run_id="run-1")) == 1
    assert await reconcile.report(ReportInput(run_id="run-1")) == 1  # a retried activity

    [received] = smtp.received
    assert sorted(received.rcpt_tos) == ADMINS
    assert received.message["Subject"] == "Referrals reconciler: 2 finding(s), 1 need a person"
    body = received.body
    assert "workflow_not_running" in body and "NOT repaired" in body
    assert "missing_row" in body and "repaired (re-projected)" in body
    async with sessions() as session:
        [row] = await session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "reconcile"))
    assert (row.status, row.message_id) == ("sent", received.message["Message-ID"])


async def test_the_dev_outbox_keeps_it_and_nobody_configured_sends_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await seed(sessions, "run-2", workflow_not_running=False)
    assert await activities(sessions, None, admin_emails=[]).report(ReportInput(run_id="run-2")) == 0
    async with sessions() as session:
        assert list(await session.scalars(select(OutboxMessage))) == []

    assert await activities(sessions, None).report(ReportInput(run_id="run-2")) == 1

    async with sessions() as session:
        [row] = await session.scalars(select(OutboxMessage))
    assert (row.kind, row.status, row.recipients) == ("reconcile", "stored", ADMINS)


async def test_metrics_count_findings_by_kind_and_the_last_run(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        empty = await reconcile_metrics(session)
    assert 'referrals_reconcile_findings_total{kind="missing_row"} 0' in empty
    assert "referrals_reconcile_last_run_timestamp_seconds 0" in empty

    await seed(sessions, "run-3", workflow_not_running=False, missing_row=True, version_lag=True)
    await seed(sessions, "run-4", missing_row=True)

    async with sessions() as session:
        lines = await reconcile_metrics(session)
    assert 'referrals_reconcile_findings_total{kind="workflow_not_running"} 1' in lines
    assert 'referrals_reconcile_findings_total{kind="missing_row"} 2' in lines
    assert 'referrals_reconcile_findings_total{kind="version_lag"} 1' in lines
    [last] = [line for line in lines if line.startswith("referrals_reconcile_last_run_timestamp_seconds ")]
    assert abs(float(last.split()[1]) - datetime.now(UTC).timestamp()) < 60
    assert "# TYPE referrals_reconcile_findings_total counter" in lines

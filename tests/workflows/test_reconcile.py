"""The reconciler on a real dev server, a real worker and a real read model (SQLite and PostgreSQL).

Each test breaks the system behind its back (a terminated workflow, a deleted row) and checks
that ReconcileWorkflow reports or repairs it: finding stored, email in the dev outbox, metric.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, ScheduleActionStartWorkflow, ScheduleOverlapPolicy
from temporalio.testing import WorkflowEnvironment

from activities.reconcile import reconcile_metrics
from codec import data_converter
from commands import ReferralCommands
from config import Settings
from models import identity
from models.db import create_engine, session_factory
from models.reconcile_payloads import ReconcileResult, ReconcileWorkflowInput
from models.tables import OutboxMessage, ReconcileFinding, Referral
from tests.conftest import POLICE, TEMPORAL_CLI, sample_details
from worker import RECONCILE_SCHEDULE_ID, build_worker, ensure_schedules
from workflows.reconcile import ReconcileWorkflow

pytestmark = pytest.mark.slow

SECRET = "reconcile-test-secret-" + "x" * 32
ADMIN = "duty-admin@council.example"


@pytest_asyncio.fixture(scope="module")
async def client() -> AsyncIterator[Client]:
    """One dev server for the module; each test has its own task queue and read model."""
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_CLI),
        data_converter=data_converter(encryption_key=None, secret=SECRET),
        dev_server_extra_args=["--log-level", "error"],
    ) as env:
        yield env.client


def settings(**values: object) -> Settings:
    """Settings as the worker would have them, with `values` overriding the defaults."""
    base: dict[str, object] = {
        "secret_key": SECRET,
        "task_queue": f"reconcile-{uuid.uuid4()}",
        "admin_emails": [ADMIN],
    }
    return Settings(**{**base, **values})  # type: ignore[arg-type]


class System:
    """A worker with every real activity on a fresh queue and read model, and ways to break it."""

    def __init__(self, client: Client, config: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.client = client
        self.config = config
        self.sessions = sessions
        self.commands = ReferralCommands(client, config.task_queue)

    async def submit(self, police_reference: str) -> str:
        """A referral through the front door; its id once its row is in the read model."""
        # Unique per test: the workflow id derives from the reference, and the server is shared.
        unique = f"{police_reference}-{self.config.task_queue[-12:]}"
        intake = await self.commands.submit(
            sample_details(unique), actor=POLICE, received_at=datetime.now(UTC)
        )
        rid = intake.state.referral_id
        await until(lambda: self.row(rid), "the referral's row was never projected")
        return rid

    async def row(self, rid: str) -> Referral | None:
        """The referral's row, if any."""
        async with self.sessions() as session:
            return await session.get(Referral, rid)

    async def running(self) -> set[str]:
        """Workflow ids visibility lists as running on this queue."""
        query = f'ExecutionStatus="Running" AND TaskQueue="{self.config.task_queue}"'
        return {w.id async for w in self.client.list_workflows(query)}

    async def reconcile(self, **bounds: int) -> ReconcileResult:
        """One reconciler run, with a short pause between its two looks."""
        return await self.client.execute_workflow(
            ReconcileWorkflow.run,
            ReconcileWorkflowInput(
                task_queue=self.config.task_queue, recheck_after=timedelta(seconds=1), **bounds
            ),
            id=f"reconcile-{uuid.uuid4()}",
            task_queue=self.config.task_queue,
        )

    async def findings(self) -> list[ReconcileFinding]:
        """Every stored finding, oldest first."""
        async with self.sessions() as session:
            return list(await session.scalars(select(ReconcileFinding).order_by(ReconcileFinding.id)))

    async def reports(self) -> list[OutboxMessage]:
        """The reconciler's emails in the outbox."""
        async with self.sessions() as session:
            return list(await session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "reconcile")))

    async def metrics(self) -> list[str]:
        """The reconciler's metric lines."""
        async with self.sessions() as session:
            return await reconcile_metrics(session)


async def until(check: Callable[[], Awaitable[Any]], message: str, seconds: float = 30) -> Any:
    """Poll `check` until it returns something truthy."""
    deadline = datetime.now(UTC) + timedelta(seconds=seconds)
    while not (result := await check()):
        assert datetime.now(UTC) < deadline, message
        await asyncio.sleep(0.2)
    return result


@pytest_asyncio.fixture
async def system(client: Client, database_url: str) -> AsyncIterator[System]:
    """A running worker (every workflow and activity, as `referrals worker` builds it)."""
    config = settings(database_url=database_url)
    engine = create_engine(database_url)
    try:
        async with build_worker(client, config, secret=SECRET, engine=engine):
            yield System(client, config, session_factory(engine))
    finally:
        await engine.dispose()


def metric(lines: list[str], name: str) -> float:
    """The value of one metric line (name with labels)."""
    [value] = [line.rsplit(" ", 1)[1] for line in lines if line.startswith(name + " ")]
    return float(value)


async def test_a_healthy_system_has_no_findings(system: System) -> None:
    ids = [await system.submit(f"NP-HEALTHY-{n}") for n in range(3)]
    await until(lambda: _has_all(system, ids), "visibility never listed the referrals")

    result = await system.reconcile()

    assert (result.rows_examined, result.workflows_examined) == (3, 3), "it looked at everything"
    assert (result.findings, result.repaired) == (0, 0)
    assert await system.findings() == []
    assert await system.reports() == []
    lines = await system.metrics()
    assert metric(lines, 'referrals_reconcile_findings_total{kind="workflow_not_running"}') == 0
    assert metric(lines, 'referrals_reconcile_findings_total{kind="missing_row"}') == 0
    last_run = metric(lines, "referrals_reconcile_last_run_timestamp_seconds")
    assert abs(last_run - datetime.now(UTC).timestamp()) < 60


async def test_a_terminated_workflow_is_reported_once(system: System) -> None:
    healthy = await system.submit("NP-STAYS-OPEN")
    lost = await system.submit("NP-TERMINATED")
    wid = identity.workflow_id(lost)
    await system.client.get_workflow_handle(wid).terminate(reason="behind the system's back")
    await until(lambda: _not_running(system, wid), "visibility still lists the terminated workflow")

    result = await system.reconcile()

    assert (result.findings, result.repaired) == (1, 0)
    [finding] = await system.findings()
    assert (finding.kind, finding.referral_id, finding.workflow_id) == ("workflow_not_running", lost, wid)
    assert not finding.repaired
    assert "terminated" in finding.detail
    [email] = await system.reports()
    assert email.recipients == [ADMIN]
    assert email.status == "stored"
    row = await system.row(lost)
    assert row is not None and row.reference in email.body and "needs a person" in email.body
    assert healthy not in email.body and "Quixotic" not in email.body
    lines = await system.metrics()
    assert metric(lines, 'referrals_reconcile_findings_total{kind="workflow_not_running"}') == 1

    # The next run sees the same divergence: already told, so no new finding and no new email.
    again = await system.reconcile()
    assert again.findings == 0
    assert len(await system.findings()) == 1
    assert len(await system.reports()) == 1


async def test_a_deleted_row_is_re_projected(system: System) -> None:
    healthy = await system.submit("NP-UNTOUCHED")
    lost = await system.submit("NP-ROW-DELETED")
    before = await system.row(lost)
    assert before is not None
    async with system.sessions() as session, session.begin():
        await session.execute(delete(Referral).where(Referral.id == lost))
    await until(lambda: _has_all(system, [healthy, lost]), "visibility never listed the referrals")

    result = await system.reconcile()

    assert (result.findings, result.repaired) == (1, 1)
    [finding] = await system.findings()
    assert (finding.kind, finding.referral_id, finding.repaired) == ("missing_row", lost, True)
    back = await until(lambda: system.row(lost), "the row was not re-projected")
    assert (back.reference, back.status, back.version) == (before.reference, before.status, before.version)
    [email] = await system.reports()
    assert "repaired" in email.body
    lines = await system.metrics()
    assert metric(lines, 'referrals_reconcile_findings_total{kind="missing_row"}') == 1
    # Repaired: the next run finds nothing.
    assert (await system.reconcile()).findings == 0


async def test_a_row_left_behind_is_re_projected(system: System) -> None:
    lagging = await system.submit("NP-ROW-BEHIND")
    row = await system.row(lagging)
    assert row is not None and row.version > 1
    async with system.sessions() as session, session.begin():
        await session.execute(update(Referral).where(Referral.id == lagging).values(version=1))
    await until(lambda: _has_all(system, [lagging]), "visibility never listed the referral")

    result = await system.reconcile()

    assert (result.findings, result.repaired) == (1, 1)
    [finding] = await system.findings()
    assert (finding.kind, finding.referral_id, finding.repaired) == ("version_lag", lagging, True)

    async def caught_up() -> bool:
        again = await system.row(lagging)
        return again is not None and again.version == row.version

    await until(caught_up, "the row never caught up with its workflow")


async def test_a_run_is_bounded_and_the_next_resumes(system: System) -> None:
    ids = sorted([await system.submit(f"NP-PAGED-{n}") for n in range(3)])
    await until(lambda: _has_all(system, ids), "visibility never listed the referrals")
    lost = ids[2]
    await system.client.get_workflow_handle(identity.workflow_id(lost)).terminate(reason="test")
    await until(lambda: _not_running(system, identity.workflow_id(lost)), "still listed as running")
    bounds = {"row_page_size": 1, "max_row_pages": 2, "workflow_page_size": 1, "max_workflow_pages": 1}

    first = await system.reconcile(**bounds)

    # Two rows of three and one workflow of two: the terminated referral (last by id) is not seen.
    assert (first.rows_examined, first.workflows_examined, first.findings) == (2, 1, 0)

    second = await system.reconcile(**bounds)

    assert (second.rows_examined, second.findings) == (1, 1), "resumed after the second row"
    [finding] = await system.findings()
    assert finding.referral_id == lost
    third = await system.reconcile(**bounds)
    assert third.rows_examined == 2, "the table ended, so the scan starts again from the first row"


async def test_runs_resume_among_older_workflows_until_all_are_seen(system: System) -> None:
    """More running workflows than one run looks at: later runs look at older ones, not the same."""
    ids = [await system.submit(f"NP-OLDEST-{n}") for n in range(3)]  # oldest first
    await until(lambda: _has_all(system, ids), "visibility never listed the referrals")
    oldest = ids[0]
    async with system.sessions() as session, session.begin():
        await session.execute(delete(Referral).where(Referral.id == oldest))
    bounds = {"workflow_page_size": 1, "max_workflow_pages": 1}

    first = await system.reconcile(**bounds)
    second = await system.reconcile(**bounds)

    # Newest first, one a run: the oldest workflow's missing row is not seen yet.
    assert (first.workflows_examined, first.findings) == (1, 0)
    assert (second.workflows_examined, second.findings) == (1, 0)

    third = await system.reconcile(**bounds)

    assert (third.workflows_examined, third.findings, third.repaired) == (1, 1, 1)
    [finding] = await system.findings()
    assert (finding.kind, finding.referral_id) == ("missing_row", oldest)
    await until(lambda: system.row(oldest), "the row was not re-projected")
    # Every workflow seen: the scan starts again from the newest within a run or two.
    later = [await system.reconcile(**bounds) for _ in range(2)]
    assert [r.workflows_examined for r in later] in ([1, 1], [0, 1]), later


async def test_the_schedule_runs_the_reconciler_every_interval(client: Client) -> None:
    config = settings(reconcile_every=timedelta(minutes=7))
    await ensure_schedules(client, config)
    handle = client.get_schedule_handle(RECONCILE_SCHEDULE_ID)
    try:
        schedule = (await handle.describe()).schedule
        [interval] = schedule.spec.intervals
        assert interval.every == timedelta(minutes=7)
        assert schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
        action = schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert (action.workflow, action.task_queue) == ("ReconcileWorkflow", config.task_queue)
        [arg] = await client.data_converter.decode(list(action.args), [ReconcileWorkflowInput])
        assert arg == ReconcileWorkflowInput(task_queue=config.task_queue)
        # Every worker start calls it: the same settings leave the Schedule untouched.
        before = (await handle.describe()).info.last_updated_at
        await ensure_schedules(client, config)
        assert (await handle.describe()).info.last_updated_at == before

        # A new interval in the settings updates the one Schedule.
        await ensure_schedules(
            client, settings(reconcile_every=timedelta(minutes=3), task_queue=config.task_queue)
        )
        [interval] = (await handle.describe()).schedule.spec.intervals
        assert interval.every == timedelta(minutes=3)
    finally:
        await handle.delete()
        await client.get_schedule_handle("referrals-purge").delete()


async def test_a_triggered_schedule_runs_the_reconciler(system: System) -> None:
    """The scheduled action, decrypted by the worker, runs a whole reconciliation."""
    await system.submit("NP-SCHEDULED")
    await ensure_schedules(system.client, system.config)
    handle = system.client.get_schedule_handle(RECONCILE_SCHEDULE_ID)
    try:
        await handle.trigger()

        async def ran() -> bool:
            lines = await system.metrics()
            return metric(lines, "referrals_reconcile_last_run_timestamp_seconds") > 0

        await until(ran, "the triggered reconciler never finished a run", seconds=90)
        assert await system.findings() == []
    finally:
        await handle.delete()
        await system.client.get_schedule_handle("referrals-purge").delete()


async def _has_all(system: System, ids: list[str]) -> bool:
    running = await system.running()
    return all(identity.workflow_id(i) in running for i in ids)


async def _not_running(system: System, wid: str) -> bool:
    return wid not in await system.running()

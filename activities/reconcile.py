"""The reconciler's activities: compare open rows with running workflows, repair or report.

Three divergences are looked for. An open row whose workflow is not running cannot be repaired
safely (the referral's deadlines and ladder lived in that workflow): it is reported to the
administrators. A running workflow with no row, or a row whose version stays behind the
workflow's, is repaired by the workflow itself, asked by the `reproject` signal to project its
whole state again: the workflow stays the single writer of its row.

Everything is paged and capped (see ReconcileWorkflowInput): a run never loads every row or every
workflow, and the row scan resumes where the previous run stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import structlog
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from activities.outbox import Outbox, SmtpTarget
from models.enums import Status
from models.identity import workflow_id
from models.payloads import ReferralState
from models.reconcile_payloads import (
    BeginResult,
    ConfirmInput,
    FindingKind,
    PageResult,
    ReconcileResult,
    ReportInput,
    RowsPageInput,
    Suspect,
    WorkflowsPageInput,
)
from models.tables import OutboxMessage, ReconcileFinding, ReconcileRun, Referral

log = structlog.get_logger(__name__)

WORKFLOW_PREFIX = "referral-"
#: Describes, queries and signals in flight at once: enough to finish a page in seconds, few
#: enough that the reconciler never crowds out the referrals' own workflow tasks.
CONCURRENCY = 10
RPC_TIMEOUT = timedelta(seconds=5)

T = TypeVar("T")
A = TypeVar("A")


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _quoted(value: str) -> str:
    """A string literal for a visibility query."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


async def _bounded(call: Callable[[A], Awaitable[T]], items: Sequence[A]) -> list[T]:
    """`call` on every item with at most CONCURRENCY in flight, results in order."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(item: A) -> T:
        async with gate:
            return await call(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


class ReconcileActivities:
    """The reconciler's steps; the worker builds one with its session factory and Temporal client."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        client: Client,
        *,
        admin_emails: Sequence[str] = (),
        mail_from: str = "referrals@localhost",
        smtp: SmtpTarget | None = None,
    ) -> None:
        self.sessions = sessions
        self.client = client
        self.admin_emails = list(admin_emails)
        self.outbox = Outbox(sessions, mail_from=mail_from, smtp=smtp)

    # ---- first look ----------------------------------------------------------------------

    @activity.defn(name="reconcile_begin")
    async def begin(self) -> BeginResult:
        """Where the previous run's scans of rows and of running workflows stopped."""
        async with self.sessions() as session:
            last = (
                await session.execute(
                    select(ReconcileRun.next_row_cursor, ReconcileRun.next_workflow_cursor)
                    .order_by(ReconcileRun.id.desc())
                    .limit(1)
                )
            ).first()
        if last is None:
            return BeginResult()
        return BeginResult(row_cursor=last[0], workflow_cursor=last[1])

    @activity.defn(name="reconcile_rows_page")
    async def rows_page(self, input: RowsPageInput) -> PageResult:
        """Open rows after `after` whose workflow visibility does not list as running."""
        query = (
            select(Referral.id)
            .where(Referral.status != Status.CLOSED.value, Referral.purged_at.is_(None))
            .order_by(Referral.id)
            .limit(input.limit)
        )
        if input.after is not None:
            query = query.where(Referral.id > input.after)
        async with self.sessions() as session:
            ids = list(await session.scalars(query))
        if not ids:
            return PageResult()
        # One visibility query per page, not one describe per row; visibility may lag, so a
        # suspect here is only confirmed by a describe at the second look.
        quoted = ", ".join(_quoted(workflow_id(i)) for i in ids)
        running = {
            w.id
            async for w in self.client.list_workflows(
                f'WorkflowId IN ({quoted}) AND ExecutionStatus="Running"',
                page_size=len(ids),
                rpc_timeout=RPC_TIMEOUT,
            )
        }
        suspects = [
            Suspect(kind=FindingKind.WORKFLOW_NOT_RUNNING, referral_id=i, workflow_id=workflow_id(i))
            for i in ids
            if workflow_id(i) not in running
        ]
        return PageResult(
            examined=len(ids), suspects=suspects, next_row=ids[-1] if len(ids) == input.limit else None
        )

    @activity.defn(name="reconcile_workflows_page")
    async def workflows_page(self, input: WorkflowsPageInput) -> PageResult:
        """Running referral workflows on the queue with no row, or a row behind their state."""
        query = (
            'WorkflowType="ReferralWorkflow" AND ExecutionStatus="Running" '
            f"AND TaskQueue={_quoted(input.task_queue)}"
        )
        if input.started_before is not None:
            query += f' AND StartTime < "{input.started_before.astimezone(UTC).isoformat()}"'
        listing = self.client.list_workflows(
            query,
            page_size=input.limit,
            next_page_token=input.page_token,
            rpc_timeout=RPC_TIMEOUT,
        )
        await listing.fetch_next_page()
        page = listing.current_page or []
        started = [w.start_time for w in page if w.start_time is not None]
        ids = {w.id.removeprefix(WORKFLOW_PREFIX): w.id for w in page if w.id.startswith(WORKFLOW_PREFIX)}
        async with self.sessions() as session:
            versions = dict(
                (
                    await session.execute(select(Referral.id, Referral.version).where(Referral.id.in_(ids)))
                ).all()
            )
        suspects = [
            Suspect(kind=FindingKind.MISSING_ROW, referral_id=rid, workflow_id=wid)
            for rid, wid in ids.items()
            if rid not in versions
        ]
        present = [(rid, wid) for rid, wid in ids.items() if rid in versions]
        states = await _bounded(self._state, [wid for _, wid in present])
        for (rid, wid), state in zip(present, states, strict=True):
            if state is not None and state.version > versions[rid]:
                suspects.append(
                    Suspect(
                        kind=FindingKind.VERSION_LAG,
                        referral_id=rid,
                        workflow_id=wid,
                        workflow_version=state.version,
                    )
                )
        return PageResult(
            examined=len(ids),
            suspects=suspects,
            next_token=listing.next_page_token,
            oldest_started=min(started, default=None),
        )

    async def _state(self, wid: str) -> ReferralState | None:
        """The workflow's state, or None when it does not answer (a busy worker is not a finding)."""
        try:
            state: ReferralState = await self.client.get_workflow_handle(wid).query(
                "state", result_type=ReferralState, rpc_timeout=RPC_TIMEOUT
            )
        except (RPCError, WorkflowQueryFailedError) as exc:
            log.info("reconcile.query_failed", workflow_id=wid, error=type(exc).__name__)
            return None
        return state

    # ---- second look ---------------------------------------------------------------------

    @activity.defn(name="reconcile_confirm")
    async def confirm(self, input: ConfirmInput) -> ReconcileResult:
        """Keep the suspects that still diverge, repair what is safe, store findings and the run."""
        checked = await _bounded(self._recheck, input.suspects)
        confirmed = [c for c in checked if c is not None]
        now = datetime.now(UTC)
        async with self.sessions() as session, session.begin():
            insert = _insert(session)
            for suspect, detail, repaired in confirmed:
                if not repaired and await self._reported_before(session, suspect, input.run_id):
                    continue  # a divergence nobody can repair is told once, not every few minutes
                await session.execute(
                    insert(ReconcileFinding)
                    .values(
                        found_at=now,
                        run_id=input.run_id,
                        kind=suspect.kind.value,
                        referral_id=suspect.referral_id,
                        workflow_id=suspect.workflow_id,
                        detail=detail,
                        repaired=repaired,
                    )
                    .on_conflict_do_nothing(index_elements=["run_id", "kind", "referral_id"])
                )
            rows = (
                await session.execute(
                    select(ReconcileFinding.repaired).where(ReconcileFinding.run_id == input.run_id)
                )
            ).all()
            await session.execute(
                insert(ReconcileRun)
                .values(
                    run_id=input.run_id,
                    finished_at=now,
                    rows_examined=input.rows_examined,
                    workflows_examined=input.workflows_examined,
                    findings=len(rows),
                    next_row_cursor=input.next_row_cursor,
                    next_workflow_cursor=input.next_workflow_cursor,
                )
                .on_conflict_do_nothing(index_elements=["run_id"])
            )
        for suspect, detail, repaired in confirmed:
            log.warning(
                "reconcile.finding",
                kind=suspect.kind.value,
                referral_id=suspect.referral_id,
                detail=detail,
                repaired=repaired,
            )
        return ReconcileResult(
            rows_examined=input.rows_examined,
            workflows_examined=input.workflows_examined,
            findings=len(rows),
            repaired=sum(1 for r in rows if r.repaired),
        )

    async def _recheck(self, suspect: Suspect) -> tuple[Suspect, str, bool] | None:
        """(suspect, detail, repaired) when the divergence persisted; None when it resolved itself."""
        async with self.sessions() as session:
            row = (
                await session.execute(
                    select(Referral.status, Referral.version).where(Referral.id == suspect.referral_id)
                )
            ).one_or_none()
        if suspect.kind == FindingKind.WORKFLOW_NOT_RUNNING:
            if row is None or row.status == Status.CLOSED.value:
                return None
            status = await self._status(suspect.workflow_id)
            if status == "running":
                return None
            return suspect, f"row is {row.status} but the workflow is {status}", False
        if suspect.kind == FindingKind.MISSING_ROW:
            if row is not None:
                return None
            if await self._status(suspect.workflow_id) != "running":
                return None  # it finished meanwhile: the next run sees an open row or none at all
            detail = "running workflow has no row"
        else:
            wanted = suspect.workflow_version or 0
            if row is None:
                detail = "row disappeared while its workflow runs"
            elif row.version >= wanted:
                return None
            else:
                detail = f"row at version {row.version}, workflow at {wanted} or later"
        return suspect, *await self._reproject(suspect.workflow_id, detail)

    async def _status(self, wid: str) -> str:
        """ "running", "not found", or the closed workflow's status in words."""
        try:
            described = await self.client.get_workflow_handle(wid).describe(rpc_timeout=RPC_TIMEOUT)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return "not found"
            raise
        status = described.status or WorkflowExecutionStatus.RUNNING
        return status.name.lower().replace("_", " ")

    async def _reproject(self, wid: str, detail: str) -> tuple[str, bool]:
        """Ask the workflow to project its whole state again; (detail, whether it was asked)."""
        try:
            await self.client.get_workflow_handle(wid).signal("reproject", rpc_timeout=RPC_TIMEOUT)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            return f"{detail}; the workflow ended before it could be asked to re-project", False
        return f"{detail}; re-projection requested", True

    @staticmethod
    async def _reported_before(session: AsyncSession, suspect: Suspect, run_id: str) -> bool:
        earlier = await session.scalar(
            select(ReconcileFinding.id)
            .where(
                ReconcileFinding.kind == suspect.kind.value,
                ReconcileFinding.referral_id == suspect.referral_id,
                ReconcileFinding.run_id != run_id,
            )
            .limit(1)
        )
        return earlier is not None

    # ---- report --------------------------------------------------------------------------

    @activity.defn(name="reconcile_report")
    async def report(self, input: ReportInput) -> int:
        """Email the run's findings to the administrators once (1), or nobody is configured (0)."""
        if not self.admin_emails:
            log.warning("reconcile.no_admin_emails", run_id=input.run_id)
            return 0

        async def build(session: AsyncSession) -> OutboxMessage | None:
            found = (
                await session.execute(
                    select(ReconcileFinding, Referral.reference)
                    .outerjoin(Referral, Referral.id == ReconcileFinding.referral_id)
                    .where(ReconcileFinding.run_id == input.run_id)
                    .order_by(ReconcileFinding.id)
                )
            ).all()
            if not found:
                return None
            subject, body = compose_report([(f, ref) for f, ref in found])
            return OutboxMessage(
                referral_id="",
                reference="",
                kind="reconcile",
                recipients=list(self.admin_emails),
                subject=subject,
                body=body,
            )

        # One message per run, keyed by the run (the same outbox, claim and SMTP path as the
        # referral emails: sent at most once as far as SMTP allows, never half-recorded).
        key = "reconcile-" + hashlib.sha256(input.run_id.encode()).hexdigest()[:40]
        row = await self.outbox.row(key, build)
        if row is None:
            return 0
        result = await self.outbox.send(row)
        if result.rejected:
            log.error("reconcile.report_rejected", run_id=input.run_id, refused=len(result.rejected))
        return 1


def compose_report(found: Sequence[tuple[ReconcileFinding, str | None]]) -> tuple[str, str]:
    """Subject and body of a run's report: kinds, ids and references only, no personal details."""
    unrepaired = sum(1 for f, _ in found if not f.repaired)
    subject = f"Referrals reconciler: {len(found)} finding(s), {unrepaired} need a person"
    lines = ["The reconciler found referrals that exist in one place and not the other.", ""]
    for finding, reference in found:
        what = "repaired (re-projected)" if finding.repaired else "NOT repaired: needs a person"
        lines.append(
            f"- {finding.kind}: referral {reference or finding.referral_id} "
            f"(workflow {finding.workflow_id}): {finding.detail}. {what}."
        )
    lines += ["", "This message holds no personal details."]
    return subject, "\n".join(lines) + "\n"


async def reconcile_metrics(session: AsyncSession) -> list[str]:
    """Prometheus text lines: findings by kind, and the instant the last run finished (0: never)."""
    counts = dict(
        (
            await session.execute(select(ReconcileFinding.kind, func.count()).group_by(ReconcileFinding.kind))
        ).all()
    )
    last = await session.scalar(select(func.max(ReconcileRun.finished_at)))
    if isinstance(last, datetime) and last.tzinfo is None:
        last = last.replace(tzinfo=UTC)  # SQLite's max() bypasses the column type
    lines = [
        "# HELP referrals_reconcile_findings_total Divergences between the read model and Temporal, by kind.",
        "# TYPE referrals_reconcile_findings_total counter",
    ]
    lines += [
        f'referrals_reconcile_findings_total{{kind="{k.value}"}} {counts.get(k.value, 0)}'
        for k in FindingKind
    ]
    lines += [
        "# HELP referrals_reconcile_last_run_timestamp_seconds When the last reconciler run finished.",
        "# TYPE referrals_reconcile_last_run_timestamp_seconds gauge",
        f"referrals_reconcile_last_run_timestamp_seconds {last.timestamp() if last else 0:.0f}",
    ]
    return lines

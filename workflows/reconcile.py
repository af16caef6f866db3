"""ReconcileWorkflow: open referrals in SQL against running ReferralWorkflows, looked at twice.

Started every few minutes by the `referrals-reconcile` Schedule (worker.ensure_schedules). The
first look pages through open rows and running workflows (bounded per run) and collects
suspects; after `recheck_after` the second look keeps only the divergences that persisted (a
projection may simply have been in flight), stores them as findings, re-projects what is safe to
repair and emails the administrators.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from models.reconcile_payloads import (
        BeginResult,
        ConfirmInput,
        PageResult,
        ReconcileResult,
        ReconcileWorkflowInput,
        ReportInput,
        RowsPageInput,
        Suspect,
        WorkflowsPageInput,
    )

# A page is one query and at most a few hundred short RPCs.
STEP_TIMEOUT = timedelta(minutes=2)
# Every step is idempotent; giving up after ten minutes fails this run visibly, and the next
# scheduled run starts afresh instead of queueing behind a stuck one (the Schedule skips overlaps).
STEP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
STEP_GIVE_UP = timedelta(minutes=10)

T = TypeVar("T")


@workflow.defn
class ReconcileWorkflow:
    """Find referrals that exist in one place (SQL or Temporal) and not the other."""

    @workflow.run
    async def run(self, input: ReconcileWorkflowInput) -> ReconcileResult:
        """First look, pause, second look; the counts of what was examined, found and repaired."""
        begin: BeginResult = await self._step("reconcile_begin", None, BeginResult)
        suspects: list[Suspect] = []
        rows = workflows = 0
        cursor = begin.row_cursor
        for _ in range(input.max_row_pages):
            page: PageResult = await self._step(
                "reconcile_rows_page", RowsPageInput(after=cursor, limit=input.row_page_size), PageResult
            )
            rows += page.examined
            suspects += page.suspects
            cursor = page.next_row
            if cursor is None or len(suspects) >= input.max_suspects:
                break
        token: bytes | None = None
        oldest = None
        for _ in range(input.max_workflow_pages):
            page = await self._step(
                "reconcile_workflows_page",
                WorkflowsPageInput(
                    task_queue=input.task_queue,
                    page_token=token,
                    limit=input.workflow_page_size,
                    started_before=begin.workflow_cursor,
                ),
                PageResult,
            )
            workflows += page.examined
            suspects += page.suspects
            token = page.next_token
            oldest = page.oldest_started or oldest
            if not token or len(suspects) >= input.max_suspects:
                break
        if suspects:
            await workflow.sleep(input.recheck_after)
        result: ReconcileResult = await self._step(
            "reconcile_confirm",
            ConfirmInput(
                run_id=workflow.info().workflow_id,
                suspects=suspects[: input.max_suspects],
                rows_examined=rows,
                workflows_examined=workflows,
                next_row_cursor=cursor,
                # More running workflows than one run looks at: the next run resumes with older
                # ones; once they are all seen, it starts again from the newest.
                next_workflow_cursor=oldest if token else None,
            ),
            ReconcileResult,
        )
        if result.findings:
            await self._step("reconcile_report", ReportInput(run_id=workflow.info().workflow_id), int)
        workflow.logger.info(
            "reconcile: %d rows, %d workflows, %d findings, %d repaired",
            result.rows_examined,
            result.workflows_examined,
            result.findings,
            result.repaired,
        )
        return result

    async def _step(self, name: str, arg: object, result_type: type[T]) -> T:
        args = [] if arg is None else [arg]
        result: T = await workflow.execute_activity(
            name,
            args=args,
            result_type=result_type,
            start_to_close_timeout=STEP_TIMEOUT,
            schedule_to_close_timeout=STEP_GIVE_UP,
            retry_policy=STEP_RETRY,
        )
        return result

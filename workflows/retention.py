"""PurgeWorkflow: the daily retention purge, one activity call per batch until none is left.

Started by the `referrals-purge` Schedule (worker.ensure_schedules). Its input is a number of
days, never personal data; "now" is the workflow's own clock, fixed for the whole purge.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from models.retention_payloads import PurgeInput, PurgeResult, PurgeWorkflowInput

# A batch is one short transaction; five minutes covers a slow database without hiding a hung one.
BATCH_TIMEOUT = timedelta(minutes=5)
# Every batch is idempotent, so retrying is always safe; giving up after an hour lets the run fail
# visibly (and tomorrow's run try again) instead of blocking every later day behind SKIP.
BATCH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
)
BATCH_GIVE_UP = timedelta(hours=1)


@workflow.defn
class PurgeWorkflow:
    """Purge the personal details of referrals closed longer than the retention period."""

    @workflow.run
    async def run(self, input: PurgeWorkflowInput) -> PurgeResult:
        """Run batches until one comes back short; continue as new after `batches_per_run`."""
        now = input.now or workflow.now()
        total = input.so_far
        for _ in range(input.batches_per_run):
            batch: PurgeResult = await workflow.execute_activity(
                "purge_closed_referrals",
                PurgeInput(now=now, retention_days=input.retention_days, batch_size=input.batch_size),
                result_type=PurgeResult,
                start_to_close_timeout=BATCH_TIMEOUT,
                schedule_to_close_timeout=BATCH_GIVE_UP,
                retry_policy=BATCH_RETRY,
            )
            total = total.plus(batch)
            if batch.referrals < input.batch_size:
                workflow.logger.info("retention: purge finished, %d referrals purged", total.referrals)
                return total
            if workflow.info().is_continue_as_new_suggested():
                break
        # A backlog of years would make one long history; start afresh with the same cut-off.
        workflow.continue_as_new(input.model_copy(update={"now": now, "so_far": total}))

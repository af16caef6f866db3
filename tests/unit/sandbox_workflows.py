"""Two tiny workflows for `test_workflow_runner` (a module of their own: the sandbox re-imports it)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow


@workflow.defn
class CountingWorkflow:
    """Sleeps `rounds` times (one activation each), then answers with its own arithmetic."""

    @workflow.run
    async def run(self, rounds: int) -> str:
        total = 0
        for n in range(rounds):
            await asyncio.sleep(timedelta(seconds=1).total_seconds())
            total += n
        return f"{rounds} rounds, total {total}"


@workflow.defn
class ForbiddenWorkflow:
    """Reads the host's wall clock, which the sandbox must still refuse."""

    @workflow.run
    async def run(self) -> str:
        import datetime

        return datetime.datetime.now().isoformat()

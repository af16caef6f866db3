"""Tiny workflows for `test_workflow_runner` (a module of their own: the sandbox re-imports it)."""

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


@workflow.defn
class GreetingWorkflow:
    """Asks an activity (`greet`, registered by the test) for a greeting, once locally, once not."""

    @workflow.run
    async def run(self, name: str) -> str:
        local = await workflow.execute_local_activity(
            "greet", name, result_type=str, start_to_close_timeout=timedelta(seconds=10)
        )
        remote = await workflow.execute_activity(
            "greet", local, result_type=str, start_to_close_timeout=timedelta(seconds=10)
        )
        return remote


@workflow.defn
class EchoWorkflow:
    """A child that answers once it is signalled."""

    def __init__(self) -> None:
        self.heard: list[str] = []

    @workflow.run
    async def run(self, name: str) -> str:
        await workflow.wait_condition(lambda: bool(self.heard))
        return f"{name}, {self.heard[0]}"

    @workflow.signal
    async def hear(self, word: str) -> None:
        self.heard.append(word)


@workflow.defn
class FamilyWorkflow:
    """Payloads for every kind of target: an activity's, a child's start, an external signal's."""

    @workflow.run
    async def run(self, name: str) -> str:
        greeting = await workflow.execute_activity(
            "greet", name, result_type=str, start_to_close_timeout=timedelta(seconds=10)
        )
        child = await workflow.start_child_workflow(
            EchoWorkflow.run, greeting, id=f"{workflow.info().workflow_id}-echo"
        )
        await workflow.get_external_workflow_handle(child.id).signal(EchoWorkflow.hear, "welcome")
        return await child

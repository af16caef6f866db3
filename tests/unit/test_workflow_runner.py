"""The worker's sandbox compiles its glue code once, and is still the sandbox (workflow_runner)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import create_async_engine
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

import workflow_runner
from config import Settings
from models.policy import load_policy
from tests.conftest import TEMPORAL_TEST_SERVER
from tests.unit.sandbox_workflows import CountingWorkflow, ForbiddenWorkflow
from worker import build_worker
from workflow_runner import CompiledSandboxRunner, compiled


@pytest_asyncio.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(TEMPORAL_TEST_SERVER)
    ) as env:
        yield env


def test_the_installed_sdk_has_what_the_runner_wraps() -> None:
    # Fails after an SDK upgrade that renames the sandbox's instance class or its method: the
    # worker would then run the stock sandbox (correct, but slower), and this says so.
    assert workflow_runner.SUPPORTED


async def test_the_worker_runs_the_compiled_sandbox(env: WorkflowEnvironment) -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        worker = build_worker(
            env.client, Settings(), secret="s" * 40, engine=engine, policy=load_policy(None)
        )
        runner = worker.config()["workflow_runner"]
        assert isinstance(runner, CompiledSandboxRunner)
        assert isinstance(runner, SandboxedWorkflowRunner)
    finally:
        await engine.dispose()


async def test_workflows_run_on_code_compiled_once(env: WorkflowEnvironment) -> None:
    queue = f"runner-{uuid.uuid4()}"
    compiled.cache_clear()
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[CountingWorkflow],
        workflow_runner=CompiledSandboxRunner(),
        max_cached_workflows=0,  # every activation builds its instance again, as after an eviction
    ):
        results = [
            await env.client.execute_workflow(
                CountingWorkflow.run, rounds, id=f"{queue}-{rounds}", task_queue=queue
            )
            for rounds in (3, 5)
        ]
    assert results == ["3 rounds, total 3", "5 rounds, total 10"]
    info = compiled.cache_info()
    # The instance's imports name the workflow class (one string per class), the rest are the
    # same few strings: many calls, a handful of compilations.
    assert 0 < info.misses <= 6, info
    assert info.hits >= 10 * info.misses, info


async def test_the_sandbox_still_refuses_what_it_refused(env: WorkflowEnvironment) -> None:
    queue = f"runner-{uuid.uuid4()}"
    async with Worker(
        env.client, task_queue=queue, workflows=[ForbiddenWorkflow], workflow_runner=CompiledSandboxRunner()
    ):
        handle = await env.client.start_workflow(
            ForbiddenWorkflow.run, id=f"{queue}-forbidden", task_queue=queue, execution_timeout=None
        )
        # A restricted call fails the workflow task, not the workflow: it is retried until fixed.
        # Its history shows the sandbox's refusal.
        failure = await _first_task_failure(handle)
        await handle.terminate("test over")
    assert failure[0] == "RestrictedWorkflowAccessError", failure
    assert "Cannot access datetime.datetime.now" in failure[1], failure
    with pytest.raises(WorkflowFailureError):
        await handle.result()


async def _first_task_failure(handle: WorkflowHandle[Any, Any]) -> tuple[str, str]:
    """The type and message of the first failed workflow task in `handle`'s history."""
    for _ in range(100):
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                failure = event.workflow_task_failed_event_attributes.failure
                return failure.application_failure_info.type, failure.message
        await asyncio.sleep(0.1)
    raise AssertionError("the workflow task never failed")

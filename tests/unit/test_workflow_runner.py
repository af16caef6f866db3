"""The worker's sandbox compiles its glue code once, and is still the sandbox (workflow_runner)."""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import create_async_engine
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    ExternalStorage,
    PayloadCodec,
    SerializationContext,
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

import workflow_runner
from codec import data_converter
from config import Settings
from models.policy import load_policy
from tests.conftest import ROOT, TEMPORAL_TEST_SERVER
from tests.unit.sandbox_workflows import (
    CountingWorkflow,
    EchoWorkflow,
    FamilyWorkflow,
    ForbiddenWorkflow,
    GreetingWorkflow,
)
from worker import build_worker
from workflow_runner import CompiledSandboxRunner, FirstReadSource, compiled
from workflows.referral import ReferralWorkflow


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


class RecordingCodec(PayloadCodec, WithSerializationContext):
    """Records the serialisation context of every payload it encodes or decodes."""

    def __init__(self, seen: list[tuple[str, ...]], context: SerializationContext | None = None) -> None:
        self.seen = seen
        self.context = context

    def with_context(self, context: SerializationContext) -> RecordingCodec:
        return RecordingCodec(self.seen, context)

    def _record(self, way: str, payloads: Sequence[Payload]) -> list[Payload]:
        for _ in payloads:
            match self.context:
                case ActivitySerializationContext() as c:
                    entry = (way, "activity", c.activity_type, str(c.is_local), c.workflow_type or "")
                    self.seen.append(entry)
                case WorkflowSerializationContext() as c:
                    self.seen.append((way, "workflow", c.workflow_id.rsplit("-", 1)[-1]))
                case other:
                    self.seen.append((way, type(other).__name__))
        return list(payloads)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self._record("encode", payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self._record("decode", payloads)


@activity.defn(name="greet")
async def greet(name: str) -> str:
    return f"hello {name}"


async def _contexts(env: WorkflowEnvironment, runner: WorkflowRunner) -> tuple[str, list[tuple[str, ...]]]:
    """The result of GreetingWorkflow under `runner`, and every context the codec saw."""
    seen: list[tuple[str, ...]] = []
    client = Client(
        env.client.service_client,
        namespace=env.client.namespace,
        data_converter=DataConverter(payload_codec=RecordingCodec(seen)),
    )
    queue = f"runner-{uuid.uuid4()}"
    async with Worker(
        client, task_queue=queue, workflows=[GreetingWorkflow], activities=[greet], workflow_runner=runner
    ):
        result = await client.execute_workflow(
            GreetingWorkflow.run, "you", id=f"{queue}-greeting", task_queue=queue
        )
    return result, seen


async def test_payloads_get_the_contexts_the_stock_sandbox_gives(env: WorkflowEnvironment) -> None:
    # The worker's runner answers the codec's context questions without entering the sandbox:
    # every payload must still get exactly the context the stock sandbox gives it.
    stock = await _contexts(env, SandboxedWorkflowRunner())
    ours = await _contexts(env, CompiledSandboxRunner())
    assert stock[0] == ours[0] == "hello hello you"
    assert ours[1] == stock[1]
    kinds = {entry[1] for entry in ours[1] if len(entry) > 1}
    assert {"activity", "workflow"} <= kinds, ours[1]


class RecordingDriver(StorageDriver):
    """External payload storage in memory that records the target of every payload it stores."""

    def __init__(self, seen: list[tuple[str, ...]]) -> None:
        self.seen = seen
        self.kept: dict[str, Payload] = {}

    def name(self) -> str:
        return "recording"

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        claims = []
        for payload in payloads:
            key = str(len(self.kept))
            self.kept[key] = payload
            target = context.target
            ident = target.id.rsplit("-", 1)[-1] if target is not None and target.id else ""
            kind = type(target).__name__ if target is not None else "none"
            self.seen.append((kind, ident, (target.type or "") if target is not None else ""))
            claims.append(StorageDriverClaim(claim_data={"key": key}))
        return claims

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        return [self.kept[claim.claim_data["key"]] for claim in claims]


async def _store_targets(env: WorkflowEnvironment, runner: WorkflowRunner) -> list[tuple[str, ...]]:
    """The target of every payload stored while FamilyWorkflow runs to its end under `runner`."""
    seen: list[tuple[str, ...]] = []
    storage = ExternalStorage(drivers=[RecordingDriver(seen)], payload_size_threshold=0)
    client = Client(
        env.client.service_client,
        namespace=env.client.namespace,
        data_converter=DataConverter(external_storage=storage),
    )
    queue = f"runner-{uuid.uuid4()}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[FamilyWorkflow, EchoWorkflow],
        activities=[greet],
        workflow_runner=runner,
    ):
        await client.execute_workflow(FamilyWorkflow.run, "you", id=f"{queue}-family", task_queue=queue)
    return seen


async def test_stored_payloads_get_the_targets_the_stock_sandbox_gives(env: WorkflowEnvironment) -> None:
    # External payload storage asks each workflow instance for a store context too; the worker's
    # runner answers without entering the sandbox, and must answer as the stock sandbox does.
    stock = await _store_targets(env, SandboxedWorkflowRunner())
    ours = await _store_targets(env, CompiledSandboxRunner())
    assert ours == stock
    # The child's start input goes to the child, the rest to the workflow that sent it.
    assert ("StorageDriverWorkflowInfo", "echo", "EchoWorkflow") in ours, ours
    assert ("StorageDriverWorkflowInfo", "family", "FamilyWorkflow") in ours, ours


@pytest.mark.parametrize("name", ["local_escalation_ladder", "escalation_ladder", "transferred"])
async def test_recorded_histories_replay_on_the_workers_runner(name: str) -> None:
    # As the worker rebuilds an evicted referral: its runner, its data converter (the codec).
    history = WorkflowHistory.from_json(name, (ROOT / "tests" / "histories" / f"{name}.json").read_text())
    replayer = Replayer(
        workflows=[ReferralWorkflow],
        data_converter=data_converter(encryption_key=None, secret="s" * 40),
        workflow_runner=CompiledSandboxRunner(),
    )
    result = await replayer.replay_workflow(history)
    assert result.replay_failure is None


VERSIONED_WORKFLOW = """
from temporalio import workflow


@workflow.defn
class VersionedWorkflow:
    @workflow.run
    async def run(self) -> str:
        return "{version}"
"""


def _versioned_package(root: Path, version: str) -> ModuleType:
    """A fresh package on sys.path whose workflow answers `version`, imported (as a worker does)."""
    package = f"rt_versioned_{uuid.uuid4().hex[:8]}"
    (root / package).mkdir()
    (root / package / "__init__.py").write_text("")
    (root / package / "flow.py").write_text(VERSIONED_WORKFLOW.format(version=version))
    return importlib.import_module(f"{package}.flow")


def _rewrite(module: ModuleType, version: str) -> None:
    """The module's file on disk changed (a deployment in progress), newer by a few seconds."""
    path = Path(str(module.__file__))
    path.write_text(VERSIONED_WORKFLOW.format(version=version))
    later = path.stat().st_mtime + 5
    os.utime(path, (later, later))
    shutil.rmtree(path.parent / "__pycache__", ignore_errors=True)


async def _run_versioned(env: WorkflowEnvironment, module: ModuleType, runner: WorkflowRunner) -> list[str]:
    """Run the module's workflow twice, its source rewritten on disk in between; every instance is
    built again (no cache), as after an eviction."""
    cls = module.VersionedWorkflow
    queue = f"runner-{uuid.uuid4()}"
    results = []
    async with Worker(
        env.client, task_queue=queue, workflows=[cls], workflow_runner=runner, max_cached_workflows=0
    ):
        results.append(await env.client.execute_workflow(cls.run, id=f"{queue}-1", task_queue=queue))
        _rewrite(module, "v2")
        results.append(await env.client.execute_workflow(cls.run, id=f"{queue}-2", task_queue=queue))
    return results


async def test_the_worker_runs_the_workflow_code_it_started_with(
    env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    # The stock sandbox imports the workflow's module from disk again for every instance: the
    # second run executes the rewritten file beside the worker's own copy of the class.
    stock = _versioned_package(tmp_path, "v1")
    assert await _run_versioned(env, stock, SandboxedWorkflowRunner()) == ["v1", "v2"]
    # The worker's runner rebuilds every instance from the code it first read.
    ours = _versioned_package(tmp_path, "v1")
    assert await _run_versioned(env, ours, CompiledSandboxRunner()) == ["v1", "v1"]
    assert str(Path(str(ours.__file__))) in FirstReadSource.codes


def test_the_first_read_source_answers_only_inside_the_sandbox() -> None:
    # Outside the sandbox (the worker's own imports, pytest's, anyone's) modules load as usual.
    finder = FirstReadSource()
    finder.packages.add("workflows")
    assert finder.find_spec("workflows.referral", None) is None


def test_workflow_annotations_are_evaluated_at_definition() -> None:
    """Not postponed (no `from __future__ import annotations`): the sandbox executes the module
    for every workflow instance, and string annotations cost temporalio a get_type_hints
    compilation each time."""
    from models.payloads import AcknowledgeInput, EmailResult
    from workflows.referral import ReferralWorkflow
    from workflows.referral_emails import ReferralEmails

    assert ReferralWorkflow.acknowledge.__annotations__["input"] is AcknowledgeInput
    assert ReferralEmails._record_email.__annotations__["result"] is EmailResult

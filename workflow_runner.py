"""Temporal's workflow sandbox, with two of its per-call costs taken out.

The sandbox (`temporalio.worker.workflow_sandbox`) enters a workflow's isolated module world by
`exec`-ing a short source string, with its importer applied (builtins and `sys.modules` swapped
in and out): once to build each workflow instance, once per activation, and once for every
payload the payload codec encodes or decodes, to ask the instance for the payload's
serialisation context. `exec` of a string compiles it each time (about 10 µs), and the codec's
question comes hundreds of times for each workflow rebuilt from its history, which is most of
the worker's work in an escalation storm larger than its cache (BENCHMARKS.md).

`CompiledSandboxRunner` is the same sandbox, with the same restrictions and isolation. Its
instances hand `exec` a code object compiled once per source string, and answer the codec's
question by calling the SDK's own method directly: it only reads the workflow's info and
pending commands, so entering the sandbox for it guards nothing. `python -m bench.rebuild`
measures a rebuild's CPU on both runners. The runner reaches into one private name of the SDK
(`_runner._Instance`); if an SDK upgrade removes it, the worker logs a warning and runs the
stock sandbox, and `tests/unit/test_workflow_runner.py` fails, as it does if a payload's
context ever differs from the stock sandbox's.
"""

from __future__ import annotations

import dataclasses
import functools
from types import CodeType
from typing import Any

import structlog
from temporalio.converter import SerializationContext
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import _runner as sandbox_runner

log = structlog.get_logger(__name__)

_SandboxInstance: Any = getattr(sandbox_runner, "_Instance", None)
#: Whether this SDK has the method the runner wraps (else the stock sandbox runs unchanged).
SUPPORTED = _SandboxInstance is not None and callable(getattr(_SandboxInstance, "_run_code", None))


@functools.lru_cache(maxsize=256)
def compiled(source: str) -> CodeType:
    """`source` compiled as `exec` would compile it (the same "<string>" file name)."""
    return compile(source, "<string>", "exec")


if SUPPORTED:

    class _CompiledInstance(_SandboxInstance):  # type: ignore[misc]
        """A sandboxed workflow instance that `exec`s compiled code objects."""

        def _run_code(self, code: str, **extra_globals: Any) -> None:
            super()._run_code(compiled(code), **extra_globals)

        def get_serialization_context(self, command_info: Any) -> SerializationContext | None:
            """The context the payload codec gets for one payload, without entering the sandbox.

            The stock instance runs this through `_run_code`, applying the sandbox's importer
            (builtins and `sys.modules` swapped in and out) for every payload of every
            activation. The method it reaches is the SDK's own (`temporalio` passes through
            the sandbox) and only reads the workflow's info and pending commands: no import,
            no user code, nothing the sandbox restricts.
            """
            in_sandbox = self.globals_and_locals.get("__temporal_in_sandbox")
            if in_sandbox is None:  # an SDK that keeps its instance elsewhere: the stock way
                stock: SerializationContext | None = super().get_serialization_context(command_info)
                return stock
            context: SerializationContext | None = in_sandbox.get_serialization_context(command_info)
            return context


@dataclasses.dataclass(frozen=True)
class CompiledSandboxRunner(SandboxedWorkflowRunner):
    """`SandboxedWorkflowRunner` whose instances compile the sandbox's glue code once and answer
    the codec's context question outside the sandbox."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        """Implements `WorkflowRunner.create_instance`."""
        if not SUPPORTED:
            return super().create_instance(det)
        instance: WorkflowInstance = _CompiledInstance(det, self.runner_class, self.restrictions)
        return instance


def workflow_runner() -> SandboxedWorkflowRunner:
    """The worker's workflow runner: the compiled-glue sandbox, or the stock one if unsupported."""
    if not SUPPORTED:
        log.warning("worker.sandbox_stock", reason="temporalio's sandbox has no _Instance._run_code")
        return SandboxedWorkflowRunner()
    return CompiledSandboxRunner()

"""Temporal's workflow sandbox, with its glue code compiled once rather than at every call.

The sandbox (`temporalio.worker.workflow_sandbox`) enters a workflow's isolated module world by
`exec`-ing a short source string: once to build each workflow instance, once per activation,
and once for every payload it encodes or decodes through the payload codec (to look up the
payload's serialisation context). `exec` of a string compiles it every time, about 10 µs, and
the worker calls it hundreds of times for each escalation it sends after an eviction: py-spy
put 11.5% of the worker's CPU in that compile during a catch-up burst (BENCHMARKS.md).

`CompiledSandboxRunner` is the same sandbox, with the same restrictions and the same isolation,
whose instances hand `exec` an already-compiled code object for each of those few strings. Only
`_run_code`'s argument changes: the SDK's own method still does the rest. It reaches into one
private name of the SDK (`_runner._Instance`); if an SDK upgrade removes it, the worker logs a
warning and runs the stock sandbox, and `tests/unit/test_workflow_runner.py` fails.
"""

from __future__ import annotations

import dataclasses
import functools
from types import CodeType
from typing import Any

import structlog
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


@dataclasses.dataclass(frozen=True)
class CompiledSandboxRunner(SandboxedWorkflowRunner):
    """`SandboxedWorkflowRunner` whose instances compile the sandbox's glue code once."""

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

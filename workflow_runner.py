"""Temporal's workflow sandbox, with its per-call costs taken out.

The sandbox (`temporalio.worker.workflow_sandbox`) enters a workflow's isolated module world by
`exec`-ing a short source string, with its importer applied (builtins and `sys.modules` swapped
in and out): once to build each workflow instance, once per activation, and once for every
payload the payload codec encodes or decodes, to ask the instance for the payload's
serialisation context. `exec` of a string compiles it each time (about 10 µs), and the codec's
question comes hundreds of times for each workflow rebuilt from its history, which is most of
the worker's work in an escalation storm larger than its cache (BENCHMARKS.md).

`CompiledSandboxRunner` is the same sandbox, with the same restrictions and isolation. Its
instances hand `exec` a code object compiled once per source string, and answer the codec's
question, and the like question of external payload storage (temporalio 1.35 asks it for every
payload sequence, storage configured or not), by calling the SDK's own methods directly: they
only read the workflow's info and pending commands, so entering the sandbox guards nothing.
And the sandbox, which imports a workflow's module again for every instance, gets the module's
code as the worker first read it (`FirstReadSource`), not from disk each time: the worker runs
the workflow code it started with, even if the files change under it (a deployment in
progress), and skips reading and unmarshalling the module for every workflow it rebuilds.
`python -m bench.rebuild` measures a rebuild's CPU on both runners. The runner reaches into one
private name of the SDK (`_runner._Instance`); if an SDK upgrade removes it, the worker logs a
warning and runs the stock sandbox, and `tests/unit/test_workflow_runner.py` fails, as it does if
a payload's codec or storage context ever differs from the stock sandbox's.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import CodeType, ModuleType
from typing import Any

import structlog
from temporalio import workflow
from temporalio.converter import SerializationContext
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import _importer as sandbox_importer
from temporalio.worker.workflow_sandbox import _runner as sandbox_runner

log = structlog.get_logger(__name__)

_SandboxInstance: Any = getattr(sandbox_runner, "_Instance", None)
#: Whether this SDK has the method the runner wraps (else the stock sandbox runs unchanged).
SUPPORTED = _SandboxInstance is not None and callable(getattr(_SandboxInstance, "_run_code", None))


@functools.lru_cache(maxsize=256)
def compiled(source: str) -> CodeType:
    """`source` compiled as `exec` would compile it (the same "<string>" file name)."""
    return compile(source, "<string>", "exec")


#: The sandbox's importer while it imports a workflow's modules (None outside the sandbox).
_current_importer = getattr(getattr(sandbox_importer, "Importer", None), "current_importer", None)


def _in_sandbox() -> bool:
    """Whether the sandbox is importing (always True with an SDK that does not say)."""
    return _current_importer is None or _current_importer() is not None


class _FirstReadLoader(importlib.machinery.SourceFileLoader):
    """A module's loader that hands out the code object first read from its file."""

    def get_code(self, fullname: str) -> CodeType:
        """The module's code as first read by this process (one per file path)."""
        code = FirstReadSource.codes.get(self.path)
        if code is None:
            read = super().get_code(fullname)
            if read is None:  # a source loader always has code; the base class's type says may not
                raise ImportError(f"no code for {fullname}", name=fullname)
            code = FirstReadSource.codes.setdefault(self.path, read)
        return code


class FirstReadSource(importlib.abc.MetaPathFinder):
    """Finds modules of the workflows' packages as Python does, loading each from its first code.

    One instance sits at the front of `sys.meta_path` once a `CompiledSandboxRunner` has prepared
    a workflow; it answers only inside the sandbox, only for the packages of the workflows
    prepared, and only for plain source files: anything else is found and loaded as usual.
    """

    #: Code objects by source path, shared by every import of the process.
    codes: dict[str, CodeType] = {}

    def __init__(self) -> None:
        self.packages: set[str] = set()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """The module's usual spec, with a first-read loader for a plain source file."""
        if fullname.partition(".")[0] not in self.packages or not _in_sandbox():
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and type(spec.loader) is importlib.machinery.SourceFileLoader:
            spec.loader = _FirstReadLoader(spec.loader.name, spec.loader.path)
        return spec

    @classmethod
    def serve(cls, module: str) -> None:
        """Serve the package of `module` (a workflow class's) from first-read code."""
        finder = next((f for f in sys.meta_path if isinstance(f, cls)), None)
        if finder is None:
            finder = cls()
            sys.meta_path.insert(0, finder)
        package = module.partition(".")[0]
        if package not in {"__main__", "__temporal_main__"}:
            finder.packages.add(package)


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

        def get_external_store_context(self, command_info: Any) -> Any:
            """The external-storage context of a payload, likewise without entering the sandbox.

            The SDK asks it for every payload sequence of every completion it encodes, external
            storage configured or not (a `StorageDriverStoreContext`: the workflow's identity, or
            the target of a child workflow or external signal); the stock instance enters the
            sandbox for it as for the codec's context, and the SDK's method reads as little.
            """
            in_sandbox = self.globals_and_locals.get("__temporal_in_sandbox")
            if in_sandbox is None:
                return super().get_external_store_context(command_info)
            return in_sandbox.get_external_store_context(command_info)


@dataclasses.dataclass(frozen=True)
class CompiledSandboxRunner(SandboxedWorkflowRunner):
    """`SandboxedWorkflowRunner` whose instances compile the sandbox's glue code once and answer
    the codec's context question outside the sandbox."""

    def prepare_workflow(self, defn: workflow._Definition) -> None:
        """Implements `WorkflowRunner.prepare_workflow`: the workflow's package is served from
        first-read code from now on (the stock runner's check follows, its first import)."""
        FirstReadSource.serve(defn.cls.__module__)
        super().prepare_workflow(defn)

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

"""Benchmark: the worker's CPU to rebuild a referral workflow from its history, by workflow runner.

    .venv/bin/python -m bench.rebuild [--replays 100] [--rounds 5] [--history local_escalation_ladder]

A workflow evicted from the worker's cache is rebuilt from its history the next time it has
work: a new sandboxed instance (the workflow's modules executed again) and every activation of
its history replayed. In an escalation storm larger than the cache that is most of the
worker's CPU (BENCHMARKS.md). This replays a recorded history (`tests/histories/`, 119 events
for the escalation ladder) `--replays` times a round with Temporal's `Replayer`, through the
product's data converter (its payload codec, as in the worker), as process CPU, interleaving
three runners over `--rounds` rounds: the stock `SandboxedWorkflowRunner`, the worker's
`CompiledSandboxRunner` (workflow_runner.py) and, for reference only, the unsandboxed runner
the worker does not use. The sandbox re-imports `workflows/` for each rebuild, so their
bytecode is written first, as an installed package has it (PYTHONDONTWRITEBYTECODE or not).
Prints the median and minimum per rebuild for each, and the ratios.
The recorded payloads are not encrypted, so the codec passes them through: the AES-GCM
decryption a real history also pays is left out, the same for every runner.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

import workflows
from codec import data_converter
from workflow_runner import CompiledSandboxRunner, compiled
from workflows.referral import ReferralWorkflow

HISTORIES = Path(__file__).resolve().parent.parent / "tests" / "histories"
RUNNERS: dict[str, WorkflowRunner] = {
    "stock sandbox": SandboxedWorkflowRunner(),
    "compiled sandbox (the worker's)": CompiledSandboxRunner(),
    "no sandbox (reference only)": UnsandboxedWorkflowRunner(),
}


async def replay_round(history: WorkflowHistory, runner: WorkflowRunner, replays: int) -> float:
    """Process CPU (ms) per replay of `history`, `replays` times through one replayer."""
    replayer = Replayer(
        workflows=[ReferralWorkflow],
        data_converter=data_converter(encryption_key=None, secret="bench-rebuild-" + "s" * 32),
        workflow_runner=runner,
    )

    async def histories() -> AsyncIterator[WorkflowHistory]:
        for n in range(replays):
            yield WorkflowHistory(f"{history.workflow_id}-{n}", history.events)

    started = time.process_time()
    async with replayer.workflow_replay_iterator(histories()) as results:
        async for result in results:
            if result.replay_failure is not None:
                raise result.replay_failure
    return (time.process_time() - started) / replays * 1000


async def run(args: argparse.Namespace) -> None:
    compileall.compile_dir(Path(workflows.__file__).parent, quiet=1)
    path = HISTORIES / f"{args.history}.json"
    history = WorkflowHistory.from_json(args.history, path.read_text(encoding="utf-8"))
    print(f"history: {path.name}, {len(history.events)} events; {args.replays} replays a round")
    # One unmeasured round each: imports, first compilations.
    for runner in RUNNERS.values():
        await replay_round(history, runner, 5)
    compiled.cache_clear()
    times: dict[str, list[float]] = {name: [] for name in RUNNERS}
    for _ in range(args.rounds):
        for name, runner in RUNNERS.items():
            times[name].append(await replay_round(history, runner, args.replays))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"  {name}: median {medians[name]:.2f} ms a rebuild (min {min(values):.2f})")
    info = compiled.cache_info()
    print(f"  compiled glue: {info.hits} calls, {info.misses} compilations")
    stock, ours = medians["stock sandbox"], medians["compiled sandbox (the worker's)"]
    print(
        f"RESULT rebuild: {ours:.2f} ms CPU a rebuild on the worker's sandbox vs {stock:.2f} ms on the "
        f"stock sandbox = {100 * ours / stock:.0f}% "
        f"(no sandbox {medians['no sandbox (reference only)']:.2f} ms)"
    )


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replays", type=int, default=100, help="replays a round (default 100)")
    p.add_argument("--rounds", type=int, default=5, help="rounds, the runners interleaved (default 5)")
    p.add_argument(
        "--history",
        default="local_escalation_ladder",
        choices=sorted(p.stem for p in HISTORIES.glob("*.json")),
        help="recorded history to replay (default: the escalation ladder)",
    )
    args = p.parse_args(argv)
    print(f"command: .venv/bin/python -m bench.rebuild {' '.join(argv)}".rstrip(), flush=True)
    started = time.monotonic()
    asyncio.run(run(args))
    print(f"bench.rebuild took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])

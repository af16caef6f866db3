"""Raw-Temporal baselines: trivial workflows and a worker process, no product code at all.

    .venv/bin/python -m bench.raw --address 127.0.0.1:7233 --task-queue raw [--expect N]

The worker runs in its own process (as `referrals worker` does), with the default data
converter (no encryption, no pydantic) and the product worker's workflow cache size. With
`--expect N` it exits after N no-op activities and prints one JSON line with the wall-clock
time of the first and the last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime, timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

#: As worker.py's build_worker, so cache effects are the same on both sides.
MAX_CACHED_WORKFLOWS = 10_000


@workflow.defn
class TrivialWorkflow:
    """Starts and completes: the cheapest workflow the server can run."""

    @workflow.run
    async def run(self, name: str) -> str:
        return name


@workflow.defn
class ShapeWorkflow:
    """The product's intake shape with no product code: update-with-start, two activities, park."""

    def __init__(self) -> None:
        self._done = False
        self._ready = False

    @workflow.run
    async def run(self, name: str) -> None:
        for _ in range(2):  # plan_handoff and project_referral in the product
            await workflow.execute_activity(noop, name, start_to_close_timeout=timedelta(seconds=30))
        self._ready = True
        await workflow.wait_condition(lambda: self._done)

    @workflow.update
    async def submit(self, name: str) -> str:
        await workflow.wait_condition(lambda: self._ready)
        return name

    @workflow.signal
    def finish(self) -> None:
        self._done = True


@workflow.defn
class ParkedWorkflow:
    """Waits for an Update; the raw Update round-trip baseline."""

    def __init__(self) -> None:
        self._done = False

    @workflow.run
    async def run(self, name: str) -> None:
        await workflow.wait_condition(lambda: self._done)

    @workflow.update
    async def acknowledge(self, record_id: str) -> str:
        self._done = True
        return record_id

    @workflow.update
    async def acknowledge_projected(self, record_id: str) -> str:
        """The product's shape: the Update returns after one activity (the SQL projection)."""
        self._done = True
        await workflow.execute_activity(noop, record_id, start_to_close_timeout=timedelta(seconds=30))
        return record_id


@workflow.defn
class TimerWorkflow:
    """Sleeps until an absolute instant, then runs one no-op activity: the timer-storm baseline."""

    @workflow.run
    async def run(self, fire_at: str) -> None:
        left = datetime.fromisoformat(fire_at) - workflow.now()
        if left > timedelta(0):
            await workflow.sleep(left)
        await workflow.execute_activity(fired, fire_at, start_to_close_timeout=timedelta(seconds=30))


@activity.defn
async def noop(name: str) -> str:
    return name


class _Counter:
    expect = 0
    count = 0
    first = 0.0
    last = 0.0
    done = asyncio.Event()


@activity.defn
async def fired(fire_at: str) -> None:
    now = time.time()
    _Counter.count += 1
    _Counter.first = _Counter.first or now
    _Counter.last = now
    if _Counter.expect and _Counter.count >= _Counter.expect:
        _Counter.done.set()


WORKFLOWS = [TrivialWorkflow, ShapeWorkflow, ParkedWorkflow, TimerWorkflow]
ACTIVITIES = [noop, fired]


async def run_worker(address: str, task_queue: str, expect: int) -> None:
    client = await Client.connect(address)
    _Counter.expect = expect
    _Counter.done = asyncio.Event()
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=ACTIVITIES,
        max_cached_workflows=MAX_CACHED_WORKFLOWS,
    )
    async with worker:
        print("raw.worker.started", flush=True)
        if expect:
            await _Counter.done.wait()
            print(
                json.dumps({"count": _Counter.count, "first": _Counter.first, "last": _Counter.last}),
                flush=True,
            )
        else:
            await asyncio.Event().wait()


def fire_at_text(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--expect", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(run_worker(args.address, args.task_queue, args.expect))


if __name__ == "__main__":
    main(sys.argv[1:])

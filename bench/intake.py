"""Benchmark: intake through `POST /api/v1/referrals` against raw `start_workflow`, same server, same run.

    .venv/bin/python -m bench.intake [--quick] [--referrals 2000] [--clients 32] [--workers 1] [--apis 1]
                                     [--database postgresql|sqlite] [--no-profile] [--no-sync] [--no-async]

One Temporal dev server (the embedded default: SQLite, WAL, synchronous=FULL), a fresh read model,
`referrals worker` and `referrals api` processes. Concurrent HTTP clients submit referrals (each one
an update-with-start that returns once the workflow has planned its first hand-off and projected it
into SQL). The baselines, on another task queue of the same server with a bare worker process:
`client.start_workflow` of a trivial workflow (the issue's baseline, measured before and after the
product), and update-with-start of a workflow with the product's shape (two no-op activities before
the Update returns). Then the same load with `Prefer: respond-async`, answered 202 as soon as
Temporal holds each referral, timed also until the last is planned and listed. Target: product
>= 70% of raw start_workflow. Also the API process's RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import Any

from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from bench import harness
from bench.raw import ShapeWorkflow, TrivialWorkflow


async def raw_starts(client: Client, task_queue: str, count: int, concurrency: int) -> harness.LoadResult:
    """`start_workflow` of a trivial workflow, `concurrency` in flight."""
    prefix = f"raw-start-{uuid.uuid4().hex[:6]}"

    async def call(n: int) -> str:
        await client.start_workflow(TrivialWorkflow.run, "x", id=f"{prefix}-{n}", task_queue=task_queue)
        return "started"

    return await harness.drive(count, concurrency, call)


async def raw_finished(client: Client, task_queue: str, *, within: float = 600) -> float:
    """Seconds until no trivial workflow on `task_queue` is still running (started, not completed).

    `raw_starts` times the starts alone: the raw worker completes the workflows behind them, and
    that work must be over before the product is measured, or the product pays for it.
    """
    loop = asyncio.get_running_loop()
    began = loop.time()
    query = f"TaskQueue = '{task_queue}' AND WorkflowType = 'TrivialWorkflow' AND ExecutionStatus = 'Running'"
    while (await client.count_workflows(query)).count:
        if loop.time() - began > within:
            raise harness.BenchError(f"raw trivial workflows still running after {within:.0f} s")
        await asyncio.sleep(0.25)
    return loop.time() - began


async def raw_shape(client: Client, task_queue: str, count: int, concurrency: int) -> harness.LoadResult:
    """Update-with-start of the product's shape (two activities, then the Update returns)."""
    prefix = f"raw-shape-{uuid.uuid4().hex[:6]}"

    async def call(n: int) -> str:
        start = WithStartWorkflowOperation(
            ShapeWorkflow.run,
            "x",
            id=f"{prefix}-{n}",
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        await client.execute_update_with_start_workflow(
            ShapeWorkflow.submit, "x", start_workflow_operation=start
        )
        return "updated"

    return await harness.drive(count, concurrency, call)


async def product_intake(
    st: harness.Stack,
    count: int,
    concurrency: int,
    *,
    profile: bool,
    label: str = "intake",
    respond_async: bool = False,
    loadgen: str = "lean",
) -> dict[str, Any]:
    """Submit `count` referrals over HTTP; figures, CPU per process and (optionally) profiles."""
    meter = st.meter()
    profiles: list[harness.Profile] = []
    estimate = count / 40 + 5  # seconds; py-spy records about the first part of the load
    if profile:
        profiles = [harness.Profile(s, min(estimate, 60), st.folder) for s in (st.apis[0], st.workers[0])]
    meter.start()
    prefix = f"{label}-{uuid.uuid4().hex[:6]}"
    result, ids = await harness.submit_referrals(
        st, count, concurrency, prefix, respond_async=respond_async, loadgen=loadgen
    )
    meter.stop()
    listed_after = None
    tail = st.meter()
    if respond_async:
        # Answered before planning: the run is over when the last one is listed with its deadline.
        tail.start()
        listed_after = await wait_listed(st, len(ids), prefix, since=result.elapsed)
        tail.stop()
    lines = [
        f"product {label}: {count} POST /api/v1/referrals ({loadgen} client), {concurrency} in flight, "
        f"{len(st.apis)} api, "
        f"{len(st.workers)} worker: {result.elapsed:.1f} s, {result.rate:.1f} referrals/s, "
        f"latency p50 {1000 * harness.median(result.latencies):.0f} ms p99 "
        f"{1000 * harness.percentile(result.latencies, 99):.0f} ms; "
        f"statuses {harness.statuses_text(result.statuses)}",
        "  " + meter.line(),
    ]
    if listed_after is not None:
        lines.append(
            f"  every one planned and listed {listed_after:.1f} s after the first POST "
            f"({len(ids) / listed_after:.1f} referrals/s end to end); after the last answer:"
        )
        lines.append("    " + tail.line())
    for prof in profiles:
        lines += ["  " + line for line in prof.summary()]
    return {"result": result, "ids": ids, "lines": lines, "cpu": meter.used}


async def wait_listed(st: harness.Stack, count: int, prefix: str, *, since: float) -> float:
    """Seconds from the first POST until `count` rows of this run are listed with a deadline."""
    loop = asyncio.get_running_loop()
    started = loop.time() - since
    query = (
        "SELECT count(*) FROM referral WHERE due_at IS NOT NULL AND upper(police_reference) LIKE "
        f"'{prefix.upper()}%'"
    )
    while True:
        listed = harness.sql(st.database_url, query)[0][0]
        if listed >= count:
            return loop.time() - started
        if loop.time() - started > 1800:
            raise harness.BenchError(f"only {listed} of {count} referrals listed after 30 minutes")
        await asyncio.sleep(0.5)


async def run(args: argparse.Namespace) -> list[str]:
    lines: list[str] = []
    async with harness.stack(workers=args.workers, apis=args.apis, database=args.database) as st:
        raw_worker = st.start_raw_worker()
        await st.wait_raw_worker(raw_worker)
        raw_client = await Client.connect(st.server.address)
        # Warm both sides: connections, imports, the workflow sandbox, the database pools.
        await harness.submit_referrals(st, 20, 4, f"warm-{uuid.uuid4().hex[:6]}", loadgen=args.loadgen)
        await raw_starts(raw_client, st.raw_task_queue, 20, 4)
        await raw_shape(raw_client, st.raw_task_queue, 20, 4)
        api_before = [a.rss_mb() for a in st.apis]

        raw_meter = st.meter()
        raw_meter.start()
        before = await raw_starts(raw_client, st.raw_task_queue, args.referrals, args.clients)
        raw_meter.stop()
        behind = await raw_finished(raw_client, st.raw_task_queue)
        product = None
        if args.sync:
            product = await product_intake(
                st, args.referrals, args.clients, profile=args.profile, loadgen=args.loadgen
            )
            await asyncio.sleep(2)
        product_async = None
        if args.respond_async:
            product_async = await product_intake(
                st,
                args.referrals,
                args.clients,
                profile=False,
                label="async",
                respond_async=True,
                loadgen=args.loadgen,
            )
            await asyncio.sleep(2)
        after = await raw_starts(raw_client, st.raw_task_queue, args.referrals, args.clients)
        shape = None
        if args.shape:
            shape = await raw_shape(raw_client, st.raw_task_queue, args.referrals, args.clients)

        raw_rate = (before.rate + after.rate) / 2
        lines += [
            f"raw start_workflow (trivial workflow), {args.referrals} starts, {args.clients} in flight: "
            f"{before.rate:.1f}/s before the product, {after.rate:.1f}/s after (mean {raw_rate:.1f}/s)",
            "  " + raw_meter.line(),
            f"  the raw worker completed the last trivial workflows {behind:.1f} s after the last start "
            "(waited for before the product runs)",
        ]
        if shape is not None:
            lines.append(
                f"raw update-with-start, the product's shape (2 no-op activities, then the Update returns): "
                f"{shape.rate:.1f}/s"
            )
        if product is not None:
            lines += product["lines"]
        if product_async is not None:
            lines += product_async["lines"]
        if product is not None:
            rate = product["result"].rate
            ok = product["result"].statuses.get(201, 0)
            versus = ""
            if shape is not None:
                versus = f"; vs raw same-shape {shape.rate:.1f}/s = {100 * rate / shape.rate:.0f}%"
            lines.append(
                f"RESULT intake: product {rate:.1f} referrals/s vs raw start_workflow {raw_rate:.1f}/s = "
                f"{100 * rate / raw_rate:.0f}% (target >= 70%: "
                f"{'met' if rate >= 0.7 * raw_rate else 'NOT met'})"
                + versus
                + f"; {ok}/{args.referrals} answered 201"
            )
        if product_async is not None:
            arate = product_async["result"].rate
            accepted = product_async["result"].statuses.get(202, 0)
            lines.append(
                f"RESULT intake, Prefer: respond-async: product {arate:.1f} referrals/s vs raw "
                f"start_workflow {raw_rate:.1f}/s = {100 * arate / raw_rate:.0f}% (target >= 70%: "
                f"{'met' if arate >= 0.7 * raw_rate else 'NOT met'}); "
                f"{accepted}/{args.referrals} answered 202"
            )
        for api, rss0 in zip(st.apis, api_before, strict=True):
            lines.append(
                f"RESULT api RSS ({api.name}): {rss0:.0f} MB before the load, {api.rss_mb():.0f} MB after, "
                f"peak (VmHWM) {api.hwm_mb():.0f} MB"
            )
        rows = harness.sql(st.database_url, "SELECT count(*), count(DISTINCT id) FROM referral")
        lines.append(f"read model: {rows[0][0]} referral rows, {rows[0][1]} distinct ids")
    return lines


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes for development (under a minute)")
    p.add_argument("--referrals", type=int, default=None, help="referrals (and raw starts); 2000, quick 200")
    p.add_argument(
        "--clients", type=int, default=32, help="concurrent HTTP clients (and raw calls in flight)"
    )
    p.add_argument(
        "--loadgen",
        choices=["lean", "httpx"],
        default="lean",
        help="HTTP load generator: lean (bench.loadgen, default) or httpx (costs about 1 ms more CPU "
        "a request on the cores the Temporal server needs)",
    )
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--apis", type=int, default=1)
    p.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    p.add_argument("--no-profile", dest="profile", action="store_false", help="do not run py-spy")
    p.add_argument("--no-shape", dest="shape", action="store_false", help="skip the same-shape baseline")
    p.add_argument(
        "--no-sync",
        dest="sync",
        action="store_false",
        help="skip the synchronous run (201 once planned and listed): respond-async only",
    )
    p.add_argument(
        "--no-async",
        dest="respond_async",
        action="store_false",
        help="skip the run with `Prefer: respond-async` (202 once Temporal holds the referral)",
    )
    return p


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    if args.referrals is None:
        args.referrals = 200 if args.quick else 2000
    harness.report("bench.intake", argv, run(args))


if __name__ == "__main__":
    main(sys.argv[1:])

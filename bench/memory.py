"""Benchmark: worker memory with 1,000 and with 10,000 parked referrals (waiting on long deadlines).

    .venv/bin/python -m bench.memory [--quick] [--parked 1000,10000] [--clients 64]
                                     [--database postgresql|sqlite] [--cache N]

Built-in policy (deadlines of working days, so nothing fires while it runs). Referrals are submitted
over HTTP to one `referrals worker`; after each size the worker's RSS (VmRSS from /proc) is read
once the load has settled. Then the worker is restarted and read again with every referral still
parked (an empty workflow cache), and once more after a short burst of new referrals.
Target: RSS at 10,000 <= 1.5x RSS at 1,000 (a bounded workflow cache: REFERRALS_WORKFLOW_CACHE,
`--cache`, else the product's default).
The raw baseline is the same measurement for a bare worker with as many parked trivial workflows.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid

from temporalio.client import Client

from bench import harness
from bench.raw import MAX_CACHED_WORKFLOWS, ParkedWorkflow
from config import Settings


async def settled_rss(service: harness.Service, seconds: float = 5.0) -> float:
    """RSS in MB after `seconds` with no new work (the last tasks and GC done)."""
    await asyncio.sleep(seconds)
    return service.rss_mb()


async def run(args: argparse.Namespace) -> list[str]:
    sizes = [int(s) for s in args.parked.split(",")]
    cache = args.cache if args.cache is not None else Settings.model_fields["workflow_cache"].default
    lines = [f"REFERRALS_WORKFLOW_CACHE = {cache:,} (max_cached_workflows of the worker)"]
    async with harness.stack(database=args.database, workflow_cache=cache) as st:
        worker = st.workers[0]
        await harness.submit_referrals(st, 20, 4, f"warm-{uuid.uuid4().hex[:6]}")
        product: dict[int, float] = {}
        product[0] = await settled_rss(worker)
        lines.append(f"product worker RSS with 20 referrals (warm): {product[0]:.0f} MB")
        done = 20
        for size in sizes:
            result, _ = await harness.submit_referrals(
                st, size - done, args.clients, f"mem{size}-{uuid.uuid4().hex[:6]}"
            )
            done = size
            product[size] = await settled_rss(worker)
            lines.append(
                f"product worker RSS with {size:,} parked referrals: {product[size]:.0f} MB "
                f"(intake {result.rate:.1f}/s, {harness.statuses_text(result.statuses)})"
            )
        worker = await st.restart_worker()
        cold = await settled_rss(worker)
        await harness.submit_referrals(st, 200, 16, f"after-{uuid.uuid4().hex[:6]}")
        cold_burst = await settled_rss(worker)
        lines.append(
            f"product worker restarted with {done:,} still parked: {cold:.0f} MB; after 200 new referrals "
            f"{cold_burst:.0f} MB"
        )

        # Raw: the same sizes of parked trivial workflows on a bare worker.
        raw_worker = st.start_raw_worker()
        await st.wait_raw_worker(raw_worker)
        client = await Client.connect(st.server.address)
        raw: dict[int, float] = {0: await settled_rss(raw_worker, 2)}
        prefix = f"raw-mem-{uuid.uuid4().hex[:6]}"
        started = 0

        async def start(n: int) -> str:
            await client.start_workflow(
                ParkedWorkflow.run, "x", id=f"{prefix}-{n}", task_queue=st.raw_task_queue
            )
            return "started"

        for size in sizes:
            await harness.drive(size - started, args.clients, lambda n, base=started: start(base + n))
            started = size
            raw[size] = await settled_rss(raw_worker)
        lines.append(
            f"raw worker (max_cached_workflows={MAX_CACHED_WORKFLOWS:,}) RSS: idle {raw[0]:.0f} MB, "
            + ", ".join(f"{s:,} parked {raw[s]:.0f} MB" for s in sizes)
        )
    small, large = sizes[0], sizes[-1]
    ratio = product[large] / product[small]
    raw_ratio = raw[large] / raw[small]
    per = (product[large] - product[small]) / (large - small) * 1024
    cached = min(small, cache) - 20
    per_cached = (product[small] - product[0]) / cached * 1024 if cached > 0 else 0.0
    lines.append(
        f"RESULT memory: worker RSS {product[small]:.0f} MB at {small:,} parked, {product[large]:.0f} MB at "
        f"{large:,} = {ratio:.2f}x (target <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'}); "
        f"about {per:.0f} KB per extra parked referral, {per_cached:.0f} KB per cached one; "
        f"raw worker {raw_ratio:.2f}x"
    )
    return lines


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes for development (under a minute)")
    p.add_argument("--parked", default=None, help="comma-separated sizes; 1000,10000, quick 100,500")
    p.add_argument("--clients", type=int, default=64, help="concurrent HTTP clients for the intake")
    p.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    p.add_argument("--cache", type=int, default=None, help="REFERRALS_WORKFLOW_CACHE (default: 1000)")
    return p


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    if args.parked is None:
        args.parked = "100,500" if args.quick else "1000,10000"
    harness.report("bench.memory", argv, run(args))


if __name__ == "__main__":
    main(sys.argv[1:])

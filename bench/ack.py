"""Benchmark: acknowledgement latency over HTTP against a raw Workflow Update round-trip, same run.

    .venv/bin/python -m bench.ack [--quick] [--acks 500] [--clients 1] [--database postgresql|sqlite]

Referrals are submitted and passed by the front door to Early Help (built-in policy: deadlines
of working days, nothing fires). Then Early Help acknowledges each one with its record id,
`POST /api/v1/referrals/{id}/acknowledgement` (a Workflow Update with a validator that returns
once the new state is projected into SQL), `--clients` at a time (1: latency without queueing).
Baseline: `execute_update` of a trivial Update on as many parked trivial workflows, on the same
server, as many at a time. The first 5% of each side are warm-up and not counted.
Target: product p99 <= 2x raw p99.

py-spy profiles the API and the worker over a further batch of acknowledgements after the timed
ones, not during them: the baseline runs without a profiler, so the product does too (py-spy's
own CPU, printed with each profile, is about 1% of a core at 50 samples a second).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import Any

from temporalio.client import Client

from bench import harness
from bench.raw import ParkedWorkflow

#: Acknowledgements made under py-spy after the timed ones (full size, --quick).
PROFILED = 300
PROFILED_QUICK = 40


async def run(args: argparse.Namespace) -> list[str]:
    n = args.acks
    warm = max(3, n // 20)
    timed = n + warm
    # Acknowledged under the profiler once the timing is done (about 50 ms each, one at a time).
    profiled = (PROFILED_QUICK if args.quick else PROFILED) if args.profile else 0
    async with harness.stack(database=args.database) as st:
        raw_worker = st.start_raw_worker()
        await st.wait_raw_worker(raw_worker)
        raw = await Client.connect(st.server.address)

        # Set-up (not timed): referrals waiting for Early Help, parked raw workflows.
        submitted, ids = await harness.submit_referrals(
            st, timed + profiled, 16, f"ack-{uuid.uuid4().hex[:6]}"
        )
        if len(ids) != timed + profiled:
            raise harness.BenchError(f"set-up intake failed: {harness.statuses_text(submitted.statuses)}")
        async with st.client("front_door") as front_door:
            decided = await harness.drive(
                len(ids),
                16,
                lambda i: _status(
                    front_door.post(f"/api/v1/referrals/{ids[i]}/decision", json={"outcome": "early_help"})
                ),
            )
        if decided.statuses.get(200) != len(ids):
            raise harness.BenchError(f"set-up decisions failed: {harness.statuses_text(decided.statuses)}")
        prefix = f"raw-parked-{uuid.uuid4().hex[:6]}"
        handles = await asyncio.gather(
            *(
                raw.start_workflow(ParkedWorkflow.run, "x", id=f"{prefix}-{i}", task_queue=st.raw_task_queue)
                for i in range(timed)
            )
        )
        await asyncio.sleep(2)  # the parked workflows' first tasks done

        # Raw first, then the product, then raw again on the second half: drift shows.
        half = timed // 2

        async def raw_call(i: int) -> str:
            await handles[i].execute_update(ParkedWorkflow.acknowledge, f"EH-{i}")
            return "ok"

        raw_a = await harness.drive(half, args.clients, raw_call)
        meter = st.meter()
        meter.start()
        async with st.client("early_help") as early_help:

            def acknowledge(i: int) -> Any:
                return _status(
                    early_help.post(
                        f"/api/v1/referrals/{ids[i]}/acknowledgement", json={"record_id": f"EH-BENCH-{i}"}
                    )
                )

            product = await harness.drive(timed, args.clients, acknowledge)
            meter.stop()
            raw_b = await harness.drive(timed - half, args.clients, lambda i: raw_call(half + i))
            profile_lines: list[str] = []
            if profiled:
                profiles = [
                    harness.Profile(s, profiled * 0.05, st.folder) for s in (st.apis[0], st.workers[0])
                ]
                await harness.drive(profiled, args.clients, lambda i: acknowledge(timed + i))
                profile_lines.append(f"profiles over {profiled} more acknowledgements, after the timing:")
                for prof in profiles:  # each py-spy done before the next baseline runs
                    profile_lines += ["  " + line for line in prof.summary()]
        shape = None
        if args.shape:
            more = await asyncio.gather(
                *(
                    raw.start_workflow(
                        ParkedWorkflow.run, "x", id=f"{prefix}-s{i}", task_queue=st.raw_task_queue
                    )
                    for i in range(n)
                )
            )
            await asyncio.sleep(2)

            async def shape_call(i: int) -> str:
                await more[i].execute_update(ParkedWorkflow.acknowledge_projected, f"EH-{i}")
                return "ok"

            shape = await harness.drive(n, args.clients, shape_call)

        raw_lat = raw_a.latencies[warm // 2 :] + raw_b.latencies[warm // 2 :]
        lat = product.latencies[warm:]
        p = {q: 1000 * harness.percentile(lat, q) for q in (50, 90, 99)}
        r = {q: 1000 * harness.percentile(raw_lat, q) for q in (50, 90, 99)}
        lines = [
            f"product POST .../acknowledgement, {len(lat)} timed, {args.clients} at a time: "
            f"p50 {p[50]:.1f} ms, p90 {p[90]:.1f} ms, p99 {p[99]:.1f} ms, max {1000 * max(lat):.1f} ms; "
            f"statuses {harness.statuses_text(product.statuses)}",
            "  " + meter.line(),
            f"raw execute_update (trivial Update on a parked workflow), {len(raw_lat)} timed: "
            f"p50 {r[50]:.1f} ms, p90 {r[90]:.1f} ms, p99 {r[99]:.1f} ms, max {1000 * max(raw_lat):.1f} ms",
        ]
        if shape is not None:
            lines.append(
                "raw execute_update returning after one no-op activity (the product's shape): "
                f"p50 {1000 * harness.median(shape.latencies):.1f} ms, "
                f"p99 {1000 * harness.percentile(shape.latencies, 99):.1f} ms"
            )
        lines += profile_lines
        lines.append(
            f"RESULT ack: product p99 {p[99]:.1f} ms vs raw p99 {r[99]:.1f} ms = {p[99] / r[99]:.1f}x "
            f"(target <= 2x: {'met' if p[99] <= 2 * r[99] else 'NOT met'}); "
            f"p50 {p[50]:.1f} vs {r[50]:.1f} ms = {p[50] / r[50]:.1f}x"
        )
        closed = harness.sql(st.database_url, "SELECT count(*) FROM referral WHERE status = 'closed'")[0][0]
        lines.append(f"read model: {closed} of {len(ids)} referrals closed")
    return lines


async def _status(request: object) -> int:
    response = await request  # type: ignore[misc]
    return int(response.status_code)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes for development (under a minute)")
    p.add_argument("--acks", type=int, default=None, help="acknowledgements timed; 500, quick 60")
    p.add_argument("--clients", type=int, default=1, help="requests in flight (1: latency without queueing)")
    p.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    p.add_argument("--no-profile", dest="profile", action="store_false", help="do not run py-spy")
    p.add_argument("--no-shape", dest="shape", action="store_false", help="skip the same-shape baseline")
    return p


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    if args.acks is None:
        args.acks = 60 if args.quick else 500
    harness.report("bench.ack", argv, run(args))


if __name__ == "__main__":
    main(sys.argv[1:])

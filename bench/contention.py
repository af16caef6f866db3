"""Benchmark: raw `start_workflow` on the dev server while other processes load the same CPUs.

    .venv/bin/python -m bench.contention [--quick] [--starts 2000] [--clients 32] [--rounds 2]
                                         [--loads 0,0.5,1,0.25+0.25]

The intake benchmark runs the product's API, worker and HTTP client on the same 2 cores as the
Temporal dev server, while the raw baseline has only a cheap gRPC client beside it. This measures
what that co-location alone costs the raw baseline: the same raw starts (trivial workflow, a bare
worker) with busy-loop processes beside the server, each taking a set share of one core (`0.5`
is a process busy half the time, `0.25+0.25` two processes a quarter each, `0` none). The loads
run in turn, `--rounds` times, and each round's trivial workflows complete before the next.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from temporalio.client import Client

from bench import harness
from bench.intake import raw_finished, raw_starts

#: A process busy for `duty` of every 10 ms: a steady share of one core, like a busy service.
HOG = """
import sys, time
duty = float(sys.argv[1])
while True:
    began = time.perf_counter()
    while time.perf_counter() - began < 0.01 * duty:
        pass
    time.sleep(0.01 * (1 - duty))
"""


def parse_load(text: str) -> list[float]:
    try:
        duties = [float(part) for part in text.split("+") if part]
    except ValueError:
        duties = [-1.0]
    if any(not 0 <= d <= 1 for d in duties):
        raise argparse.ArgumentTypeError(f"a load is a share of one core between 0 and 1: {text!r}")
    return [d for d in duties if d > 0]


def describe(duties: list[float]) -> str:
    if not duties:
        return "nothing beside it"
    return " + ".join(f"{100 * d:.0f}%" for d in duties) + f" of a core ({sum(duties):.2f} in all)"


async def run(args: argparse.Namespace) -> list[str]:
    loads = [parse_load(text) for text in args.loads.split(",")]
    rates: dict[int, list[float]] = {i: [] for i in range(len(loads))}
    lines: list[str] = []
    async with harness.stack(workers=1, apis=1, database="postgresql") as st:
        worker = st.start_raw_worker()
        await st.wait_raw_worker(worker)
        client = await Client.connect(st.server.address)
        await raw_starts(client, st.raw_task_queue, 50, 4)  # warm
        await raw_finished(client, st.raw_task_queue)
        for round_ in range(args.rounds):
            for i, duties in enumerate(loads):
                hogs = [
                    await asyncio.create_subprocess_exec(sys.executable, "-c", HOG, str(d)) for d in duties
                ]
                try:
                    meter = st.meter()
                    meter.start()
                    result = await raw_starts(client, st.raw_task_queue, args.starts, args.clients)
                    meter.stop()
                finally:
                    for hog in hogs:
                        hog.kill()
                        await hog.wait()
                await raw_finished(client, st.raw_task_queue)
                rates[i].append(result.rate)
                server = meter.used.get("temporal server", 0.0)
                lines.append(
                    f"round {round_ + 1}, {describe(duties)}: {result.rate:.1f} starts/s; server CPU "
                    f"{1000 * server / args.starts:.2f} ms a start"
                )
    base = harness.median(rates[0]) if rates[0] else 0.0
    for i, duties in enumerate(loads):
        rate = harness.median(rates[i])
        share = f" = {100 * rate / base:.0f}% of the first load's" if base and i else ""
        lines.append(f"RESULT contention: raw start_workflow with {describe(duties)}: {rate:.1f}/s{share}")
    return lines


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes for development (under a minute)")
    p.add_argument("--starts", type=int, default=None, help="raw starts for each load; 2000, quick 200")
    p.add_argument("--clients", type=int, default=32, help="starts in flight")
    p.add_argument("--rounds", type=int, default=None, help="times through the loads; 2, quick 1")
    p.add_argument(
        "--loads",
        default="0,0.5,1,0.25+0.25",
        help="comma-separated loads beside the server, each a '+'-joined list of shares of a core",
    )
    return p


def main(argv: list[str]) -> None:
    p = parser()
    args = p.parse_args(argv)
    if args.starts is None:
        args.starts = 200 if args.quick else 2000
    if args.rounds is None:
        args.rounds = 1 if args.quick else 2
    for text in args.loads.split(","):
        try:
            parse_load(text)  # refuse a bad --loads before starting anything
        except argparse.ArgumentTypeError as exc:
            p.error(f"--loads: {exc}")
    harness.report("bench.contention", argv, run(args))


if __name__ == "__main__":
    main(sys.argv[1:])

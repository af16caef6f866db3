"""Profile one process while referrals arrive with `Prefer: respond-async`: py-spy with --gil.

    .venv/bin/python -m bench.profile_intake [--referrals 2500] [--process api|worker] [--seconds 12]
                                             [--out FOLDER]

Starts the benchmark stack (bench.harness), warms it with 200 referrals, then records the chosen
process with harness.Profile (`py-spy record --gil`: only samples that hold the interpreter, so
CPU rather than waits) while `--referrals` more arrive from 32 clients. Prints the rate, each
process's CPU and the functions with the largest inclusive share; the raw stacks stay in the
folder `--out`.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections import Counter
from pathlib import Path

from bench import harness


def inclusive(path: Path, top: int = 25) -> list[str]:
    """The functions with the largest share of samples anywhere on the stack."""
    shares: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        # "name (file:line)" -> "name (file)": a function counts once however many lines it shows.
        for frame in {f.rsplit(":", 1)[0] + ")" if f.endswith(")") else f for f in stack.split(";")}:
            shares[frame] += count
    if not total:
        return ["no samples"]
    return [f"{100 * n / total:5.1f}%  {frame[:140]}" for frame, n in shares.most_common(top)]


async def run(args: argparse.Namespace) -> list[str]:
    async with harness.stack(workers=1, apis=1) as st:
        await harness.submit_referrals(st, 200, 32, f"warm-{uuid.uuid4().hex[:4]}", respond_async=True)
        target = st.apis[0] if args.process == "api" else st.workers[0]
        profile = harness.Profile(target, args.seconds, args.out)
        meter = st.meter()
        meter.start()
        load, _ = await harness.submit_referrals(
            st, args.referrals, 32, f"prof-{uuid.uuid4().hex[:4]}", respond_async=True
        )
        meter.stop()
        profile.summary()  # waits for py-spy to finish
        return [
            f"{args.referrals} respond-async referrals: {load.rate:.1f}/s; {meter.line()}",
            f"py-spy --gil of the {args.process} for {args.seconds} s ({profile.out}):",
            *("  " + line for line in inclusive(profile.out)),
        ]


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--referrals", type=int, default=2500)
    p.add_argument("--process", choices=["api", "worker"], default="api")
    p.add_argument("--seconds", type=int, default=12, help="how long py-spy records")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for the raw stacks")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not harness.PY_SPY.is_file():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    harness.report("bench.profile_intake", argv, run(args))


if __name__ == "__main__":
    main(sys.argv[1:])

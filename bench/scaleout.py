"""Benchmark: one worker and one API against two of each, one Temporal server, one PostgreSQL read model.

    .venv/bin/python -m bench.scaleout [--quick] [--referrals 2000] [--clients 64] [--rate-guess 8]

For each shape (1 worker + 1 API, then 2 workers + 2 APIs) on a fresh server and a fresh
PostgreSQL database: the intake benchmark (referrals over HTTP, spread over the APIs), then the
catch-up benchmark on the same referrals (the policy of bench.catchup makes every one of them fall
due at one instant), then every reference submitted again through the other API. Checked for
correctness, not only speed: every referral has exactly one row and one `received` event, every
resubmission answered 200 with the same id and recorded as a duplicate, every escalation email
delivered exactly once by Message-ID, every referral at escalation level 1. Prints the ratio of
2+2 to 1+1. On a 2-core machine this shows that the work is shared correctly more than speed.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import uuid
from typing import Any

from bench import harness
from bench.catchup import choose_t0, policy_for, time_catchup


def _one(url: str, query: str) -> Any:
    return harness.sql(url, query)[0][0]


async def one_shape(args: argparse.Namespace, workers: int, apis: int) -> dict[str, Any]:
    n = args.referrals
    t0 = choose_t0(n, args.rate_guess)
    lines: list[str] = [f"--- {workers} worker(s), {apis} API process(es), PostgreSQL read model"]
    problems: list[str] = []
    async with harness.stack(workers=workers, apis=apis, policy=policy_for(t0)) as st:
        meter = st.meter()
        per_process = {s.name: harness.cpu_seconds(s.pid) for s in st.alive()}
        meter.start()
        prefix = f"scale-{uuid.uuid4().hex[:6]}"
        intake, ids = await harness.submit_referrals(st, n, args.clients, prefix)
        meter.stop()
        lines += [
            f"intake: {n} referrals over {apis} API(s), {args.clients} clients: {intake.rate:.1f}/s "
            f"({intake.elapsed:.1f} s); {harness.statuses_text(intake.statuses)}",
            "  " + meter.line(),
        ]
        if intake.statuses.get(201, 0) + intake.statuses.get(202, 0) != n:
            problems.append(f"intake answered {harness.statuses_text(intake.statuses)}")
        catchup = await time_catchup(st, n, t0, profile=False)
        lines += catchup["lines"]
        if catchup["emails"] != n or catchup["twice"]:
            problems.append(
                f"{catchup['emails']} escalation emails for {n} hand-offs, {catchup['twice']} twice"
            )

        # Every reference again, each through the API that did not take it first.
        async def again(i: int) -> str:
            async with st.client("police", i + 1) as http:
                response = await http.post(
                    "/api/v1/referrals", json=harness.referral_body(f"{prefix}-{i:07d}")
                )
            same = response.status_code == 200 and response.json()["id"] in id_set
            return f"{response.status_code}{'' if same else ' (another id)'}"

        id_set = set(ids)
        resubmit = await harness.drive(min(n, args.resubmit), 16, again)
        lines.append(
            f"resubmitted {min(n, args.resubmit)} references: {harness.statuses_text(resubmit.statuses)}"
        )
        if resubmit.statuses.get("200", 0) != min(n, args.resubmit):
            problems.append(f"resubmissions answered {harness.statuses_text(resubmit.statuses)}")

        url = st.database_url
        rows, distinct = harness.sql(url, "SELECT count(*), count(DISTINCT police_reference) FROM referral")[
            0
        ]
        received = _one(url, "SELECT count(*) FROM referral_event WHERE type = 'received'")
        twice = _one(
            url,
            "SELECT count(*) FROM (SELECT referral_id FROM referral_event WHERE type = 'received' "
            "GROUP BY referral_id HAVING count(*) > 1) AS t",
        )

        async def levels() -> bool:
            return bool(_one(url, "SELECT count(*) FROM referral WHERE escalation_level = 1") >= n)

        with contextlib.suppress(harness.BenchError):  # counted and reported just below
            await harness.eventually(levels, within=60, what="escalation level 1 everywhere")
        level1 = _one(url, "SELECT count(*) FROM referral WHERE escalation_level = 1")
        duplicates = _one(url, "SELECT count(*) FROM referral_event WHERE type = 'duplicate_submission'")
        lines.append(
            f"read model: {rows} referral rows ({distinct} distinct police references), "
            f"{received} `received` events ({twice} referrals with more than one), "
            f"{duplicates} duplicate submissions recorded, {level1} at escalation level 1"
        )
        if rows != n or distinct != n or received != n or twice:
            problems.append(
                f"read model: {rows} rows, {distinct} references, {received} received, {twice} twice"
            )
        if duplicates != min(n, args.resubmit):
            problems.append(f"{duplicates} duplicate submissions recorded for {min(n, args.resubmit)}")
        if level1 != n:
            problems.append(f"{level1} of {n} referrals at escalation level 1")
        shares = {s.name: harness.cpu_seconds(s.pid) - per_process.get(s.name, 0.0) for s in st.alive()}
        lines.append(
            "CPU seconds per process over the whole run: "
            + ", ".join(f"{name} {sec:.1f}" for name, sec in sorted(shares.items()))
        )
    lines.append("correctness: " + ("OK" if not problems else "FAILED: " + "; ".join(problems)))
    return {"intake": intake.rate, "catchup": catchup["took"], "lines": lines, "ok": not problems}


async def run(args: argparse.Namespace) -> list[str]:
    one = await one_shape(args, 1, 1)
    two = await one_shape(args, 2, 2)
    return [
        *one["lines"],
        *two["lines"],
        f"RESULT scale-out: intake {one['intake']:.1f} -> {two['intake']:.1f} referrals/s "
        f"({two['intake'] / one['intake']:.2f}x); catch-up of {args.referrals} escalations "
        f"{one['catchup']:.1f} -> {two['catchup']:.1f} s ({one['catchup'] / two['catchup']:.2f}x the speed); "
        f"correctness {'OK' if one['ok'] and two['ok'] else 'FAILED'} (2 cores: both shapes share them)",
    ]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes for development (under two minutes)")
    p.add_argument(
        "--referrals", type=int, default=None, help="referrals, and hand-offs due at once; 2000, quick 150"
    )
    p.add_argument("--resubmit", type=int, default=200, help="references submitted a second time")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument(
        "--rate-guess", type=float, default=8.0, help="referrals/s of the intake (sets the instant)"
    )
    return p


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    if args.referrals is None:
        args.referrals = 150 if args.quick else 2000
    if args.quick:
        args.resubmit = min(args.resubmit, 50)
    harness.report("bench.scaleout", argv, run(args))


if __name__ == "__main__":
    main(sys.argv[1:])

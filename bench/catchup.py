"""Benchmark: thousands of hand-offs falling due at one instant, against raw timers in the same run.

    .venv/bin/python -m bench.catchup [--quick] [--handoffs 5000] [--workers 1] [--apis 1]
                                      [--database postgresql|sqlite] [--rate-guess 8] [--cache N]

The policy's working day starts at a whole minute T0 a few minutes ahead (UTC, or UTC+12 when T0
is within an hour of midnight UTC; every day a working day, no bank holidays) and every hand-off
is due "1 working second" after it opens, with one escalation step at the deadline to the team's
manager and the referrer (one email each). Every referral submitted before T0 is therefore due
at T0 + 1 s exactly. The benchmark submits them over HTTP, waits for the instant and times until
every escalation email has reached the aiosmtpd server in this process (checking each
Message-ID arrived once). Baseline, same server: as many raw workflows sleeping to one instant,
each then running one no-op activity, timed until the last activity ran. Target: product <= 2x
raw. Reports emails per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from temporalio.client import Client

from bench import harness
from bench.raw import TimerWorkflow, fire_at_text
from models import identity

TEAMS = {
    "front_door": ("Front door (MASH)", "mash"),
    "early_help": ("Early Help", "earlyhelp"),
    "social_care": ("Children's social care", "socialcare"),
    "other_agency": ("Other agency", "otheragency"),
}


def choose_t0(handoffs: int, rate_guess: float, *, start_up: float = 20.0) -> datetime:
    """The whole minute by which the intake should be over (at `rate_guess` referrals/s)."""
    now = datetime.now(UTC)
    ready = now + timedelta(seconds=start_up + handoffs / rate_guess + 10)
    t0 = ready.replace(second=0, microsecond=0) + timedelta(minutes=1)
    zone = ZoneInfo(zone_for(t0))
    if now.astimezone(zone).date() != t0.astimezone(zone).date():
        raise harness.BenchError(
            "the intake would start on the day before T0's working day: pass a higher --rate-guess"
        )
    return t0


def zone_for(t0: datetime) -> str:
    """The policy's time zone: one in which T0 is at least an hour from midnight.

    The working day runs from T0 to 23:59 local time, and the intake before T0 must fall on the
    same local day (before its working hours), or its hand-offs would open in working time.
    UTC when T0 is between 01:00 and 22:59 UTC, else UTC+12 (POSIX writes it Etc/GMT-12).
    """
    return "UTC" if 1 <= t0.hour <= 22 else "Etc/GMT-12"


def policy_for(t0: datetime) -> str:
    """Every hand-off due 1 working second after it opens; the working day starts at T0."""
    zone = zone_for(t0)
    parts = [
        "[calendar]",
        f'timezone = "{zone}"',
        f'working_hours = "{t0.astimezone(ZoneInfo(zone)):%H:%M}-23:59"',
        'working_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]',
        'bank_holidays = "none"',
        "closures = []",
        "",
    ]
    for team, (name, mailbox) in TEAMS.items():
        parts += [
            f"[teams.{team}]",
            f'name = "{name}"',
            f'email = "{mailbox}@council.example"',
            f'manager_email = "{mailbox}-manager@council.example"',
            "",
            f"[handoffs.{team}]",
            'due = "1 working second"',
            "",
            f"[[handoffs.{team}.steps]]",
            'at = "due"',
            'notify = ["team_manager", "referrer"]',
            "",
        ]
    return "\n".join(parts)


async def product_catchup(
    st: harness.Stack, handoffs: int, t0: datetime, *, clients: int, profile: bool
) -> dict[str, Any]:
    """Submit, wait for T0 + 1 s, time until every escalation email arrived; figures and lines."""
    intake, ids = await harness.submit_referrals(st, handoffs, clients, f"catchup-{uuid.uuid4().hex[:6]}")
    lines = [
        f"set-up: {handoffs} referrals submitted in {intake.elapsed:.1f} s ({intake.rate:.1f}/s; "
        f"{harness.statuses_text(intake.statuses)})"
    ]
    timed = await time_catchup(st, handoffs, t0, profile=profile)
    timed["lines"] = lines + timed["lines"]
    timed["ids"] = ids
    return timed


async def time_catchup(st: harness.Stack, handoffs: int, t0: datetime, *, profile: bool) -> dict[str, Any]:
    """Referrals already submitted: wait for T0 + 1 s, time until `handoffs` escalation emails arrived."""
    due = t0 + timedelta(seconds=1)
    lines = []
    if datetime.now(UTC) >= due:
        late = (datetime.now(UTC) - due).total_seconds()
        lines.append(
            f"  WARNING: the intake ended {late:.0f} s after the due instant: "
            "the later referrals fall due later (pass a lower --rate-guess)"
        )
    dues = harness.sql(
        st.database_url, "SELECT due_at, count(*) FROM referral GROUP BY due_at ORDER BY 2 DESC"
    )
    lines.append(
        f"  due at {due:%H:%M:%S} UTC; due instants in the read model: {len(dues)} distinct, "
        f"the most common holds {dues[0][1]}"
    )
    before = st.mailbox.count("escalation")
    await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
    meter = st.meter()
    profiles = [harness.Profile(w, 30, st.folder) for w in st.workers[:1]] if profile else []
    meter.start()
    within = max(120.0, handoffs / 5)
    try:
        await harness.eventually(
            lambda: st.mailbox.count("escalation") - before >= handoffs,
            within=within,
            what=f"{handoffs} escalation emails",
            interval=0.1,
            alive=st.alive(),
        )
    except harness.BenchError as exc:
        raise harness.BenchError(f"{exc}\n" + "\n".join(await post_mortem(st))) from exc
    meter.stop()
    escalations = [a for a in st.mailbox.snapshot() if "escalation" in a.subject.lower()]
    last = max(a.at for a in escalations)
    first = min(a.at for a in escalations)
    took = last - due.timestamp()
    counts = Counter(a.message_id for a in escalations)
    twice = sum(1 for c in counts.values() if c > 1)
    lines += [
        f"product: {len(escalations)} escalation emails, first {first - due.timestamp():.1f} s after the due "
        f"instant, last {took:.1f} s after: {len(escalations) / took:.1f} emails/s; "
        f"{len(counts)} distinct Message-IDs, {twice} delivered more than once",
        "  " + meter.line(),
    ]
    for prof in profiles:
        lines += ["  " + line for line in prof.summary()]
    await asyncio.sleep(1.0)  # late duplicates would show here
    twice = sum(1 for c in Counter(a.message_id for a in st.mailbox.snapshot()).values() if c > 1)
    return {"took": took, "emails": len(escalations), "twice": twice, "lines": lines}


async def post_mortem(st: harness.Stack, *, examples: int = 3) -> list[str]:
    """Why escalation emails are missing: the outbox's rows, the workers' warnings, a few workflows.

    Run while the stack is still up, so that a failed catch-up explains itself (lost, late, or
    stuck, and where) instead of leaving only its timeout.
    """
    url = st.database_url
    arrived = {a.message_id for a in st.mailbox.snapshot() if "escalation" in a.subject.lower()}
    lines = [f"post-mortem: {len(arrived)} distinct escalation Message-IDs at the SMTP sink"]
    rows = harness.sql(
        url,
        "SELECT status, count(*), max(attempts), sum(resends) FROM outbox_message "
        "WHERE kind = 'escalation' GROUP BY status ORDER BY status",
    )
    lines.append(
        "  outbox escalation rows by status: "
        + (", ".join(f"{s} {n} (attempts <= {a}, resends {r})" for s, n, a, r in rows) or "none")
    )
    sent = harness.sql(
        url, "SELECT message_id FROM outbox_message WHERE kind = 'escalation' AND status = 'sent'"
    )
    lines.append(f"  recorded sent but not at the sink: {sum(1 for (m,) in sent if m not in arrived)}")
    missing = harness.sql(
        url,
        "SELECT r.id, r.status, r.escalation_level, r.due_at FROM referral r WHERE NOT EXISTS "
        "(SELECT 1 FROM outbox_message o WHERE o.referral_id = r.id AND o.kind = 'escalation' "
        "AND o.status = 'sent') ORDER BY r.id",
    )
    lines.append(f"  referrals without a sent escalation: {len(missing)}")
    for service in [*st.workers, *st.apis]:
        noisy = Counter(
            line.split('"event": "', 1)[1].split('"', 1)[0]
            for line in service.stderr().splitlines()
            if '"event": "' in line and ('"level": "warning"' in line or '"level": "error"' in line)
        )
        tracebacks = service.stderr().count("Traceback")
        running = service.process is not None and service.process.poll() is None
        lines.append(
            f"  {service.name}: warnings/errors by event {dict(noisy.most_common(6)) or 'none'}; "
            f"{tracebacks} tracebacks; {'running' if running else 'EXITED'}"
        )
    client = await Client.connect(st.server.address)
    for referral_id, status, level, due_at in missing[:examples]:
        handle = client.get_workflow_handle(identity.workflow_id(referral_id))
        try:
            described = await handle.describe()
            raw = described.raw_description
            pending = [
                f"{a.activity_type.name} attempt {a.attempt} state {a.state} "
                f"last failure {a.last_failure.message[:160] if a.HasField('last_failure') else 'none'}"
                for a in raw.pending_activities
            ]
            task = raw.pending_workflow_task
            lines.append(
                f"  {referral_id}: read model {status}, level {level}, due {due_at}; workflow "
                f"{described.status.name if described.status else '?'}, history {described.history_length} "
                f"events, pending activities {pending or 'none'}, pending workflow task "
                f"{'attempt ' + str(task.attempt) if raw.HasField('pending_workflow_task') else 'none'}"
            )
        except Exception as exc:
            lines.append(f"  {referral_id}: cannot describe its workflow: {type(exc).__name__}: {exc}")
    lines.append(f"  the stack's folder is kept: {st.folder}")
    return lines


async def raw_catchup(st: harness.Stack, handoffs: int, *, clients: int) -> dict[str, Any]:
    """`handoffs` raw workflows sleeping to one instant, each then running one no-op activity."""
    worker = st.start_raw_worker(expect=handoffs, name="raw-timers")
    await st.wait_raw_worker(worker)
    client = await Client.connect(st.server.address)
    # Starts run at 70-180/s here: leave room so that every timer is set before the instant.
    fire_at = datetime.now(UTC) + timedelta(seconds=handoffs / 50 + 10)
    prefix = f"raw-timer-{uuid.uuid4().hex[:6]}"

    async def call(n: int) -> str:
        await client.start_workflow(
            TimerWorkflow.run, fire_at_text(fire_at), id=f"{prefix}-{n}", task_queue=st.raw_task_queue
        )
        return "started"

    started = await harness.drive(handoffs, clients, call)
    late = datetime.now(UTC) > fire_at
    meter = st.meter()
    await asyncio.sleep(max(0.0, (fire_at - datetime.now(UTC)).total_seconds()))
    meter.start()
    report = await harness.eventually(
        lambda: [line for line in worker.stdout().splitlines() if line.startswith("{")],
        within=max(120.0, handoffs / 5),
        what="the raw timers' activities",
        interval=0.1,
        alive=[worker],
    )
    meter.stop()
    figures = json.loads(report[-1])
    took = figures["last"] - fire_at.timestamp()
    lines = [
        f"raw: {handoffs} timer workflows started in {started.elapsed:.1f} s ({started.rate:.0f}/s)"
        + (" (WARNING: the starts ended after the instant)" if late else ""),
        f"raw: {figures['count']} no-op activities, "
        f"first {figures['first'] - fire_at.timestamp():.1f} s after the instant, "
        f"last {took:.1f} s after: {figures['count'] / took:.1f}/s",
        "  " + meter.line(),
    ]
    worker.stop()
    return {"took": took, "lines": lines}


async def run(args: argparse.Namespace) -> list[str]:
    t0 = choose_t0(args.handoffs, args.rate_guess)
    async with harness.stack(
        workers=args.workers,
        apis=args.apis,
        database=args.database,
        policy=policy_for(t0),
        workflow_cache=args.cache,
    ) as st:
        product = await product_catchup(st, args.handoffs, t0, clients=args.clients, profile=args.profile)
        raw = await raw_catchup(st, args.handoffs, clients=args.clients)
        ratio = product["took"] / raw["took"]
        return [
            *product["lines"],
            *raw["lines"],
            f"RESULT catch-up: {args.handoffs} hand-offs due at once, {args.workers} worker(s), "
            f"workflow cache {args.cache or 'default'}: "
            f"every escalation email delivered in {product['took']:.1f} s "
            f"({product['emails'] / product['took']:.1f} emails/s) "
            f"vs raw timers + no-op activity {raw['took']:.1f} s = {ratio:.1f}x "
            f"(target <= 2x: {'met' if ratio <= 2 else 'NOT met'}); duplicates: {product['twice']}",
        ]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes for development (under a minute)")
    p.add_argument("--handoffs", type=int, default=None, help="hand-offs due at once; 5000, quick 200")
    p.add_argument("--clients", type=int, default=64, help="concurrent HTTP clients for the set-up intake")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--apis", type=int, default=1)
    p.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    p.add_argument(
        "--rate-guess", type=float, default=8.0, help="referrals/s the set-up intake reaches (sets T0)"
    )
    p.add_argument("--cache", type=int, default=None, help="REFERRALS_WORKFLOW_CACHE (default: 1000)")
    p.add_argument("--no-profile", dest="profile", action="store_false", help="do not run py-spy")
    return p


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    if args.handoffs is None:
        args.handoffs = 200 if args.quick else 5000
    harness.report("bench.catchup", argv, run(args))


if __name__ == "__main__":
    main(sys.argv[1:])

"""Fill a read model with many realistic referrals (rows as the projection writes them).

Used by the dashboard and list benchmarks; never by tests. Deterministic for a given seed.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from models import identity
from models.tables import Referral, ReferralEvent

FORCES = ["Northamptonshire Police", "Cumbria Constabulary", "Kent Police", "Durham Constabulary"]
TEAMS = ["front_door", "early_help", "social_care", "other_agency"]
RISKS = ["red", "amber", "green"]


def referral_rows(count: int, *, now: datetime, seed: int = 1) -> list[dict[str, Any]]:
    """`count` referral rows: most open, some overdue, received over the last twelve weeks."""
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        force = FORCES[n % len(FORCES)]
        police_reference = f"BENCH-{n:08d}"
        rid = identity.referral_id(force, police_reference)
        received = now - timedelta(minutes=rng.randint(0, 12 * 7 * 24 * 60))
        closed = rng.random() < 0.3
        team = None if closed else rng.choice(TEAMS)
        due = None if closed else received + timedelta(hours=rng.randint(4, 24 * 6))
        rows.append(
            {
                "id": rid,
                "reference": identity.reference_for(rid),
                "force": force,
                "police_reference": police_reference,
                "fingerprint": "0" * 64,
                "status": "closed"
                if closed
                else ("awaiting_decision" if team == "front_door" else "awaiting_acknowledgement"),
                "risk": rng.choice(RISKS),
                "awaiting_team": team,
                "due_at": due,
                "escalation_level": 0 if due is None or due > now else rng.randint(1, 6),
                "received_at": received,
                "closed_at": received + timedelta(days=2) if closed else None,
                "outcome": "early_help" if closed else None,
                "record_id": f"EH-{n}" if closed else None,
                "version": 3,
                "handoffs": [],
                "submitted_by": {"user_id": "bench", "name": "Bench", "role": "police"},
                "details": None,
                "updated_at": now,
            }
        )
    return rows


def event_rows(referrals: list[dict[str, Any]], per_referral: int) -> list[dict[str, Any]]:
    """`per_referral` chronology rows for each referral."""
    out = []
    for row in referrals:
        for seq in range(1, per_referral + 1):
            out.append(
                {
                    "referral_id": row["id"],
                    "seq": seq,
                    "type": "email_sent" if seq > 2 else "received",
                    "at": row["received_at"] + timedelta(minutes=seq),
                    "actor": None,
                    "handoff_seq": 1,
                    "team": row["awaiting_team"],
                    "data": {"kind": "escalation", "step": 1, "repeat": seq},
                }
            )
    return out


async def seed(
    engine: AsyncEngine, count: int, *, events_per_referral: int = 0, batch: int = 5_000
) -> datetime:
    """Insert `count` referrals (and their events) in batches; returns the `now` they were made for."""
    now = datetime.now(UTC)
    rows = referral_rows(count, now=now)
    async with engine.begin() as conn:
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            await conn.execute(insert(Referral), chunk)
            if events_per_referral:
                await conn.execute(insert(ReferralEvent), event_rows(chunk, events_per_referral))
    return now

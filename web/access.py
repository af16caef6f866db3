"""Who may see which referral, and how much of it: one rule for the JSON API and the pages.

- police: their own force's referrals, and only their status and outcome (no child, summary,
  notes, record ids or names of staff);
- front door: every referral (one deployment serves one authority's front door);
- early_help, social_care, other_agency: the referrals that have been handed to their team;
- manager: every referral, read only, and who has read each one;
- admin: users and tokens, no referral.
A referral transferred to another authority (an `other_authority` hand-off) is seen like any
other: the front door (which transferred it and may record the other authority's
acknowledgement), managers, and the referring force (its status, and where it went); a
receiving team only when it had been handed to that team before. The other authority has no
users here: it acknowledges through the emailed link, which shows the reference and deadline only.
Reads of personal details are recorded in the access audit (models/tables.py AccessAudit).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from models import repository
from models.enums import RECEIVING_ROLES, Role, Team
from models.identity import normalise
from models.payloads import ReferralEvent
from models.schemas import HandoffRead, ReferralRead
from models.tables import Referral, User

#: Roles that see referrals at all (admin manages users only).
REFERRAL_ROLES = frozenset(Role) - {Role.ADMIN}
#: Roles that read the children's names, the summary, the concerns, the referrer and notes.
PERSONAL_DETAILS_ROLES = frozenset(
    {Role.FRONT_DOOR, Role.EARLY_HELP, Role.SOCIAL_CARE, Role.OTHER_AGENCY, Role.MANAGER}
)
#: Chronology data a police officer sees: what was decided and why, never free text.
POLICE_EVENT_DATA = frozenset({"outcome", "reason", "due_at", "authority", "authority_name"})


class Denied(StrEnum):
    """Why a user may not see a referral."""

    NOT_FOUND = "not_found"
    ROLE = "role"
    OTHER_FORCE = "other_force"
    NOT_HANDED = "not_handed"


DENIED_MESSAGES = {
    Denied.ROLE: "this role does not see referrals",
    Denied.OTHER_FORCE: "this referral belongs to another force",
    Denied.NOT_HANDED: "this referral has not been handed to your team",
}


def same_force(a: str | None, b: str) -> bool:
    """Force names compare without regard to case or spacing."""
    return a is not None and normalise(a) == normalise(b)


def scope_team(user: User) -> Team | None:
    """The team whose hand-offs bound what a receiving-team user sees (None: not bound by team)."""
    return RECEIVING_ROLES.get(Role(user.role))


def may_see(user: User, row: Referral) -> Denied | None:
    """None when `user` may see `row`, else why not."""
    role = Role(user.role)
    if role not in REFERRAL_ROLES:
        return Denied.ROLE
    if role == Role.POLICE and not same_force(user.force, row.force):
        return Denied.OTHER_FORCE
    team = scope_team(user)
    if team is not None and f" {team.value} " not in (row.handed_to or ""):
        return Denied.NOT_HANDED
    return None


async def referral_for(session: AsyncSession, user: User, referral_id: str) -> Referral | Denied:
    """The referral if this user may see it, else why not."""
    if Role(user.role) not in REFERRAL_ROLES:
        return Denied.ROLE
    if not repository.is_referral_id(referral_id):
        # Not even the shape of an id (PostgreSQL refuses some strings, e.g. with NUL, outright).
        return Denied.NOT_FOUND
    row = await repository.get_referral(session, referral_id)
    if row is None:
        return Denied.NOT_FOUND
    return may_see(user, row) or row


def sees_details(user: User) -> bool:
    """Whether this user reads personal details (children, summary, referrer, notes)."""
    return Role(user.role) in PERSONAL_DETAILS_ROLES


def sees_access_log(user: User) -> bool:
    """Managers see who has read a referral."""
    return Role(user.role) == Role.MANAGER


def redact(read: ReferralRead, user: User) -> ReferralRead:
    """What `user` may see of a referral: police get its status and outcome only."""
    if sees_details(user):
        return read
    return read.model_copy(
        update={
            "record_id": None,
            "details": None,
            "handoffs": [_bare_handoff(h) for h in read.handoffs],
        }
    )


def _bare_handoff(h: HandoffRead) -> HandoffRead:
    return h.model_copy(update={"record_id": None, "closed_by": None, "note": ""})


def visible_events(events: list[ReferralEvent], user: User) -> list[ReferralEvent]:
    """The chronology as `user` may see it: police get what happened and when, never who or notes."""
    if sees_details(user):
        return events
    return [
        e.model_copy(
            update={"actor": None, "data": {k: v for k, v in e.data.items() if k in POLICE_EVENT_DATA}}
        )
        for e in events
    ]


async def record_read(session: AsyncSession, user: User, row: Referral, *, via: str) -> None:
    """Record that `user` read `row`'s personal details (committed with the request)."""
    if not sees_details(user):
        return
    await repository.record_access(
        session,
        referral_id=row.id,
        at=datetime.now(UTC),
        user_id=user.id,
        user_name=user.name,
        user_role=user.role,
        via=via,
    )


def access_entry(row: Any) -> dict[str, Any]:
    """One access-audit row as the API shows it."""
    return {
        "at": row.at,
        "user_id": row.user_id,
        "name": row.user_name,
        "role": row.user_role,
        "via": row.via,
    }

"""Closed vocabularies shared by the API, the workflow and the read model."""

from __future__ import annotations

from enum import StrEnum


class Risk(StrEnum):
    """MASH RAG rating given by the referrer; it sets the front door's clock."""

    RED = "red"
    AMBER = "amber"
    GREEN = "green"


class Concern(StrEnum):
    """Reasons for a referral, from a fixed list so they can be counted."""

    DOMESTIC_ABUSE = "domestic_abuse"
    NEGLECT = "neglect"
    DRUGS = "drugs"
    ALCOHOL = "alcohol"
    COUNTY_LINES = "county_lines"
    CRIMINAL_EXPLOITATION = "criminal_exploitation"
    SEXUAL_EXPLOITATION = "sexual_exploitation"
    MENTAL_HEALTH = "mental_health"
    MISSING = "missing"
    PHYSICAL_ABUSE = "physical_abuse"
    EMOTIONAL_ABUSE = "emotional_abuse"
    SEXUAL_ABUSE = "sexual_abuse"
    ONLINE_SAFETY = "online_safety"
    OTHER = "other"


class Team(StrEnum):
    """A team that can be handed a referral."""

    FRONT_DOOR = "front_door"
    EARLY_HELP = "early_help"
    SOCIAL_CARE = "social_care"
    OTHER_AGENCY = "other_agency"
    #: Another local authority's front door, after a transfer (the child lives there).
    OTHER_AUTHORITY = "other_authority"


#: Teams of this authority, each with a `[teams.<team>]` section in the policy. Another
#: authority's addresses come from `[authorities.<code>]` instead.
LOCAL_TEAMS: tuple[Team, ...] = (Team.FRONT_DOOR, Team.EARLY_HELP, Team.SOCIAL_CARE, Team.OTHER_AGENCY)


class Outcome(StrEnum):
    """The front door's decision."""

    EARLY_HELP = "early_help"
    SOCIAL_CARE = "social_care"
    OTHER_AGENCY = "other_agency"
    NO_FURTHER_ACTION = "no_further_action"


class DeclineReason(StrEnum):
    """Why Early Help handed a referral back to the front door."""

    CONSENT_DECLINED = "consent_declined"
    NOT_APPROPRIATE = "not_appropriate"


class Status(StrEnum):
    """Where a referral stands, as the API reports it."""

    AWAITING_DECISION = "awaiting_decision"
    AWAITING_ACKNOWLEDGEMENT = "awaiting_acknowledgement"
    CLOSED = "closed"


class Role(StrEnum):
    """What a user may do; receiving-team roles share their team's name."""

    POLICE = "police"
    FRONT_DOOR = "front_door"
    EARLY_HELP = "early_help"
    SOCIAL_CARE = "social_care"
    OTHER_AGENCY = "other_agency"
    MANAGER = "manager"
    ADMIN = "admin"


class StepKind(StrEnum):
    """A ladder step before the deadline reminds; at or after it escalates."""

    REMINDER = "reminder"
    ESCALATION = "escalation"


class MessageKind(StrEnum):
    """What an email is for; named in its subject."""

    REMINDER = "reminder"
    ESCALATION = "escalation"
    OUTCOME = "outcome"


class EventType(StrEnum):
    """Entries in a referral's chronology."""

    RECEIVED = "received"
    DUPLICATE_SUBMISSION = "duplicate_submission"
    HANDOFF_OPENED = "handoff_opened"
    DECIDED = "decided"
    ACKNOWLEDGED = "acknowledged"
    DECLINED = "declined"
    #: The front door passed the referral to another local authority's front door.
    TRANSFERRED = "transferred"
    EMAIL_SENT = "email_sent"
    STEPS_COLLAPSED = "steps_collapsed"
    DELIVERY_FAILED = "delivery_failed"
    #: GOV.UK Notify's delivery receipt for one recipient of a message.
    DELIVERY_STATUS = "delivery_status"
    CLOSED = "closed"


#: The result of a front-door hand-off closed by a transfer to another authority.
TRANSFERRED = "transferred"

#: Which team acknowledges a hand-off opened by each front-door outcome.
OUTCOME_TEAM: dict[Outcome, Team] = {
    Outcome.EARLY_HELP: Team.EARLY_HELP,
    Outcome.SOCIAL_CARE: Team.SOCIAL_CARE,
    Outcome.OTHER_AGENCY: Team.OTHER_AGENCY,
}

#: Roles that acknowledge hand-offs to their own team.
RECEIVING_ROLES: dict[Role, Team] = {
    Role.EARLY_HELP: Team.EARLY_HELP,
    Role.SOCIAL_CARE: Team.SOCIAL_CARE,
    Role.OTHER_AGENCY: Team.OTHER_AGENCY,
}

"""HTTP request and response bodies of the JSON API (CONTRACT.md)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)

from models.enums import Concern, DeclineReason, EventType, Outcome, Risk, Status, Team
from models.payloads import (
    Actor,
    Child,
    HandoffState,
    LongText,
    Note,
    RecordId,
    ReferralDetails,
    ReferralEvent,
    ReferralState,
    Referrer,
    Text,
)


def iso_text(value: Any) -> Any:
    """Dates and instants arrive as ISO 8601 text: a number is refused, not read as epoch seconds."""
    if not isinstance(value, str) and value is not None and not isinstance(value, (date, datetime)):
        raise ValueError("give an ISO 8601 date or instant as text, e.g. 2015-03-01")
    return value


#: A date given as ISO 8601 text (JSON has no date type; 0 is not 1970-01-01).
IsoDate = Annotated[date, BeforeValidator(iso_text)]


class Body(BaseModel):
    """Request bodies refuse unknown fields."""

    model_config = ConfigDict(extra="forbid")


class ReferrerCreate(Body):
    """The referrer, with a checked email address."""

    name: Text
    email: EmailStr
    phone: Text | None = None
    collar_number: Text | None = None


class ChildCreate(Body):
    """A child: born (date of birth, not in the future) or unborn (expected date)."""

    given_name: Text | None = None
    family_name: Text
    date_of_birth: IsoDate | None = None
    expected_date: IsoDate | None = None

    @field_validator("date_of_birth")
    @classmethod
    def _not_future(cls, value: date | None) -> date | None:
        if value is not None and value > datetime.now(UTC).date():
            raise ValueError("date of birth is in the future")
        return value

    @model_validator(mode="after")
    def _born_or_unborn(self) -> ChildCreate:
        if (self.date_of_birth is None) == (self.expected_date is None):
            raise ValueError("give either date_of_birth or, for an unborn child, expected_date")
        if self.date_of_birth is not None and self.given_name is None:
            raise ValueError("given_name is required for a child who has been born")
        return self


class ReferralCreate(Body):
    """Body of POST /referrals."""

    police_reference: Text
    force: Text
    referrer: ReferrerCreate
    risk: Risk
    concerns: Annotated[list[Concern], Field(min_length=1)]
    summary: LongText
    children: Annotated[list[ChildCreate], Field(min_length=1, max_length=20)]
    consent_to_share: StrictBool

    def to_details(self) -> ReferralDetails:
        """The Temporal payload, with the same content."""
        data = self.model_dump(mode="json")
        return ReferralDetails(
            police_reference=data["police_reference"],
            force=data["force"],
            referrer=Referrer(**data["referrer"]),
            risk=self.risk,
            concerns=list(self.concerns),
            summary=data["summary"],
            children=[Child(**c) for c in data["children"]],
            consent_to_share=self.consent_to_share,
        )


class DecisionCreate(Body):
    """Body of POST /referrals/{id}/decision."""

    outcome: Outcome
    note: Note = ""


class AcknowledgementCreate(Body):
    """Body of POST /referrals/{id}/acknowledgement."""

    record_id: RecordId
    note: Note = ""


class DeclineCreate(Body):
    """Body of POST /referrals/{id}/decline."""

    reason: DeclineReason
    note: Note = ""


class TransferCreate(Body):
    """Body of POST /referrals/{id}/transfer: the code of an authority in the policy's [authorities]."""

    authority: Annotated[str, Field(min_length=1, max_length=32)]
    note: Note = ""


class HandoffRead(BaseModel):
    """One hand-off as the API shows it."""

    seq: int
    team: Team
    team_name: str
    opened_at: datetime
    due_at: datetime
    closed_at: datetime | None
    result: str | None
    record_id: str | None
    escalation_level: int
    closed_by: Actor | None
    note: str
    #: The other authority (its code) of an `other_authority` hand-off, or the one a front-door
    #: hand-off closed as "transferred" passed the referral to.
    authority: str | None = None
    authority_name: str | None = None


class EventRead(BaseModel):
    """One chronology entry."""

    seq: int
    type: EventType
    at: datetime
    actor: Actor | None
    handoff_seq: int | None
    team: Team | None
    data: dict[str, Any]


class ReferralRead(BaseModel):
    """A referral: summary, hand-offs and (for one referral) its events and details."""

    id: str
    reference: str
    status: Status
    force: str
    police_reference: str
    risk: Risk
    awaiting_team: Team | None
    due_at: datetime | None
    overdue: bool
    escalation_level: int
    received_at: datetime
    closed_at: datetime | None
    outcome: Outcome | None
    record_id: str | None
    handoffs: list[HandoffRead]
    events: list[EventRead] | None = None
    details: dict[str, Any] | None = None

    @classmethod
    def build(
        cls,
        state: ReferralState,
        *,
        now: datetime,
        events: list[ReferralEvent] | None = None,
        details: dict[str, Any] | None = None,
    ) -> ReferralRead:
        """From the workflow's state (as returned by an Update or projected into SQL)."""
        current = state.current
        return cls(
            id=state.referral_id,
            reference=state.reference,
            status=state.status,
            force=state.force,
            police_reference=state.police_reference,
            risk=state.risk,
            awaiting_team=current.team if current else None,
            due_at=current.due_at if current else None,
            overdue=bool(current and current.due_at < now),
            escalation_level=current.escalation_level if current else 0,
            received_at=state.received_at,
            closed_at=state.closed_at,
            outcome=state.outcome,
            record_id=state.record_id,
            handoffs=[_handoff(h) for h in state.handoffs],
            events=[EventRead(**e.model_dump()) for e in events] if events is not None else None,
            details=details,
        )


def _handoff(h: HandoffState) -> HandoffRead:
    return HandoffRead(**h.model_dump(include=set(HandoffRead.model_fields)))


class ReferralPage(BaseModel):
    """A page of referrals ordered by due instant; pass `next_cursor` back as `cursor`."""

    items: list[ReferralRead]
    next_cursor: str | None


class AccessRead(BaseModel):
    """One read of a referral's personal details (shown to managers)."""

    at: datetime
    user_id: str
    name: str
    role: str
    via: str


class Chronology(BaseModel):
    """Every event of a referral, in order; for managers, also who has read its personal details."""

    events: list[EventRead]
    access: list[AccessRead] | None = None

"""Temporal inputs, outputs and state: pydantic models that cross the workflow boundary.

Workflows import this module through the sandbox, so nothing here may read the clock,
the environment or the network, and no validator may depend on today's date.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import to_jsonable_python

from models.enums import (
    Concern,
    DeclineReason,
    EventType,
    MessageKind,
    Outcome,
    Risk,
    Role,
    Status,
    StepKind,
    Team,
)


def _storable(value: str) -> str:
    # PostgreSQL text columns refuse NUL: a referral holding one would be accepted by Temporal
    # and then never projected, its read-model row retried forever.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Storable = AfterValidator(_storable)
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), Storable]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5000), Storable]
Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000), Storable]
RecordId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), Storable]


class Strict(BaseModel):
    """Base for every payload: unknown fields are refused, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Actor(Strict):
    """Who did something, as recorded in history and the chronology."""

    user_id: str
    name: str
    role: Role


class Referrer(Strict):
    """The police officer (or professional) who made the referral."""

    name: Text
    email: Text
    phone: Text | None = None
    collar_number: Text | None = None


class Child(Strict):
    """A child named in a referral; unborn children carry an expected date instead."""

    given_name: Text | None = None
    family_name: Text
    date_of_birth: date | None = None
    expected_date: date | None = None


class ReferralDetails(Strict):
    """The content of a referral as submitted; personal data lives only here."""

    police_reference: Text
    force: Text
    referrer: Referrer
    risk: Risk
    concerns: Annotated[list[Concern], Field(min_length=1)]
    summary: LongText
    children: Annotated[list[Child], Field(min_length=1, max_length=20)]
    consent_to_share: bool


class ReferralInput(Strict):
    """Start input of ReferralWorkflow and argument of its `submit` update."""

    referral_id: str
    reference: str
    fingerprint: str
    received_at: datetime
    submitted_by: Actor
    details: ReferralDetails
    #: Started by `start_workflow` alone (the caller asked `Prefer: respond-async`): the start is
    #: the first submission, and no `submit` Update comes with it.
    respond_async: bool = False


class DecisionInput(Strict):
    """The front door's decision on the open front-door hand-off."""

    outcome: Outcome
    note: Note = ""
    actor: Actor


class AcknowledgeInput(Strict):
    """A receiving team records the referral in its own system."""

    team: Team
    record_id: RecordId
    note: Note = ""
    actor: Actor


class DeclineInput(Strict):
    """Early Help hands the referral back to the front door for review."""

    reason: DeclineReason
    note: Note = ""
    actor: Actor


class TransferInput(Strict):
    """The front door passes the referral to another local authority's front door."""

    #: The authority's code in the policy's [authorities] (checked by the API).
    authority: Annotated[str, StringConstraints(min_length=1, max_length=32), Storable]
    #: Its display name, recorded in the chronology as it was when the transfer was made.
    authority_name: Text
    note: Note = ""
    actor: Actor


class PlannedSend(Strict):
    """One send of one ladder step: step index, repeat number and absolute instant."""

    step: int
    repeat: int
    at: datetime
    kind: StepKind
    recipients: list[str]


class PlanHandoffInput(Strict):
    """Ask the calendar activity for a hand-off's due instant and ladder."""

    referral_id: str
    team: Team
    risk: Risk
    opened_at: datetime
    referrer_email: str
    #: The receiving authority's code, for an `other_authority` hand-off.
    authority: str | None = None


class HandoffPlan(Strict):
    """Deadline and ladder in absolute instants, fixed in history when a hand-off opens."""

    due_at: datetime
    team_name: str
    team_email: str
    sends: list[PlannedSend]
    #: Who gets a message instead when the mail server rejects its addressee: the team's
    #: manager and the policy's fallback mailbox. Empty in plans recorded before it existed.
    fallback: list[str] = []
    #: How often to ask the team's case system for a record while the hand-off is open (None:
    #: no case system configured, or a plan recorded before it existed).
    lookup_every: timedelta | None = None


class HandoffState(BaseModel):
    """One hand-off: the receiving team, its deadline and what has happened on it."""

    seq: int
    team: Team
    team_name: str
    opened_at: datetime
    due_at: datetime
    plan: list[PlannedSend]
    fallback: list[str] = []
    lookup_every: timedelta | None = None
    #: The other authority (its code in the policy) of an `other_authority` hand-off, or the one
    #: a front-door hand-off closed as "transferred" passed the referral to. None otherwise, and
    #: in every state recorded before transfers existed.
    authority: str | None = None
    authority_name: str | None = None
    done: list[tuple[int, int]] = []
    escalation_level: int = 0
    closed_at: datetime | None = None
    result: str | None = None
    record_id: str | None = None
    closed_by: Actor | None = None
    note: str = ""


class ReferralEvent(BaseModel):
    """One entry of the chronology; `seq` is dense from 1 per referral."""

    seq: int
    type: EventType
    at: datetime
    actor: Actor | None = None
    handoff_seq: int | None = None
    team: Team | None = None
    data: dict[str, str | int | list[str] | None] = {}


class ReferralState(BaseModel):
    """The workflow's state, returned by its query and updates; holds no child data."""

    referral_id: str
    reference: str
    fingerprint: str
    force: str
    police_reference: str
    risk: Risk
    status: Status
    received_at: datetime
    closed_at: datetime | None = None
    outcome: Outcome | None = None
    record_id: str | None = None
    #: The mail server permanently rejected the referrer's address (the dashboard flags it).
    referrer_undeliverable: bool = False
    handoffs: list[HandoffState] = []
    events: list[ReferralEvent] = []
    version: int = 0

    @classmethod
    def received(cls, input: ReferralInput) -> ReferralState:
        """The state a referral's workflow starts from: received, awaiting the front door."""
        details = input.details
        return cls(
            referral_id=input.referral_id,
            reference=input.reference,
            fingerprint=input.fingerprint,
            force=details.force,
            police_reference=details.police_reference,
            risk=details.risk,
            status=Status.AWAITING_DECISION,
            received_at=input.received_at,
        )

    @property
    def current(self) -> HandoffState | None:
        """The open hand-off, if any."""
        if self.handoffs and self.handoffs[-1].closed_at is None:
            return self.handoffs[-1]
        return None


class IntakeResult(BaseModel):
    """Result of `submit`: whether this call created the referral, and its state."""

    created: bool
    projected: bool
    state: ReferralState


class UpdateResult(BaseModel):
    """Result of a decision, acknowledgement or decline."""

    projected: bool
    state: ReferralState


class ProjectInput(BaseModel):
    """What the projection activity writes: the summary, new events and the details."""

    state: ReferralState
    submitted_by: Actor
    details: ReferralDetails

    @classmethod
    def frozen(
        cls,
        state: ReferralState,
        events: list[ReferralEvent],
        submitted_by: Actor,
        details: ReferralDetails,
    ) -> dict[str, Any]:
        """The projection of `state` with only `events`, as the JSON-ready data the converter
        writes (the same bytes): a copy the workflow's later changes cannot reach.

        temporalio serialises an activity's argument again when a local try backs off or falls
        back to the server, by when the state has moved on. pydantic-core makes this copy in a
        third of the time deepcopy takes, and deepcopy is dearer still inside the sandbox.
        """
        summary = state.model_copy(update={"events": events})
        data: dict[str, Any] = to_jsonable_python(
            cls(state=summary, submitted_by=submitted_by, details=details)
        )
        return data


class EmailInput(Strict):
    """One message with its idempotency key (referral, hand-off, step, repeat)."""

    key: str
    referral_id: str
    reference: str
    kind: MessageKind
    handoff_seq: int
    step: int
    repeat: int
    recipients: list[str]
    team: Team
    team_name: str
    due_at: datetime | None = None
    result: str | None = None
    record_id: str | None = None
    #: The other authority a transfer went to (outcome feedback of a transfer, the ladder of
    #: an `other_authority` hand-off); a name, never a child's details.
    authority_name: str | None = None
    #: A fallback copy: the addresses that rejected the original message (named in its body).
    undelivered_to: list[str] = []


class EmailResult(Strict):
    """What happened to a message: delivered over SMTP, kept in the dev outbox, or rejected.

    `rejected` lists the recipients the mail server refused permanently (5xx); when it holds
    every recipient, `status` is "rejected" and nobody got the message.
    """

    message_id: str
    status: str
    recipients: list[str]
    rejected: list[str] = []
    #: The SMTP reply code of the (first) permanent rejection.
    reply_code: int | None = None
    #: The channel will report each recipient's delivery later (GOV.UK Notify's receipts).
    receipts: bool = False

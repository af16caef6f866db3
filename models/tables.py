"""SQLAlchemy tables of the read model: written only by the workflow's activities (and users by the CLI)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite has no time zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Same constraint names on SQLite and PostgreSQL, so migrations can address them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with the shared naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Referral(Base):
    """One row per referral: the workflow's latest projected state plus the submitted details."""

    __tablename__ = "referral"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    reference: Mapped[str] = mapped_column(String(16), unique=True)
    force: Mapped[str] = mapped_column(String(200))
    police_reference: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    risk: Mapped[str] = mapped_column(String(8))
    awaiting_team: Mapped[str | None] = mapped_column(String(32))
    due_at: Mapped[datetime | None]
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(32))
    record_id: Mapped[str | None] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    handoffs: Mapped[list[Any]]
    submitted_by: Mapped[dict[str, Any]]
    details: Mapped[dict[str, Any] | None]
    updated_at: Mapped[datetime]
    #: Every team the referral has been handed to, space-delimited (" front_door early_help "),
    #: so a receiving team's list is "what has been handed to it" in one indexable LIKE.
    handed_to: Mapped[str] = mapped_column(String(200), default="", server_default="")
    #: When the retention purge removed the personal details (None: not purged).
    purged_at: Mapped[datetime | None]
    #: The mail server permanently rejected the referrer's address: the dashboard flags it.
    referrer_undeliverable: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (
        UniqueConstraint("force", "police_reference", name="uq_referral_force_police_reference"),
        Index("ix_referral_status_due_at", "status", "due_at", "id"),
        Index("ix_referral_awaiting_team_due_at", "awaiting_team", "due_at", "id"),
        # The dashboard: open referrals in urgency order, and its counts without reading rows.
        Index("ix_referral_due_at", "due_at", "id"),
        Index(
            "ix_referral_open_summary", "awaiting_team", "force", "risk", "due_at", "received_at", "status"
        ),
    )


class ReferralEvent(Base):
    """Append-only chronology: one row per event, keyed by referral and sequence."""

    __tablename__ = "referral_event"

    referral_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("referral.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    actor: Mapped[dict[str, Any] | None]
    handoff_seq: Mapped[int | None]
    team: Mapped[str | None] = mapped_column(String(32))
    data: Mapped[dict[str, Any]]


class OutboxMessage(Base):
    """Every email, keyed by (referral, hand-off, step, repeat) so no step is sent twice."""

    __tablename__ = "outbox_message"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(120), unique=True)
    referral_id: Mapped[str] = mapped_column(String(32), index=True)
    reference: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    recipients: Mapped[list[Any]]
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    #: Recipients the mail server refused for good: address -> SMTP reply code.
    rejected: Mapped[dict[str, Any] | None]
    #: Attempts whose outcome SMTP left unknown (died or failed after sending the data), each
    #: followed by a resend with the same Message-ID: delivered at most 1 + resends times.
    resends: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: GOV.UK Notify only: recipient -> Notify's notification id, recorded as each one is taken.
    provider_ids: Mapped[dict[str, Any] | None]
    #: GOV.UK Notify only: recipient -> the delivery statuses its callbacks reported, in order.
    provider_status: Mapped[dict[str, Any] | None]


class User(Base):
    """A person or system that may call the API."""

    __tablename__ = "app_user"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    force: Mapped[str | None] = mapped_column(String(200))
    team: Mapped[str | None] = mapped_column(String(32))
    password_hash: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime]


class ApiToken(Base):
    """An API token, stored only as its SHA-256 hash."""

    __tablename__ = "api_token"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("app_user.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class AccessAudit(Base):
    """One row per read of a referral's personal details: who, when, which referral, through what."""

    __tablename__ = "access_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # No foreign key: the audit outlives a purge of the referral's details.
    referral_id: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    user_id: Mapped[str] = mapped_column(String(32))
    user_name: Mapped[str] = mapped_column(String(200))
    user_role: Mapped[str] = mapped_column(String(32))
    via: Mapped[str] = mapped_column(String(32))

    __table_args__ = (Index("ix_access_audit_referral_id_at", "referral_id", "at"),)


class SignInFailure(Base):
    """A failed sign-in, keyed by a hash of the email, so attempts are limited across API processes."""

    __tablename__ = "sign_in_failure"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email_key: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]

    __table_args__ = (Index("ix_sign_in_failure_email_key_at", "email_key", "at"),)


class ReconcileFinding(Base):
    """A divergence between the read model and Temporal that persisted across the reconciler's two looks."""

    __tablename__ = "reconcile_finding"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    found_at: Mapped[datetime]
    #: The ReconcileWorkflow's id: a retried confirmation stores each finding of its run once.
    run_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    referral_id: Mapped[str] = mapped_column(String(32))
    workflow_id: Mapped[str] = mapped_column(String(200))
    detail: Mapped[str] = mapped_column(Text)
    repaired: Mapped[bool]

    __table_args__ = (
        UniqueConstraint("run_id", "kind", "referral_id", name="uq_reconcile_finding_run_id_kind_referral"),
        Index("ix_reconcile_finding_kind_referral_id", "kind", "referral_id"),
    )


class ReconcileRun(Base):
    """One finished reconciler run: its counts, and where the next run's scan of rows resumes."""

    __tablename__ = "reconcile_run"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(200), unique=True)
    finished_at: Mapped[datetime] = mapped_column(index=True)
    rows_examined: Mapped[int] = mapped_column(Integer)
    workflows_examined: Mapped[int] = mapped_column(Integer)
    findings: Mapped[int] = mapped_column(Integer)
    next_row_cursor: Mapped[str | None] = mapped_column(String(32))
    #: Where the next run's scan of running workflows resumes: those started before this instant.
    next_workflow_cursor: Mapped[datetime | None]


class WebhookReceipt(Base):
    """A signed request from Early Help's case system, kept a day so it cannot be replayed."""

    __tablename__ = "webhook_receipt"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: SHA-256 of the request's signature.
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    received_at: Mapped[datetime] = mapped_column(index=True)

"""access scope, access audit, sign-in limits, retention

- referral.handed_to: the teams a referral has been handed to, so each receiving team lists
  only what was handed to it (backfilled from the hand-offs already projected);
- referral.purged_at: when the retention purge removed the personal details;
- access_audit: every read of a referral's personal details;
- sign_in_failure: failed sign-ins, for rate limiting across API processes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 07:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("referral", schema=None) as batch_op:
        batch_op.add_column(sa.Column("handed_to", sa.String(length=200), server_default="", nullable=False))
        batch_op.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))

    referral = sa.table(
        "referral",
        sa.column("id", sa.String),
        sa.column("handoffs", sa.JSON),
        sa.column("handed_to", sa.String),
    )
    bind = op.get_bind()
    for row_id, handoffs in bind.execute(sa.select(referral.c.id, referral.c.handoffs)).all():
        teams = sorted({h["team"] for h in handoffs or []})
        handed = f" {' '.join(teams)} " if teams else ""
        bind.execute(sa.update(referral).where(referral.c.id == row_id).values(handed_to=handed))

    op.create_table(
        "access_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("referral_id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("user_name", sa.String(length=200), nullable=False),
        sa.Column("user_role", sa.String(length=32), nullable=False),
        sa.Column("via", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_audit")),
    )
    op.create_index("ix_access_audit_referral_id_at", "access_audit", ["referral_id", "at"], unique=False)
    op.create_table(
        "sign_in_failure",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("email_key", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sign_in_failure")),
    )
    op.create_index("ix_sign_in_failure_email_key_at", "sign_in_failure", ["email_key", "at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_sign_in_failure_email_key_at", table_name="sign_in_failure")
    op.drop_table("sign_in_failure")
    op.drop_index("ix_access_audit_referral_id_at", table_name="access_audit")
    op.drop_table("access_audit")
    with op.batch_alter_table("referral", schema=None) as batch_op:
        batch_op.drop_column("purged_at")
        batch_op.drop_column("handed_to")

"""dashboard indexes

The dashboard lists open referrals in due order (ix_referral_due_at) and counts them per team,
force and RAG rating, overdue and by age, from an index alone (ix_referral_open_summary), so
its first page stays fast over 100,000 referrals whatever the rows hold.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 05:22:17.481733
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_referral_due_at", "referral", ["due_at", "id"], unique=False)
    op.create_index(
        "ix_referral_open_summary",
        "referral",
        ["awaiting_team", "force", "risk", "due_at", "received_at", "status"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_referral_open_summary", table_name="referral")
    op.drop_index("ix_referral_due_at", table_name="referral")

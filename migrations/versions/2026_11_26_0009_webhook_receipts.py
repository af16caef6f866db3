"""webhook receipts

- webhook_receipt: each signed request of Early Help's case system
  (POST /api/v1/integrations/early-help/records), kept a day so a captured request cannot be
  replayed.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_receipt",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_receipt")),
        sa.UniqueConstraint("digest", name=op.f("uq_webhook_receipt_digest")),
    )
    op.create_index(op.f("ix_webhook_receipt_received_at"), "webhook_receipt", ["received_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_webhook_receipt_received_at"), table_name="webhook_receipt")
    op.drop_table("webhook_receipt")

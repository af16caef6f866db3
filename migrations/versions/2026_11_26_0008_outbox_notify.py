"""outbox notify

- outbox_message.provider_ids: GOV.UK Notify's notification id per recipient (Notify takes one
  recipient per request), recorded as soon as Notify answers, so a retried attempt sends only to
  the recipients not yet taken;
- outbox_message.provider_status: the delivery statuses Notify's callbacks reported per
  recipient, in order (delivered, permanent-failure, temporary-failure, technical-failure).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 11:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provider_ids", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("provider_status", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.drop_column("provider_status")
        batch_op.drop_column("provider_ids")

"""delivery failures

- referral.referrer_undeliverable: the mail server permanently rejected the referrer's
  address (set by the workflow's projection; the dashboard flags it);
- outbox_message.rejected: the recipients refused for good, address -> SMTP reply code.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("referral", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("referrer_undeliverable", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rejected", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.drop_column("rejected")
    with op.batch_alter_table("referral", schema=None) as batch_op:
        batch_op.drop_column("referrer_undeliverable")

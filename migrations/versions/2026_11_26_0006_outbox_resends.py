"""outbox resends

- outbox_message.resends: attempts whose outcome SMTP left unknown (the attempt died or failed
  after handing the message's data to the server), each followed by a resend with the same
  Message-ID. A message may have reached its recipients at most 1 + resends times.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 10:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resends", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.drop_column("resends")

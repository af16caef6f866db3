"""reconcile workflow cursor

- reconcile_run.next_workflow_cursor: where the next run's scan of running workflows resumes
  (those started before this instant), so that every running referral workflow is looked at
  over successive runs, not only the newest few thousand.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 10:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("reconcile_run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("next_workflow_cursor", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reconcile_run", schema=None) as batch_op:
        batch_op.drop_column("next_workflow_cursor")

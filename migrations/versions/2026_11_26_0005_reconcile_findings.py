"""reconciler findings and runs

- reconcile_finding: each divergence between the read model and Temporal the reconciler found
  (kind, referral, workflow, detail, whether it was repaired), unique per run;
- reconcile_run: each finished run (counts, last run instant for /metrics, where the next run's
  scan of rows resumes).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reconcile_finding",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("found_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("referral_id", sa.String(length=32), nullable=False),
        sa.Column("workflow_id", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("repaired", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconcile_finding")),
        sa.UniqueConstraint(
            "run_id", "kind", "referral_id", name="uq_reconcile_finding_run_id_kind_referral"
        ),
    )
    op.create_index(
        "ix_reconcile_finding_kind_referral_id", "reconcile_finding", ["kind", "referral_id"], unique=False
    )
    op.create_table(
        "reconcile_run",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows_examined", sa.Integer(), nullable=False),
        sa.Column("workflows_examined", sa.Integer(), nullable=False),
        sa.Column("findings", sa.Integer(), nullable=False),
        sa.Column("next_row_cursor", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconcile_run")),
        sa.UniqueConstraint("run_id", name=op.f("uq_reconcile_run_run_id")),
    )
    op.create_index(op.f("ix_reconcile_run_finished_at"), "reconcile_run", ["finished_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_reconcile_run_finished_at"), table_name="reconcile_run")
    op.drop_table("reconcile_run")
    op.drop_index("ix_reconcile_finding_kind_referral_id", table_name="reconcile_finding")
    op.drop_table("reconcile_finding")

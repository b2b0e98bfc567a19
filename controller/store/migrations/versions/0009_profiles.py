"""results get whether the record carries a profile (issue 17) and how many of its ops fell back off the target,
so the dashboard's Profile page and readiness find them by column

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No record stored before this revision has a profile (the profile phase came with it): nothing to fill.
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("profiled", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("fallback_ops", sa.Integer(), nullable=True))
    op.create_index("ix_results_profiled", "results", ["profiled", "model_id"])


def downgrade() -> None:
    op.drop_index("ix_results_profiled", table_name="results")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("fallback_ops")
        batch.drop_column("profiled")

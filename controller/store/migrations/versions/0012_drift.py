"""results get a sustained run's drift ratio (its last window's p50 over its first; issue 19), so readiness,
the dashboard and queries find sustained runs and judge their drift without opening every record

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No record stored before this revision ran in sustained mode: nothing to fill.
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("drift_ratio", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.drop_column("drift_ratio")

"""results get the energy per inference and average power of the latency phase (from the device's sensor), and
whether the job was disturbed or throttled (issue 19), so the dashboard groups and marks records by them

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No record stored before this revision measured energy or its conditions: nothing to fill.
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("energy_mj", sa.Float(), nullable=True))
        batch.add_column(sa.Column("energy_w", sa.Float(), nullable=True))
        batch.add_column(sa.Column("disturbed", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("throttled", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        for column in ("throttled", "disturbed", "energy_w", "energy_mj"):
            batch.drop_column(column)

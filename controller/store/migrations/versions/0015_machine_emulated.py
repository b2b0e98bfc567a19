"""results get the agent's machine architecture and whether its CPU was emulated (issue 21), so a sweep across
x86-64 and aarch64 agents is told apart, and views leave emulated timings out without opening every record

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No record stored before this revision says its machine or emulation: "" and false are what they carry.
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("machine", sa.String(32), nullable=False, server_default=""))
        batch.add_column(sa.Column("emulated", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.drop_column("emulated")
        batch.drop_column("machine")

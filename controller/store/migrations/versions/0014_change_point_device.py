"""change_points get the device of their series: a series is model × variant × capability × device × threads ×
throughput requests, so two kinds of hardware under one capability name (litert:cpu on a Pi and on a server) are
two series, never one whose level jumps with whichever host ran the job (issue 20)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("change_points") as batch:
        batch.add_column(sa.Column("device_name", sa.String(200), nullable=False, server_default=""))
    # a stored change point's device is its first new record's: found again, it is the same one (not a new alert)
    op.execute("UPDATE change_points SET device_name = COALESCE((SELECT r.device_name FROM results r "
               "WHERE r.job_id = change_points.after_job ORDER BY r.id DESC LIMIT 1), '')")
    op.drop_index("ix_change_points_series", table_name="change_points")
    op.create_index("ix_change_points_series", "change_points",
                    ["model_name", "variant", "capability", "device_name", "threads", "metric"])


def downgrade() -> None:
    op.drop_index("ix_change_points_series", table_name="change_points")
    op.create_index("ix_change_points_series", "change_points", ["model_name", "variant", "capability", "threads", "metric"])
    with op.batch_alter_table("change_points") as batch:
        batch.drop_column("device_name")

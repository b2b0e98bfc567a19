"""change_points: the change points `fleetbench regressions` found over each series' history, their
acknowledgements and webhook deliveries; settings: store-wide settings such as the regression webhook (issue 20)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "change_points",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("capability", sa.String(128), nullable=False),
        sa.Column("threads", sa.Integer(), nullable=False),
        sa.Column("throughput_requests", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("before_job", sa.String(64), nullable=False),
        sa.Column("after_job", sa.String(64), nullable=False),
        sa.Column("before_at", tz, nullable=False),
        sa.Column("after_at", tz, nullable=False),
        sa.Column("ratio", sa.Float(), nullable=False),
        sa.Column("p_value", sa.Float(), nullable=False),
        sa.Column("magnitude", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("before_value", sa.Float(), nullable=False),
        sa.Column("after_value", sa.Float(), nullable=False),
        sa.Column("detected_at", tz, nullable=False),
        sa.Column("acked_at", tz, nullable=True),
        sa.Column("ack_note", sa.Text(), nullable=True),
        sa.Column("notified_at", tz, nullable=True),
        sa.Column("notify_claim", tz, nullable=True),
        sa.Column("notify_error", sa.Text(), nullable=True),
        sa.UniqueConstraint("metric", "after_job", name="uq_change_points_metric_after"),
    )
    op.create_index("ix_change_points_series", "change_points", ["model_name", "variant", "capability", "threads", "metric"])
    op.create_index("ix_change_points_after_at", "change_points", ["after_at"])
    op.create_table(
        "settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("settings")
    op.drop_index("ix_change_points_after_at", table_name="change_points")
    op.drop_index("ix_change_points_series", table_name="change_points")
    op.drop_table("change_points")

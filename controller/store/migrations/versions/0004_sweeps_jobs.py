"""sweeps and jobs with persisted states; results get sweep_id, attempt fencing and dashboard indexes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("sweep_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("superseded", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_results_sweep", "results", ["sweep_id"])
    op.create_index("ix_results_device_name", "results", ["device_name"])
    op.create_index("ix_results_model_time", "results", ["model_id", "finished_at"])
    current = sa.text("superseded = false")
    op.create_index("uq_results_job_current", "results", ["job_id"], unique=True,
                    sqlite_where=current, postgresql_where=current)  # fmt: skip
    op.create_table(
        "sweeps",
        sa.Column("sweep_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("sweep_id", sa.String(32), nullable=False),
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("capability", sa.String(128), nullable=False),
        sa.Column("pinned_agent", sa.String(128), nullable=True),
        sa.Column("settings", JSON, nullable=False),
        sa.Column("spec", JSON, nullable=True),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("error_kind", sa.String(32), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("sent_attempt", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.String(128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_jobs_sweep_state", "jobs", ["sweep_id", "state"])
    op.create_index("ix_jobs_state", "jobs", ["state"])


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("sweeps")
    op.drop_index("uq_results_job_current", "results")
    op.drop_index("ix_results_model_time", "results")
    op.drop_index("ix_results_device_name", "results")
    op.drop_index("ix_results_sweep", "results")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("superseded")
        batch.drop_column("sweep_id")

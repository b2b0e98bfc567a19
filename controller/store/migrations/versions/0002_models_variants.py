"""models, datasets and variants

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("model_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("filename", sa.String(400), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "datasets",
        sa.Column("dataset_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("source_sha256", sa.String(64), nullable=False),
        sa.Column("preprocessing", JSON, nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("n_calibration", sa.Integer(), nullable=False),
        sa.Column("n_validation", sa.Integer(), nullable=False),
        sa.Column("labelled", sa.Boolean(), nullable=False),
        sa.Column("calibration", JSON, nullable=False),
        sa.Column("validation", JSON, nullable=False),
        sa.Column("sample_shape", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "variants",
        sa.Column("cache_key", sa.String(64), primary_key=True),
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("dataset_id", sa.String(64), nullable=True),
        sa.Column("artifact", JSON, nullable=False),
        sa.Column("reference", JSON, nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("conversion_s", sa.Float(), nullable=False),
        sa.Column("tool_versions", JSON, nullable=False),
        sa.Column("recipe", JSON, nullable=False),
        sa.Column("input_shape", JSON, nullable=False),
        sa.Column("input_dtype", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_variants_model", "variants", ["model_id", "variant"])


def downgrade() -> None:
    op.drop_table("variants")
    op.drop_table("datasets")
    op.drop_table("models")

"""variants get ``details``: what a conversion found out as it ran (issue 18): the layers a mixed-precision
variant kept in float, a QAT fine-tune's epochs, an accuracy-controlled quantization's reverted layers, the
integer checks, and the per-layer quantization report; data sets get their training split (``train``, an
ArtifactRef, and ``n_train``), so what a QAT variant trained on is recorded and kept by ``artifacts gc``

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Variants converted before this revision found out nothing beyond their recipe: nothing to fill.
    with op.batch_alter_table("variants") as batch:
        batch.add_column(sa.Column("details", sa.JSON(), nullable=True))
    # No data set stored before this revision had a training split.
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("train", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("n_train", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("n_train")
        batch.drop_column("train")
    with op.batch_alter_table("variants") as batch:
        batch.drop_column("details")

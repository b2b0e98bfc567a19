"""results get the precision the runtime ran, the worst output's SNR and cosine, and whether the file was the
user's own; reference_outputs: the fp32 outputs of a model on a data set, whichever variant was converted with it

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = ("precision", "fidelity_snr_db", "fidelity_cosine", "from_source")


def record_columns(record: dict) -> dict:
    """The four columns' values for a stored record (as JSON); older records have no SNR or precision."""
    fidelity = record.get("fidelity") or {}
    return dict(
        precision=str(record.get("precision", ""))[:64],
        fidelity_snr_db=fidelity.get("snr_db"),
        fidelity_cosine=fidelity.get("mean_cosine"),
        from_source=bool(record.get("from_source", False)),
    )


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("precision", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("fidelity_snr_db", sa.Float(), nullable=True))
        batch.add_column(sa.Column("fidelity_cosine", sa.Float(), nullable=True))
        batch.add_column(sa.Column("from_source", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "reference_outputs",
        sa.Column("model_id", sa.String(64), primary_key=True),
        sa.Column("dataset_id", sa.String(64), primary_key=True),
        sa.Column("artifact", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    conn = op.get_bind()
    # the references already stored beside variants, one per model and data set
    variants = sa.table("variants", sa.column("model_id", sa.String), sa.column("dataset_id", sa.String),
                        sa.column("reference", sa.JSON), sa.column("created_at", sa.DateTime))  # fmt: skip
    refs = sa.table("reference_outputs", sa.column("model_id", sa.String), sa.column("dataset_id", sa.String),
                    sa.column("artifact", sa.JSON), sa.column("created_at", sa.DateTime))  # fmt: skip
    seen = set()
    for model_id, dataset_id, ref, created in conn.execute(
        sa.select(variants.c.model_id, variants.c.dataset_id, variants.c.reference, variants.c.created_at)
        .where(variants.c.dataset_id.isnot(None)).order_by(variants.c.created_at.desc())
    ):
        if ref and (model_id, dataset_id) not in seen:
            seen.add((model_id, dataset_id))
            conn.execute(sa.insert(refs).values(model_id=model_id, dataset_id=dataset_id, artifact=ref, created_at=created))
    results = sa.table("results", sa.column("id", sa.Integer), sa.column("record", sa.JSON),
                       *(sa.column(c) for c in COLUMNS))  # fmt: skip
    last = 0
    while True:
        rows = conn.execute(
            sa.select(results.c.id, results.c.record).where(results.c.id > last).order_by(results.c.id).limit(1000)
        ).all()
        if not rows:
            break
        for row_id, record in rows:
            conn.execute(sa.update(results).where(results.c.id == row_id).values(**record_columns(record)))
        last = rows[-1][0]


def downgrade() -> None:
    op.drop_table("reference_outputs")
    with op.batch_alter_table("results") as batch:
        for c in reversed(COLUMNS):
            batch.drop_column(c)

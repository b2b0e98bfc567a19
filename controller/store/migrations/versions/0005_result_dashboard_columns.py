"""results get the columns the dashboard filters and groups on: threads, requests in flight,
fidelity, peak memory, and the sample count (read from the record, so they need no JSON work)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = ("threads", "throughput_requests", "fidelity_top1", "peak_rss_bytes", "sample_count")


def record_columns(record: dict) -> dict:
    """The five columns' values for a stored record (as JSON)."""
    throughput = record.get("throughput") or {}
    fidelity = record.get("fidelity") or {}
    return dict(
        threads=int(record.get("settings", {}).get("threads", 1)),
        throughput_requests=int(throughput.get("requests", 0)),
        fidelity_top1=fidelity.get("top1_agreement"),
        peak_rss_bytes=int(record.get("peak_rss_bytes", 0)),
        sample_count=len(record.get("samples_ns", ())),
    )


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("threads", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("throughput_requests", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("fidelity_top1", sa.Float(), nullable=True))
        batch.add_column(sa.Column("peak_rss_bytes", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("sample_count", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_results_hostname", "results", ["hostname"])
    # Backfill from each record, in batches (records are JSON on SQLite and JSONB on PostgreSQL).
    conn = op.get_bind()
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
    op.drop_index("ix_results_hostname", "results")
    with op.batch_alter_table("results") as batch:
        for c in reversed(COLUMNS):
            batch.drop_column(c)

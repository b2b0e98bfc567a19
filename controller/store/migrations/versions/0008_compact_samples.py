"""results keep their raw samples as a compact binary column (FBS1: byte-shuffled integers, zlib) and the
record JSON holds the rest: 1.4-3.1 bytes per sample instead of 6-7, and no JSON parse of the samples to
read a record's other fields

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

import sys
import time

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from protocol.samples import Samples, decode

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BATCH = 500


def _results():
    record = sa.JSON().with_variant(JSONB(), "postgresql")
    return sa.table("results", sa.column("id", sa.Integer), sa.column("record", record),
                    sa.column("samples", sa.LargeBinary))  # fmt: skip


def _rewrite(conn, results, where, change, what: str) -> None:
    """Apply ``change(record, blob) -> (record, blob)`` to every row matching ``where``, BATCH rows at a time,
    with a progress line on stderr every few seconds for a big table."""
    total = conn.execute(sa.select(sa.func.count()).select_from(results).where(where)).scalar() or 0
    update = sa.update(results).where(results.c.id == sa.bindparam("_id"))
    update = update.values(record=sa.bindparam("_record"), samples=sa.bindparam("_samples"))
    last, done, shown = 0, 0, time.monotonic()
    while True:
        rows = conn.execute(
            sa.select(results.c.id, results.c.record, results.c.samples)
            .where(where, results.c.id > last).order_by(results.c.id).limit(BATCH)
        ).all()  # fmt: skip
        if not rows:
            break
        params = []
        for row_id, record, blob in rows:
            record, blob = change(record, blob)
            params.append({"_id": row_id, "_record": record, "_samples": blob})
        conn.execute(update, params)
        last, done = rows[-1][0], done + len(rows)
        if time.monotonic() - shown > 5:
            print(f"fleetbench: {what}: {done:,} of {total:,} records", file=sys.stderr, flush=True)
            shown = time.monotonic()


def _to_blob(record: dict, blob):
    record = dict(record)
    return record, Samples(record.pop("samples_ns", [])).to_blob()


def _to_json(record: dict, blob):
    return dict(record, samples_ns=decode(blob).tolist()), None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("samples", sa.LargeBinary(), nullable=True))
    results = _results()
    _rewrite(op.get_bind(), results, results.c.samples.is_(None), _to_blob, "moving raw samples to the compact column")


def downgrade() -> None:
    results = _results()
    _rewrite(op.get_bind(), results, results.c.samples.isnot(None), _to_json, "moving raw samples back into JSON")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("samples")

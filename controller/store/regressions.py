"""Change points and store settings (issue 20): the series' points and raw samples detection reads, the change
points found, their acknowledgements and webhook deliveries."""

from __future__ import annotations

import datetime as dt

import numpy as np
from sqlalchemy import and_, false, or_, select, text, update

from controller.analysis.changepoints import same
from controller.store.base import StoreBase
from controller.store.models import ChangePointRow, Result, SettingRow
from protocol.samples import decode

#: A sender that claimed a change point and went quiet for this long is presumed dead: another may send it.
CLAIM_S = 600


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class RegressionsStore(StoreBase):
    """Series, change points, acknowledgements, the webhook's setting and its deliveries."""

    def series_points(self, metric: str, model: str | None = None) -> list[tuple]:
        """(model_name, variant, capability, threads, throughput_requests, device_name, id, job_id, finished_at,
        value) of every current record with ``metric``, oldest first within each series. Emulated agents' records
        are no series: their timings are the emulator's (a change there is qemu's, not the model's)."""
        column = getattr(Result, metric)
        keys = (Result.model_name, Result.variant, Result.capability, Result.threads, Result.throughput_requests,
                Result.device_name)
        stmt = select(*keys, Result.id, Result.job_id, Result.finished_at, column).where(
            Result.superseded == false(), Result.emulated == false(), column.is_not(None))
        if model:
            stmt = stmt.where(or_(Result.model_name == model, Result.model_id.startswith(model)))
        with self._session() as session:
            return list(session.execute(stmt.order_by(*keys, Result.finished_at, Result.id)))

    def samples_by_id(self, ids: list[int]) -> dict[int, np.ndarray]:
        """The raw samples (ns) of the ``results`` rows ``ids``."""
        if not ids:
            return {}
        with self._session() as session:
            rows = session.execute(select(Result.id, Result.samples).where(Result.id.in_(ids)))
            return {i: decode(blob) for i, blob in rows if blob is not None}

    def add_change_points(self, rows: list[ChangePointRow], positions: dict[str, int] | None = None) -> list[ChangePointRow]:
        """Store the change points not stored yet; returns the new ones. ``positions`` (job id -> index in its
        series) lets a point found a record or two from a stored one of the same series, metric and kind count as
        that one (the detector moves a change point as points arrive)."""
        new = []
        with self._write() as session:
            # `fleetbench serve` and a cron job may scan at once: PostgreSQL takes one at a time here (SQLite's
            # writes are one at a time already), so neither stores what the other just stored
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(hashtext('fleetbench-change-points'))"))
            for row in rows:
                series = select(ChangePointRow).where(
                    ChangePointRow.model_name == row.model_name, ChangePointRow.variant == row.variant,
                    ChangePointRow.capability == row.capability, ChangePointRow.threads == row.threads,
                    ChangePointRow.device_name == (row.device_name or ""),
                    ChangePointRow.throughput_requests == row.throughput_requests,
                    ChangePointRow.metric == row.metric)  # fmt: skip
                stored = list(session.scalars(series))
                if any(same(row.after_job, row.kind, s.after_job, s.kind, positions or {}) for s in stored):
                    continue
                session.add(row)
                new.append(row)
        return new

    def change_points(self, since: dt.datetime | None = None, model: str | None = None,
                      ids: list[int] | None = None) -> list[ChangePointRow]:  # fmt: skip
        """Stored change points, newest first (by when the new level began)."""
        stmt = select(ChangePointRow)
        if since is not None:
            stmt = stmt.where(ChangePointRow.after_at >= since)
        if model:  # a name, or a model id prefix (as series_points takes it): the names of its records
            names = select(Result.model_name).where(or_(Result.model_name == model, Result.model_id.startswith(model)))
            stmt = stmt.where(ChangePointRow.model_name.in_(names))
        if ids is not None:
            stmt = stmt.where(ChangePointRow.id.in_(ids))
        with self._session() as session:
            return list(session.scalars(stmt.order_by(ChangePointRow.after_at.desc(), ChangePointRow.id.desc())))

    def ack_change_point(self, cp_id: int, note: str) -> ChangePointRow | None:
        """Mark change point ``cp_id`` as known, with ``note``; None when there is no such change point."""
        with self._write() as session:
            row = session.get(ChangePointRow, cp_id)
            if row is None:
                return None
            row.acked_at, row.ack_note = _now(), note
            return row

    def setting(self, key: str) -> dict | None:
        with self._session() as session:
            row = session.get(SettingRow, key)
            return dict(row.value) if row else None

    def set_setting(self, key: str, value: dict | None) -> None:
        """Set ``key`` to ``value`` (None removes it)."""
        with self._write() as session:
            row = session.get(SettingRow, key)
            if value is None:
                if row is not None:
                    session.delete(row)
            elif row is None:
                session.add(SettingRow(key=key, value=value))
            else:
                row.value = value

    def claim_for_notify(self, cp_id: int) -> bool:
        """Take change point ``cp_id`` for sending: False when it was sent, or another sender holds it."""
        now = _now()
        stale = now - dt.timedelta(seconds=CLAIM_S)
        with self._write() as session:
            done = session.execute(update(ChangePointRow).where(
                ChangePointRow.id == cp_id, ChangePointRow.notified_at.is_(None), ChangePointRow.acked_at.is_(None),
                or_(ChangePointRow.notify_claim.is_(None), ChangePointRow.notify_claim < stale),
            ).values(notify_claim=now))  # fmt: skip
            return done.rowcount == 1

    def finish_notify(self, cp_id: int, error: str | None) -> None:
        """The sender is done with ``cp_id``: sent (``error`` None), or given up (released for a later run)."""
        with self._write() as session:
            values = {"notify_claim": None, "notify_error": error}
            if error is None:
                values["notified_at"] = _now()
            session.execute(update(ChangePointRow).where(ChangePointRow.id == cp_id).values(**values))

    def unsent_regressions(self) -> list[ChangePointRow]:
        """Unacknowledged regressions the webhook has not taken yet, oldest first."""
        stmt = select(ChangePointRow).where(and_(ChangePointRow.kind == "regression", ChangePointRow.acked_at.is_(None),
                                                 ChangePointRow.notified_at.is_(None)))  # fmt: skip
        with self._session() as session:
            return list(session.scalars(stmt.order_by(ChangePointRow.after_at, ChangePointRow.id)))

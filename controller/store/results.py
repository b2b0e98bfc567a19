"""Benchmark records: add, read, count."""

from __future__ import annotations

from sqlalchemy import false, func, or_, select

from controller.store.base import StoreBase, record_of
from controller.store.models import Result
from protocol import ResultRecord


class ResultsStore(StoreBase):
    """Reading stored records (they are written by ingestion: :class:`~controller.store.jobs.JobsStore`)."""

    def get_result(self, job_id: str, attempt: int) -> ResultRecord | None:
        with self._session() as session:
            row = session.scalar(select(Result).where(Result.job_id == job_id, Result.attempt == attempt))
            return record_of(row.record, row.samples) if row else None

    def results(self, model_id: str | None = None, limit: int | None = None) -> list[ResultRecord]:
        """Stored records, newest first."""
        stmt = (
            select(Result.record, Result.samples)
            .where(Result.superseded == false())
            .order_by(Result.finished_at.desc(), Result.id.desc())
        )
        if model_id:
            stmt = stmt.where(Result.model_id == model_id)
        if limit:
            stmt = stmt.limit(limit)
        with self._session() as session:
            return [record_of(r, b) for r, b in session.execute(stmt)]

    def newest_results(self, model_id: str) -> list[ResultRecord]:
        """The newest current record of each capability × variant × threads of a model on each machine (picked in
        SQL): a server's newest never hides a board's, nor an emulated agent's a device's."""
        rank = func.row_number().over(
            partition_by=(Result.capability, Result.variant, Result.threads, Result.machine, Result.emulated),
            order_by=(Result.finished_at.desc(), Result.id.desc()),
        )
        ranked = (
            select(Result.id, rank.label("rank"))
            .where(Result.model_id == model_id, Result.superseded == false())
            .subquery()
        )
        stmt = (
            select(Result.record, Result.samples)
            .join(ranked, ranked.c.id == Result.id)
            .where(ranked.c.rank == 1)
            .order_by(Result.capability, Result.variant, Result.threads)
        )
        with self._session() as session:
            return [record_of(r, b) for r, b in session.execute(stmt)]

    def model_of_results(self, ref: str) -> tuple[str, str] | None:
        """(model id, name) of the newest record whose model name is ``ref`` or whose model id starts with it:
        for records of a model the models table does not hold (imported from a bundle, say)."""
        stmt = (
            select(Result.model_id, Result.model_name)
            .where(Result.superseded == false(), or_(Result.model_name == ref, Result.model_id.startswith(ref)))
            .order_by(Result.finished_at.desc(), Result.id.desc())
            .limit(1)
        )
        with self._session() as session:
            row = session.execute(stmt).first()
        return (row[0], row[1]) if row else None

    def results_by_job(self, prefix: str, limit: int = 10) -> list[ResultRecord]:
        """Current records whose job id starts with ``prefix`` (the 8 characters `fleetbench status` shows), newest
        first, at most ``limit``."""
        stmt = (
            select(Result.record, Result.samples)
            .where(Result.job_id.startswith(prefix, autoescape=True), Result.superseded == false())
            .order_by(Result.finished_at.desc(), Result.id.desc())
            .limit(limit)
        )
        with self._session() as session:
            return [record_of(r, b) for r, b in session.execute(stmt)]

    def count_results(self) -> int:
        with self._session() as session:
            return session.scalar(select(func.count()).select_from(Result).where(Result.superseded == false())) or 0

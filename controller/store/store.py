"""One store interface for results, whatever the database."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from controller.store.models import Result
from protocol import ResultRecord

MIGRATIONS = Path(__file__).parent / "migrations"


class StoreError(RuntimeError):
    """The database cannot be used; the message says which and what to do."""


def _parse_ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for messages
        return "<database url>"


class Store:
    def __init__(self, url: str, **engine_kwargs):
        self.url = url
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url, **engine_kwargs)

    def close(self) -> None:
        self.engine.dispose()

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except OperationalError as exc:
            raise StoreError(
                f"cannot open the database {_redact(self.url)}: {exc.orig}. "
                "Check that the server is running and the URL (--db / FLEETBENCH_DB_URL) is right"
            ) from None

    def add_result(self, record: ResultRecord) -> bool:
        """Store ``record`` once. Returns False if (job_id, attempt) is already stored."""
        record.check_consistent()
        row = Result(
            job_id=record.job_id,
            attempt=record.attempt,
            model_id=record.model_id,
            model_name=record.model_name,
            artifact_sha256=record.artifact_sha256,
            variant=record.variant,
            runtime=record.runtime,
            runtime_version=record.runtime_version,
            capability=record.capability,
            device=record.device,
            device_name=record.device_name,
            hostname=record.host.hostname,
            agent_id=record.agent_id,
            p50_ms=record.stats.p50_ms,
            p90_ms=record.stats.p90_ms,
            p99_ms=record.stats.p99_ms,
            mean_ms=record.stats.mean_ms,
            throughput_ips=record.throughput_ips,
            accuracy_top1=record.accuracy_top1,
            model_size_bytes=record.model_size_bytes,
            valid=record.validity.valid,
            finished_at=_parse_ts(record.finished_at),
            stored_at=dt.datetime.now(dt.timezone.utc),
            record=record.to_dict(),
        )
        try:
            with Session(self.engine) as session, session.begin():
                session.add(row)
        except IntegrityError:
            existing = self.get_result(record.job_id, record.attempt)
            if existing is None:  # some other constraint failed: not a duplicate
                raise
            return False
        except OperationalError as exc:
            raise StoreError(f"cannot write to {_redact(self.url)}: {exc.orig}") from None
        return True

    def get_result(self, job_id: str, attempt: int) -> ResultRecord | None:
        with Session(self.engine) as session:
            row = session.scalar(select(Result).where(Result.job_id == job_id, Result.attempt == attempt))
            return ResultRecord.from_dict(row.record) if row else None

    def results(self, model_id: str | None = None, limit: int | None = None) -> list[ResultRecord]:
        """Stored records, newest first."""
        stmt = select(Result.record).order_by(Result.finished_at.desc(), Result.id.desc())
        if model_id:
            stmt = stmt.where(Result.model_id == model_id)
        if limit:
            stmt = stmt.limit(limit)
        with Session(self.engine) as session:
            return [ResultRecord.from_dict(r) for r in session.scalars(stmt)]

    def count_results(self) -> int:
        with Session(self.engine) as session:
            return session.scalar(select(func.count()).select_from(Result)) or 0

"""One store interface for results, whatever the database."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import create_engine, false, func, or_, select, text
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import sessionmaker

from controller.store.base import StoreError, _one_line, _parse_ts, _write_error, as_utc, redact_url  # noqa: F401 (re-exported)
from controller.store.jobs import JobsMixin
from controller.store.models import AgentRow, DatasetRow, ModelRow, ReferenceRow, Result, VariantRow
from protocol import AgentInventory, JobOutcome, ResultRecord
from protocol.private import create_private

MIGRATIONS = Path(__file__).parent / "migrations"
#: The newest Alembic revision. `migrate()` skips Alembic (a slow import) when
#: the database is already there; a test keeps this equal to the scripts' head.
HEAD_REVISION = "0007"


class Store(JobsMixin):
    def __init__(self, url: str, **engine_kwargs):
        self.url = url
        if url.startswith("sqlite:///"):
            db_file = Path(url.removeprefix("sqlite:///"))
            db_file.parent.mkdir(parents=True, exist_ok=True)
            try:
                create_private(db_file)  # records stay private; SQLite treats the empty file as a new database
            except OSError:
                pass  # a read-only place: SQLite says what is wrong
        if not url.startswith("sqlite"):
            engine_kwargs.setdefault("pool_pre_ping", True)  # a restarted server leaves dead pooled connections
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        try:
            self.engine = create_engine(url, **engine_kwargs)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise StoreError(
                f"{redact_url(url)} is not a database URL fleetbench can open ({_one_line(exc)}); "
                "give sqlite:///PATH or postgresql+psycopg://USER@HOST/DB (--db / FLEETBENCH_DB_URL)"
            ) from None
        # Rows handed to callers stay readable after their session commits and closes.
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def current_revision(self) -> str | None:
        try:
            with self.engine.connect() as conn:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except OperationalError as exc:
            if "alembic_version" in str(exc.orig):  # SQLite: no such table
                return None
            raise
        except ProgrammingError:  # PostgreSQL: undefined table
            return None

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        try:
            if self.current_revision() == HEAD_REVISION:
                return
            from alembic import command
            from alembic.config import Config

            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except OperationalError as exc:
            raise StoreError(
                f"cannot open the database {redact_url(self.url)}: {_one_line(exc.orig)}. "
                "Check that the server is running and the URL (--db / FLEETBENCH_DB_URL) is right"
            ) from None

    @staticmethod
    def _result_values(record: ResultRecord, sweep_id: str | None = None, superseded: bool = False) -> dict:
        """The ``results`` row for ``record``, as column values (refused if its stats do not match its samples)."""
        record.check_consistent()
        from protocol.flatten import record_fields

        flat = record_fields(record)
        columns = ("job_id", "attempt", "model_id", "model_name", "artifact_sha256", "variant", "runtime",
                   "runtime_version", "capability", "device", "device_name", "hostname", "agent_id", "p50_ms", "p90_ms",
                   "p99_ms", "mean_ms", "throughput_ips", "accuracy_top1", "model_size_bytes", "valid", "threads",
                   "throughput_requests", "peak_rss_bytes", "fidelity_snr_db", "fidelity_cosine", "from_source")  # fmt: skip
        return dict(
            {c: flat[c] for c in columns},
            finished_at=_parse_ts(record.finished_at),
            stored_at=dt.datetime.now(dt.timezone.utc),
            record=record.to_dict(),
            sweep_id=sweep_id,
            superseded=superseded,
            fidelity_top1=flat["top1_agreement"],
            sample_count=len(record.samples_ns),
            precision=record.precision[:64],
        )

    def add_result(self, record: ResultRecord) -> bool:
        """Store ``record`` once; True if it is now the job's current record (see :meth:`ingest`)."""
        record.check_consistent()
        outcome = JobOutcome(job_id=record.job_id, attempt=record.attempt, ok=True, record=record, agent_id=record.agent_id)
        return self.ingest(outcome) == "stored"

    def get_result(self, job_id: str, attempt: int) -> ResultRecord | None:
        with self._session() as session:
            row = session.scalar(select(Result).where(Result.job_id == job_id, Result.attempt == attempt))
            return ResultRecord.from_dict(row.record) if row else None

    def results(self, model_id: str | None = None, limit: int | None = None) -> list[ResultRecord]:
        """Stored records, newest first."""
        stmt = select(Result.record).where(Result.superseded == false()).order_by(Result.finished_at.desc(), Result.id.desc())
        if model_id:
            stmt = stmt.where(Result.model_id == model_id)
        if limit:
            stmt = stmt.limit(limit)
        with self._session() as session:
            return [ResultRecord.from_dict(r) for r in session.scalars(stmt)]

    def newest_results(self, model_id: str) -> list[ResultRecord]:
        """The newest current record of each capability × variant × threads of a model (picked in SQL)."""
        rank = func.row_number().over(
            partition_by=(Result.capability, Result.variant, Result.threads),
            order_by=(Result.finished_at.desc(), Result.id.desc()),
        )
        ranked = (
            select(Result.id, rank.label("rank"))
            .where(Result.model_id == model_id, Result.superseded == false())
            .subquery()
        )
        stmt = (
            select(Result.record)
            .join(ranked, ranked.c.id == Result.id)
            .where(ranked.c.rank == 1)
            .order_by(Result.capability, Result.variant, Result.threads)
        )
        with self._session() as session:
            return [ResultRecord.from_dict(r) for r in session.scalars(stmt)]

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

    def count_results(self) -> int:
        with self._session() as session:
            return session.scalar(select(func.count()).select_from(Result).where(Result.superseded == false())) or 0

    # ------------------------------------------------------------ models, datasets, variants

    def _add_once(self, row, key) -> bool:
        """Insert ``row`` unless a row with primary key ``key`` exists. True if inserted."""
        try:
            with self._session() as session, session.begin():
                if session.get(type(row), key) is not None:
                    return False
                session.add(row)
        except IntegrityError:  # a concurrent writer inserted it first
            return False
        except OperationalError as exc:
            raise _write_error(self.url, exc) from None
        return True

    def add_model(self, model_id: str, name: str, kind: str, filename: str, size_bytes: int) -> bool:
        return self._add_once(
            ModelRow(model_id=model_id, name=name, kind=kind, filename=filename, size_bytes=size_bytes,
                     created_at=dt.datetime.now(dt.timezone.utc)),
            model_id,
        )  # fmt: skip

    def models(self) -> list[ModelRow]:
        with self._session() as session:
            return list(session.scalars(select(ModelRow).order_by(ModelRow.created_at.desc())))

    def find_model(self, ref: str) -> ModelRow:
        """A model by id, unique id prefix (>= 6 characters) or unique name."""
        with self._session() as session:
            rows = list(session.scalars(select(ModelRow).where(ModelRow.model_id == ref)))
            if not rows and len(ref) >= 6:
                rows = list(session.scalars(select(ModelRow).where(ModelRow.model_id.startswith(ref))))
            if not rows:
                rows = list(session.scalars(select(ModelRow).where(ModelRow.name == ref)))
        if len(rows) == 1:
            return rows[0]
        if not rows:
            raise StoreError(f"no stored model matches '{ref}'; `fleetbench models` lists them")
        ids = ", ".join(r.model_id[:12] for r in rows)
        raise StoreError(f"'{ref}' matches {len(rows)} models ({ids}); give more of the id")

    def add_dataset(self, row: DatasetRow) -> bool:
        return self._add_once(row, row.dataset_id)

    def get_dataset(self, dataset_id: str) -> DatasetRow | None:
        with self._session() as session:
            return session.get(DatasetRow, dataset_id)

    def add_variant(self, row: VariantRow) -> bool:
        return self._add_once(row, row.cache_key)

    def get_variant(self, cache_key: str) -> VariantRow | None:
        with self._session() as session:
            return session.get(VariantRow, cache_key)

    def delete_variant(self, cache_key: str) -> None:
        with self._session() as session, session.begin():
            row = session.get(VariantRow, cache_key)
            if row is not None:
                session.delete(row)

    def add_reference(self, model_id: str, dataset_id: str, artifact: dict) -> None:
        """The fp32 reference outputs of ``model_id`` on ``dataset_id`` (the newest replaces an older one)."""
        with self._session() as session, session.begin():
            row = session.get(ReferenceRow, (model_id, dataset_id))
            if row is None:
                session.add(ReferenceRow(model_id=model_id, dataset_id=dataset_id, artifact=artifact,
                                         created_at=dt.datetime.now(dt.timezone.utc)))  # fmt: skip
            else:
                row.artifact = artifact

    def get_reference(self, model_id: str, dataset_id: str) -> dict | None:
        with self._session() as session:
            row = session.get(ReferenceRow, (model_id, dataset_id))
            return row.artifact if row is not None else None

    def variants(self, model_id: str) -> list[VariantRow]:
        with self._session() as session:
            stmt = select(VariantRow).where(VariantRow.model_id == model_id).order_by(VariantRow.created_at)
            return list(session.scalars(stmt))

    def referenced_artifacts(self) -> set[str]:
        """sha256 of every artifact a stored row points at (what gc must keep)."""
        keep: set[str] = set()
        with self._session() as session:
            keep.update(session.scalars(select(ModelRow.model_id)))
            for cal, val in session.execute(select(DatasetRow.calibration, DatasetRow.validation)):
                keep.update((cal["sha256"], val["sha256"]))
            for art, ref in session.execute(select(VariantRow.artifact, VariantRow.reference)):
                keep.add(art["sha256"])
                if ref:
                    keep.add(ref["sha256"])
            keep.update(ref["sha256"] for ref in session.scalars(select(ReferenceRow.artifact)))
            keep.update(session.scalars(select(Result.artifact_sha256)))
        return keep

    # ------------------------------------------------------------ agents

    def record_agent(self, inventory: AgentInventory) -> None:
        """Keep the newest inventory of an agent (an older heartbeat never overwrites a newer one)."""
        beat = _parse_ts(inventory.heartbeat_at)
        for _ in range(2):  # a concurrent first insert of the same agent: retry as an update
            try:
                with self._session() as session, session.begin():
                    row = session.get(AgentRow, inventory.agent_id)
                    if row is None:
                        session.add(AgentRow(agent_id=inventory.agent_id, hostname=inventory.host.hostname,
                                             inventory=inventory.to_dict(), first_seen=beat, last_heartbeat=beat))  # fmt: skip
                    elif as_utc(row.last_heartbeat) < beat:
                        row.inventory, row.hostname, row.last_heartbeat = inventory.to_dict(), inventory.host.hostname, beat
                return
            except IntegrityError:
                continue
            except OperationalError as exc:
                raise _write_error(self.url, exc) from None

    def agents(self) -> list[AgentRow]:
        with self._session() as session:
            return list(session.scalars(select(AgentRow).order_by(AgentRow.agent_id)))

"""What every part of the store shares: :class:`StoreBase` (the engine, sessions and migrations, and a record's
row), its error, timestamps in UTC, URLs fit for messages. Each table group is a subclass of StoreBase in a
module of its own (results.py, catalog.py, agents.py, jobs.py); :class:`controller.store.Store` is all of them."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import sessionmaker

from protocol import ResultRecord
from protocol.flatten import record_fields
from protocol.private import create_private
from protocol.samples import Samples

MIGRATIONS = Path(__file__).parent / "migrations"
#: The newest Alembic revision. `migrate()` skips Alembic (a slow import) when
#: the database is already there; a test keeps this equal to the scripts' head.
HEAD_REVISION = "0015"


#: Set while a store method writes: SQLite then begins with BEGIN IMMEDIATE (see _sqlite_wal).
_WRITING = contextvars.ContextVar("fleetbench_store_writing", default=False)
#: How long a SQLite writer waits for another's lock before the write fails, in milliseconds.
SQLITE_BUSY_MS = 15_000


def _sqlite_wal(engine) -> None:
    """The controller's SQLite: WAL (readers never wait for the writer, nor it for them) with
    ``synchronous=NORMAL`` (a commit is one WAL append, synced at checkpoints: safe against a killed
    process; an OS crash or power cut can lose the newest commits, never corrupt the file).

    A transaction that writes begins with BEGIN IMMEDIATE, taking the write lock first: a deferred
    one that read and then wrote would fail at once (SQLITE_BUSY_SNAPSHOT) whenever another
    connection committed in between, and WAL's busy timeout does not help it. Reads begin deferred.
    Transactions are begun here, not by the driver (SQLAlchemy's pysqlite recipe)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        dbapi_conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        try:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")
        except Exception:  # noqa: BLE001 - a read-only file: SQLite says so at the first write
            pass

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if _WRITING.get() else "BEGIN")


def _in_parts(ids, size: int = 500):
    """``ids`` in lists of at most ``size``, in order: SQLite's bound-parameter limit, and plans that stay short."""
    ids = list(ids)
    return (ids[i : i + size] for i in range(0, len(ids), size))


class StoreError(RuntimeError):
    """The database cannot be used; the message says which and what to do."""


def _parse_ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def as_utc(ts: dt.datetime) -> dt.datetime:
    """SQLite hands timestamps back without their zone; they were stored in UTC."""
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.timezone.utc)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _write_error(url: str, exc: OperationalError) -> StoreError:
    return StoreError(f"cannot write to {redact_url(url)}: {_one_line(exc.orig)}")


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for messages
        from protocol.redact import redact

        return redact(url)


def record_of(data: dict, blob: bytes | None) -> ResultRecord:
    """The record of a ``results`` row: its JSON and its samples column (decoded only when read)."""
    if blob is not None:
        data = {**data, "samples_ns": Samples.from_blob(blob)}
    return ResultRecord.from_dict(data)


class StoreBase:
    """One database: its engine and sessions, its schema (Alembic), and what every table group needs."""

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
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            _sqlite_wal(self.engine)
        # Rows handed to callers stay readable after their session commits and closes.
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def _write(self):
        """A session in a transaction that writes (committed at the end, rolled back on an error)."""
        token = _WRITING.set(True)
        try:
            with self._session() as session, session.begin():
                yield session
        finally:
            _WRITING.reset(token)

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
            token = _WRITING.set(True)  # SQLite: the migration holds the write lock from its start
            try:
                with self.engine.begin() as conn:
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
            finally:
                _WRITING.reset(token)
        except OperationalError as exc:
            raise StoreError(
                f"cannot open the database {redact_url(self.url)}: {_one_line(exc.orig)}. "
                "Check that the server is running and the URL (--db / FLEETBENCH_DB_URL) is right"
            ) from None

    @staticmethod
    def _result_values(record: ResultRecord, sweep_id: str | None = None, superseded: bool = False) -> dict:
        """The ``results`` row for ``record``, as column values (refused if its stats do not match its samples)."""
        record.check_consistent()
        flat = record_fields(record)
        columns = ("job_id", "attempt", "model_id", "model_name", "artifact_sha256", "variant", "runtime",
                   "runtime_version", "capability", "device", "device_name", "hostname", "agent_id", "p50_ms", "p90_ms",
                   "p99_ms", "mean_ms", "throughput_ips", "accuracy_top1", "model_size_bytes", "valid", "threads",
                   "throughput_requests", "peak_rss_bytes", "fidelity_snr_db", "fidelity_cosine", "from_source")  # fmt: skip
        return dict(
            {c: flat[c] for c in columns},
            finished_at=_parse_ts(record.finished_at),
            stored_at=dt.datetime.now(dt.timezone.utc),
            record=record.to_dict(samples="omit"),
            samples=record.samples_ns.to_blob(),
            sweep_id=sweep_id,
            superseded=superseded,
            fidelity_top1=flat["top1_agreement"],
            sample_count=len(record.samples_ns),
            precision=record.precision[:64],
            profiled=flat["profiled"],
            fallback_ops=flat["fallback_ops"],
            energy_mj=flat["energy_mj_per_inference"],
            energy_w=flat["energy_avg_w"],
            disturbed=flat["disturbed"],
            throttled=flat["throttled"],
            drift_ratio=flat["drift_ratio"],
            machine=flat["machine"][:32],
            emulated=bool(flat["emulated_by"]),
        )

    def _add_once(self, row, key) -> bool:
        """Insert ``row`` unless a row with primary key ``key`` exists. True if inserted."""
        try:
            with self._write() as session:
                if session.get(type(row), key) is not None:
                    return False
                session.add(row)
        except IntegrityError:  # a concurrent writer inserted it first
            return False
        except OperationalError as exc:
            raise _write_error(self.url, exc) from None
        return True

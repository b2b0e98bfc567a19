"""The SQL store on SQLite and PostgreSQL: migrations, round trips, idempotent ingestion."""

import dataclasses
import datetime as dt
import json

import numpy as np
import pytest

from controller.store import Store, StoreError
from protocol import ContractError


def test_round_trip(store, golden_record):
    assert store.add_result(golden_record) is True
    assert store.get_result(golden_record.job_id, golden_record.attempt) == golden_record
    assert store.results() == [golden_record]
    assert store.results(model_id=golden_record.model_id) == [golden_record]
    assert store.results(model_id="other") == []


def test_same_result_twice_is_stored_once(store, golden_record):
    assert store.add_result(golden_record) is True
    assert store.add_result(golden_record) is False
    assert store.count_results() == 1


def test_a_newer_attempt_replaces_the_current_record_and_keeps_the_old(store, golden_record):
    assert store.add_result(golden_record)
    assert store.add_result(dataclasses.replace(golden_record, attempt=3))
    assert store.count_results() == 1  # one current record per job
    assert store.get_result(golden_record.job_id, 1).attempt == 1  # kept, superseded
    assert store.results()[0].attempt == 3
    assert store.add_result(dataclasses.replace(golden_record, attempt=2)) is False  # late: kept as superseded
    assert store.count_results() == 1 and store.results()[0].attempt == 3


def test_inconsistent_record_is_refused_and_nothing_stored(store, golden_record):
    bad = dataclasses.replace(golden_record, stats=dataclasses.replace(golden_record.stats, p90_ms=123.0))
    with pytest.raises(ContractError):
        store.add_result(bad)
    assert store.count_results() == 0


def test_migrate_is_idempotent(store, golden_record):
    store.add_result(golden_record)
    store.migrate()
    assert store.count_results() == 1


def test_results_newest_first(store, golden_record):
    older = dataclasses.replace(golden_record, job_id="older", finished_at="2020-01-01T00:00:00+00:00")
    store.add_result(older)
    store.add_result(golden_record)
    assert [r.job_id for r in store.results()] == [golden_record.job_id, "older"]
    assert [r.job_id for r in store.results(limit=1)] == [golden_record.job_id]


def test_dead_database_gives_a_clear_error():
    store = Store("postgresql+psycopg://fleet:secret@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    with pytest.raises(StoreError) as err:
        store.migrate()
    msg = str(err.value)
    assert "cannot open the database" in msg and "127.0.0.1:1" in msg and "FLEETBENCH_DB_URL" in msg
    assert "secret" not in msg  # the password is redacted
    assert "\n" not in msg


def test_sqlite_in_a_missing_directory_is_created(tmp_path, golden_record):
    store = Store(f"sqlite:///{tmp_path / 'new' / 'dir' / 'fb.db'}")
    store.migrate()
    assert store.add_result(golden_record)
    store.close()


def test_head_revision_matches_the_migration_scripts():
    """migrate() skips Alembic when the database is at HEAD_REVISION: it must be the scripts' head."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from controller.store.store import HEAD_REVISION, MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD_REVISION


def test_models_datasets_and_variants(store):
    import datetime as dt

    from controller.store.models import VariantRow

    assert store.add_model("a" * 64, "net", "keras", "net.keras", 10) is True
    assert store.add_model("a" * 64, "net", "keras", "net.keras", 10) is False
    assert store.find_model("aaaaaa").name == "net" and store.find_model("net").model_id == "a" * 64
    with pytest.raises(StoreError, match="no stored model matches 'zzz'"):
        store.find_model("zzz")
    # the same name with another source: its second version, which the name now means
    assert store.add_model("c" * 64, "net", "keras", "net.keras", 12) is True
    assert store.find_model("net").model_id == "c" * 64 and store.find_model("aaaaaa").model_id == "a" * 64
    assert store.versions(store.models()) == {"a" * 64: 1, "c" * 64: 2}
    art = {"sha256": "b" * 64, "uri": "file:///x", "size_bytes": 5, "filename": "x.tflite"}
    row = VariantRow(cache_key="k" * 64, model_id="a" * 64, variant="tflite-fp32", dataset_id=None, artifact=art,
                     reference=None, size_bytes=5, conversion_s=0.5, tool_versions={"tensorflow": "2"},
                     recipe={"variant": "tflite-fp32"}, input_shape=[1, 8, 8, 1], input_dtype="float32",
                     created_at=dt.datetime.now(dt.timezone.utc))  # fmt: skip
    assert store.add_variant(row) is True and store.add_variant(row) is False
    assert [v.variant for v in store.variants("a" * 64)] == ["tflite-fp32"]
    assert store.get_variant("k" * 64).input_shape == [1, 8, 8, 1]
    assert {"a" * 64, "b" * 64} <= store.referenced_artifacts()
    store.delete_variant("k" * 64)
    assert store.get_variant("k" * 64) is None


def test_agents_keep_their_newest_inventory(store, golden_record):
    from protocol import AgentInventory, CapabilityInfo

    def inv(beat, caps):
        return AgentInventory(agent_id="pi-01", host=golden_record.host, started_at="2026-11-26T08:00:00+00:00",
                              heartbeat_at=beat, capabilities=tuple(CapabilityInfo(c, "openvino", "2022.3", c.split(":")[1], c)
                                                                    for c in caps))  # fmt: skip

    store.record_agent(inv("2026-11-26T09:00:00+00:00", ["openvino:MYRIAD"]))
    store.record_agent(inv("2026-11-26T10:00:00+00:00", ["openvino:MYRIAD", "openvino:CPU"]))
    store.record_agent(inv("2026-11-26T09:30:00+00:00", ["openvino:CPU"]))  # late, older heartbeat
    (row,) = store.agents()
    assert [c["name"] for c in row.inventory["capabilities"]] == ["openvino:MYRIAD", "openvino:CPU"]
    utc = dt.timezone.utc

    def as_utc(ts):  # SQLite returns naive UTC; PostgreSQL aware, in the session's zone
        return ts.replace(tzinfo=utc) if ts.tzinfo is None else ts.astimezone(utc)

    assert as_utc(row.last_heartbeat) == dt.datetime(2026, 11, 26, 10, 0, tzinfo=utc)
    assert as_utc(row.first_seen) == dt.datetime(2026, 11, 26, 9, 0, tzinfo=utc)


def _store_at(tmp_path, revision: str, url: str | None = None, **kwargs) -> Store:
    """A store (SQLite unless ``url``) migrated only up to ``revision``, as an older fleetbench left it."""
    from alembic import command
    from alembic.config import Config

    from controller.store.store import MIGRATIONS

    store = Store(url or f"sqlite:///{tmp_path / 'old.db'}", **kwargs)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return store


def _values_before_0008(store, record) -> dict:
    """A results row as fleetbench wrote it before 0008: the raw samples in the record JSON, no samples column
    (nor the columns of later revisions)."""
    values = store._result_values(record)
    for column in ("samples", "profiled", "fallback_ops", "energy_mj", "energy_w", "disturbed", "throttled",
                   "drift_ratio", "machine", "emulated"):  # 0008's, 0009's, 0011's, 0012's, 0015's
        values.pop(column)
    values["record"] = record.to_dict()
    return values


def test_migration_0005_fills_the_dashboard_columns_from_stored_records(tmp_path, golden_record):
    """A database written before 0005 gets threads, fidelity, peak memory and sample count from its records."""
    import sqlalchemy as sa

    store = _store_at(tmp_path, "0004")
    values = _values_before_0008(store, golden_record)
    for column in ("threads", "throughput_requests", "fidelity_top1", "peak_rss_bytes", "sample_count",
                   "precision", "fidelity_snr_db", "fidelity_cosine", "from_source"):  # fmt: skip
        values.pop(column)
    with store.engine.begin() as conn:
        columns = [sa.column(c, sa.JSON) if c == "record" else sa.column(c) for c in values]
        conn.execute(sa.table("results", *columns).insert(), [values])
    store.migrate()
    with store.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT threads, throughput_requests, fidelity_top1, peak_rss_bytes, sample_count "
                                   "FROM results")).one()  # fmt: skip
    expect_fidelity = golden_record.fidelity.top1_agreement if golden_record.fidelity else None
    assert tuple(row) == (golden_record.settings.threads, 0, expect_fidelity, golden_record.peak_rss_bytes,
                          len(golden_record.samples_ns))  # fmt: skip
    assert store.get_result(golden_record.job_id, 1) == golden_record
    store.close()


def test_migration_0007_fills_precision_and_fidelity_and_keeps_references(tmp_path, golden_record):
    """A database written at 0006 gets precision, SNR, cosine and from_source from its records, and the
    references stored beside its variants become one per model and data set."""
    import datetime as dt

    import sqlalchemy as sa

    from protocol import fidelity as F

    rng = np.random.default_rng(0)
    ref = rng.random((6, 4))
    fid = F.compare([ref + 1e-3], [ref], ["out"])
    record = dataclasses.replace(golden_record, precision="bf16", fidelity=fid, from_source=True)
    store = _store_at(tmp_path, "0006")
    values = _values_before_0008(store, record)
    for column in ("precision", "fidelity_snr_db", "fidelity_cosine", "from_source"):
        values.pop(column)
    now = dt.datetime.now(dt.timezone.utc)
    art = {"sha256": "r" * 64, "uri": "file:///r", "size_bytes": 1, "filename": "reference.npz"}
    variant = dict(cache_key="k" * 64, model_id="m" * 64, variant="tflite-fp32", dataset_id="d" * 64, artifact=art,
                   reference=art, size_bytes=1, conversion_s=0.1, tool_versions={}, recipe={}, input_shape=[1],
                   input_dtype="float32", created_at=now)  # fmt: skip
    with store.engine.begin() as conn:
        columns = [sa.column(c, sa.JSON) if c == "record" else sa.column(c) for c in values]
        conn.execute(sa.table("results", *columns).insert(), [values])
        vcols = [sa.column(c, sa.JSON) if c in ("artifact", "reference", "tool_versions", "recipe", "input_shape")
                 else sa.column(c) for c in variant]  # fmt: skip
        conn.execute(sa.table("variants", *vcols).insert(), [variant])
    store.migrate()
    with store.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT precision, fidelity_snr_db, fidelity_cosine, from_source FROM results")).one()
    assert row[0] == "bf16" and row[1] == pytest.approx(fid.snr_db) and row[2] == pytest.approx(fid.mean_cosine)
    assert bool(row[3]) is True
    assert store.get_reference("m" * 64, "d" * 64) == art and store.get_reference("m" * 64, "x" * 64) is None
    assert "r" * 64 in store.referenced_artifacts()
    assert store.get_result(record.job_id, 1) == record
    store.close()


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_migration_0008_moves_raw_samples_to_the_compact_column_and_back(db, request, tmp_path, golden_record):
    """Rows written at 0007 (today's head before compact samples: the samples as a JSON list) get their samples
    as an FBS1 blob, the JSON loses them, every record reads back equal and consistent, and downgrade undoes it."""
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from controller.store.store import MIGRATIONS
    from protocol.samples import decode

    url, kwargs = request.getfixturevalue("pg_url") if db == "postgresql" else (None, {})
    store = _store_at(tmp_path, "0007", url, **kwargs)
    rng = np.random.default_rng(3)
    records = [golden_record]
    for i, n in enumerate((1, 2, 5000)):  # one sample, two, and a slow model's wide spread
        ns = (rng.lognormal(17, 0.4, n)).astype(np.int64)
        records.append(_with_samples(golden_record, ns, job_id=f"other-{i}"))
    try:
        with store.engine.begin() as conn:
            values = [_values_before_0008(store, r) for r in records]
            record_type = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
            columns = [sa.column(c, record_type) if c == "record" else sa.column(c) for c in values[0]]
            conn.execute(sa.table("results", *columns).insert(), values)
        store.migrate()
        with store.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT job_id, record, samples FROM results ORDER BY id")).all()
        for (job_id, record, blob), want in zip(rows, records, strict=True):
            record = json.loads(record) if isinstance(record, str) else record
            assert "samples_ns" not in record and job_id == want.job_id
            assert decode(blob).tolist() == list(want.samples_ns)
        golden_blob = rows[0][2]
        assert len(golden_blob) / len(golden_record.samples_ns) <= 4  # the bound, on a real record
        for r in records:
            got = store.get_result(r.job_id, 1)
            assert got == r and got.samples_ns.tolist() == list(r.samples_ns)
            got.check_consistent()
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0007")
        with store.engine.connect() as conn:
            back = conn.execute(sa.text("SELECT record FROM results ORDER BY id")).scalars().all()
        back = [json.loads(b) if isinstance(b, str) else b for b in back]
        assert [b["samples_ns"] for b in back] == [list(r.samples_ns) for r in records]
    finally:
        _close(store, drop=db == "postgresql")


def _close(store, drop: bool) -> None:
    """Close ``store``; with ``drop``, first empty its schema (a PostgreSQL test schema is shared by the next test)."""
    import sqlalchemy as sa

    from controller.store.models import Base

    if drop:
        Base.metadata.drop_all(store.engine)
        with store.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    store.close()


def _with_samples(record, ns, **changes):
    """``record`` with other raw samples, its statistics recomputed from them."""
    from protocol.records import LatencyStats
    from protocol.stats import summarize_ns

    s = summarize_ns(ns)
    stats = LatencyStats.from_summary(s, load_ms=record.stats.load_ms, first_inference_ms=record.stats.first_inference_ms)
    return dataclasses.replace(record, samples_ns=ns.tolist(), stats=stats, **changes)


def test_newest_results_picks_the_newest_record_of_each_setting(store, golden_record):
    older = dataclasses.replace(golden_record, job_id="older", finished_at="2020-01-01T00:00:00+00:00")
    other = dataclasses.replace(golden_record, job_id="other", variant="tflite-int8", finished_at="2020-01-02T00:00:00+00:00")
    elsewhere = dataclasses.replace(golden_record, job_id="elsewhere", model_id="m2", model_name="other-model")
    for r in (golden_record, older, other, elsewhere):
        assert store.add_result(r)
    assert store.add_result(dataclasses.replace(golden_record, attempt=2, finished_at="2019-01-01T00:00:00+00:00"))
    newest = store.newest_results(golden_record.model_id)
    # the current record of the job (attempt 2, superseding attempt 1) is older than `older`
    assert sorted((r.variant, r.job_id, r.attempt) for r in newest) == [
        (golden_record.variant, "older", 1), ("tflite-int8", "other", 1)]  # fmt: skip
    assert store.model_of_results(golden_record.model_name) == (golden_record.model_id, golden_record.model_name)
    assert store.model_of_results("m2") == ("m2", "other-model")
    assert store.model_of_results("nothing-like-it") is None


def test_the_database_and_the_agent_outbox_are_created_owner_only(tmp_path, golden_record):
    """Issue 14, finding 15: records are the lab's own; the files are 0600, not 0644."""
    import os

    from agent.outbox import Outbox

    old = os.umask(0o022)
    try:
        s = Store(f"sqlite:///{tmp_path / 'fb' / 'fleetbench.db'}")
        s.migrate()
        s.add_result(golden_record)
        s.close()
        box = Outbox(tmp_path / "agent" / "a1" / "outbox.db")
    finally:
        os.umask(old)
    assert oct((tmp_path / "fb" / "fleetbench.db").stat().st_mode & 0o777) == "0o600"
    assert oct(box.path.stat().st_mode & 0o777) == "0o600" and len(box) == 0


def test_sqlite_is_in_wal_mode_and_concurrent_read_then_write_transactions_never_fail(tmp_path, golden_record):
    """Issue 16: the controller's SQLite runs WAL with synchronous=NORMAL. A transaction that reads a job and
    then writes it, from two stores (two connections) at once: in WAL a deferred one fails at once when the
    other commits in between (SQLITE_BUSY_SNAPSHOT); the store begins writes IMMEDIATE, so none fails.
    The dashboard's read-only engine reads meanwhile."""
    import threading

    import sqlalchemy as sa

    from controller.store.jobs import now
    from controller.store.models import JobRow, SweepRow
    from dashboard.data import readonly_engine

    url = f"sqlite:///{tmp_path / 'fb.db'}"
    a, b = Store(url), Store(url)
    a.migrate()
    with a.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    a.add_sweep(SweepRow(sweep_id="s1", name="n", spec={}, state="running", created_at=now()),
                [JobRow(job_id="j", sweep_id="s1", model_id="m", model_name="m", variant="v", capability="c",
                        settings={}, state="queued", reason="", attempt=1, created_at=now(), updated_at=now())])  # fmt: skip
    errors, rounds = [], 150
    reader = readonly_engine(url)

    def write(store, tag):
        try:
            for i in range(rounds):
                assert store.update_job("j", reason=f"{tag}{i}")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def read():
        try:
            for _ in range(rounds):
                with reader.connect() as conn:
                    conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(a, "a")), threading.Thread(target=write, args=(b, "b")),
               threading.Thread(target=read)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert a.get_job("j").reason in (f"a{rounds - 1}", f"b{rounds - 1}")
    reader.dispose()
    a.close()
    b.close()


def _ingest_as_at(store, golden, factors) -> None:
    """tests.test_regressions._ingest's records, stored as an older fleetbench wrote them: only the columns the
    ``results`` table has at the store's revision."""
    import dataclasses

    import sqlalchemy as sa

    from tests.test_regressions import T0, resampled

    model = dataclasses.replace(golden, model_name="cp-model")
    with store.engine.begin() as conn:
        table = sa.Table("results", sa.MetaData(), autoload_with=conn)
        rows = []
        for i, f in enumerate(factors):
            r = resampled(model, f, seed=i, job_id=f"cp-model-{i:03d}", at=T0 + dt.timedelta(days=i))
            rows.append({k: v for k, v in store._result_values(r).items() if k in table.c})
        conn.execute(table.insert(), rows)


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_migration_0014_gives_stored_change_points_their_device(db, request, tmp_path, golden_record):
    """A change point stored at 0013 gets the device of its first new record, so the scan that finds it again
    (now per device) knows it: no second row, no second alert."""
    import sqlalchemy as sa

    from controller.regressions import scan
    from tests.test_regressions import NOISE, T0

    url, kwargs = request.getfixturevalue("pg_url") if db == "postgresql" else (None, {})
    store = _store_at(tmp_path, "0013", url, **kwargs)
    try:
        _ingest_as_at(store, golden_record, list(NOISE[:12]) + list(NOISE[12:18] * 1.25))  # results: as at 0013
        with store.engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO change_points (model_name, variant, capability, threads, throughput_requests, metric, "
                "before_job, after_job, before_at, after_at, ratio, p_value, magnitude, kind, before_value, after_value, "
                "detected_at, notified_at) VALUES ('cp-model', :variant, :capability, 1, 0, 'p50_ms', 'cp-model-011', "
                "'cp-model-012', :t, :t, 1.25, 0.001, 0.25, 'regression', 1.0, 1.25, :t, :t)"),
                {"variant": golden_record.variant, "capability": golden_record.capability, "t": T0})  # fmt: skip
        store.migrate()  # 0014
        (stored,) = store.change_points()
        assert stored.device_name == golden_record.device_name
        assert scan(store, metrics=("p50_ms",)) == [] and len(store.change_points()) == 1  # the same one: not new
    finally:
        _close(store, drop=db == "postgresql")


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_migration_0015_stamps_each_record_with_its_machine_and_emulation(db, request, tmp_path, golden_record):
    """Records stored before 0015 say no machine and no emulation; a record of an emulated aarch64 agent says
    both, and the dashboard's queries leave it out unless asked."""
    import dataclasses

    import sqlalchemy as sa

    from dashboard.data import Filters, explorer_groups

    url, kwargs = request.getfixturevalue("pg_url") if db == "postgresql" else (None, {})
    store = _store_at(tmp_path, "0014", url, **kwargs)
    try:
        _ingest_as_at(store, golden_record, [1.0])  # job cp-model-000, as at 0014
        store.migrate()
        host = dataclasses.replace(golden_record.host, machine="aarch64", emulated_by="qemu-user: aarch64 on an x86_64 kernel")
        emulated = dataclasses.replace(golden_record, job_id="on-qemu", host=host, model_name="cp-model")
        assert store.add_result(emulated)
        with store.engine.connect() as conn:
            rows = dict(conn.execute(sa.text("SELECT job_id, machine || ':' || CAST(emulated AS INTEGER) FROM results")).all())
        assert rows == {"cp-model-000": ":0", "on-qemu": "aarch64:1"}
        # each a group of its own; the emulated one only when asked for
        runs = lambda f: int(explorer_groups(store.engine, f)["runs"].sum())  # noqa: E731
        assert (runs(Filters()), runs(Filters(emulated=True))) == (1, 2)
    finally:
        _close(store, drop=db == "postgresql")

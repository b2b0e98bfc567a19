"""The SQL store on SQLite and PostgreSQL: migrations, round trips, idempotent ingestion."""

import dataclasses

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


def test_another_attempt_is_another_row(store, golden_record):
    store.add_result(golden_record)
    store.add_result(dataclasses.replace(golden_record, attempt=2))
    assert store.count_results() == 2
    assert store.get_result(golden_record.job_id, 2).attempt == 2


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


def test_sqlite_in_a_missing_directory_is_created(tmp_path, golden_record):
    store = Store(f"sqlite:///{tmp_path / 'new' / 'dir' / 'fb.db'}")
    store.migrate()
    assert store.add_result(golden_record)
    store.close()

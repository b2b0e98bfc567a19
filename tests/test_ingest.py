"""Idempotent ingestion with attempt fencing, on SQLite and PostgreSQL."""

import dataclasses
import threading

from controller.store.jobs import (
    DEAD_LETTER, DONE, DUPLICATE, FAILED, FAILED_FINAL, LATE, PENDING, RETRY, STORED, now,
)  # fmt: skip
from controller.store.models import JobRow, SweepRow
from protocol import JobOutcome
from tests.helpers import at_once


def _sweep(store, n_jobs=1, max_attempts=3):
    sweep = SweepRow(sweep_id="s1", name="nightly", spec={}, state="running", created_at=now())
    jobs = [
        JobRow(job_id=f"job-{i}", sweep_id="s1", model_id="m", model_name="digits", variant="tflite-fp32",
               capability="litert:cpu", settings={}, state="queued", reason="", attempt=1, max_attempts=max_attempts,
               created_at=now(), updated_at=now())
        for i in range(n_jobs)
    ]  # fmt: skip
    store.add_sweep(sweep, jobs)
    return jobs


def _ok(record, job_id="job-0", attempt=1):
    r = dataclasses.replace(record, job_id=job_id, attempt=attempt)
    return JobOutcome(job_id=job_id, attempt=attempt, ok=True, record=r, agent_id=r.agent_id)


def _failed(kind, attempt=1, job_id="job-0"):
    return JobOutcome(job_id=job_id, attempt=attempt, ok=False, error=f"boom ({kind})", error_kind=kind, agent_id="a1")


def test_the_same_result_three_times_concurrently_is_one_row(store, golden_record):
    _sweep(store)
    outcome = _ok(golden_record)
    answers, errors = at_once(lambda: store.ingest(outcome), 3)
    assert not errors, errors
    assert sorted(answers) == [DUPLICATE, DUPLICATE, STORED]
    assert store.count_results() == 1 and len(store.sweep_results("s1")) == 1
    assert store.get_job("job-0").state == DONE


def test_a_late_result_of_a_superseded_attempt_is_kept_as_superseded(store, golden_record):
    _sweep(store)
    store.update_job("job-0", attempt=2)  # the scheduler sent attempt 2 (its agent looked lost)
    assert store.ingest(_ok(golden_record, attempt=2)) == STORED
    assert store.ingest(_ok(golden_record, attempt=1)) == LATE
    assert store.ingest(_ok(golden_record, attempt=1)) == LATE  # and again: still one superseded row
    assert store.count_results() == 1 and store.count_superseded("job-0") == 1
    assert [r.attempt for r in store.sweep_results("s1")] == [2]


def test_retryable_failures_retry_then_go_to_dead_letter(store):
    _sweep(store, max_attempts=2)
    assert store.ingest(_failed("crashed")) == RETRY
    job = store.get_job("job-0")
    assert job.state == PENDING and "retrying" in job.reason
    store.update_job("job-0", attempt=2, state="queued")
    assert store.ingest(_failed("crashed", attempt=1)) == LATE  # a duplicate of the old failure changes nothing
    assert store.ingest(_failed("timeout", attempt=2)) == FAILED_FINAL
    job = store.get_job("job-0")
    assert job.state == DEAD_LETTER and "failed 2 time(s)" in job.reason and "boom (timeout)" in job.reason
    assert store.ingest(_failed("timeout", attempt=2)) == DUPLICATE


def test_a_failure_a_retry_cannot_fix_fails_at_once(store):
    _sweep(store)
    assert store.ingest(_failed("load-failed")) == FAILED_FINAL
    assert store.get_job("job-0").state == FAILED and store.get_job("job-0").reason == "boom (load-failed)"


def test_counts_by_state_and_superseding_a_sweep(store, golden_record):
    _sweep(store, n_jobs=3)
    store.ingest(_ok(golden_record, job_id="job-1"))
    assert store.job_counts("s1") == {"queued": 2, "done": 1}
    store.add_sweep(SweepRow(sweep_id="s2", name="nightly", spec={}, state="running", created_at=now()), [])
    assert sorted(store.supersede_sweeps("nightly", keep="s2")) == ["job-0", "job-2"]
    assert store.job_counts("s1") == {"superseded": 2, "done": 1}
    assert store.get_sweep("nightly").sweep_id == "s2" and store.get_sweep("s1").name == "nightly"
    assert store.ingest(_ok(golden_record, job_id="job-2")) == LATE


def test_concurrent_submissions_of_one_name_leave_one_sweep_running(store):
    """Issue 14, finding 6: six at once; the last to commit runs, every other ends with no job left unsent."""
    barrier = threading.Barrier(6)
    errors = []

    def submit(i: int) -> None:
        sweep = SweepRow(sweep_id=f"c{i}", name="race", spec={}, state="running", created_at=now())
        jobs = [JobRow(job_id=f"c{i}-{k}", sweep_id=f"c{i}", model_id="m", model_name="digits", variant="tflite-fp32",
                       capability="litert:cpu", settings={}, state=PENDING, reason="", attempt=0, max_attempts=3,
                       created_at=now(), updated_at=now()) for k in range(3)]  # fmt: skip
        try:
            barrier.wait()
            store.add_sweep(sweep, jobs, supersede=True)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    sweeps = [store.get_sweep(f"c{i}") for i in range(6)]
    running = [s for s in sweeps if s.state == "running"]
    assert len(running) == 1
    assert store.job_counts(running[0].sweep_id) == {PENDING: 3}
    for s in sweeps:
        if s is not running[0]:
            assert s.state == "done" and store.job_counts(s.sweep_id) == {"superseded": 3}


def test_ad_hoc_results_still_store_once(store, golden_record):
    assert store.ingest(_ok(golden_record, job_id="adhoc")) == STORED
    assert store.ingest(_ok(golden_record, job_id="adhoc")) == DUPLICATE


def test_a_cancelled_sweep_keeps_what_finished_and_takes_no_late_result(store, golden_record):
    """Issue 14: `sweep --cancel` ends a sweep's unfinished jobs as cancelled; a result that arrives later is
    kept apart (not counted), and a newer sweep of the name does not turn the cancelled one into done."""
    _sweep(store, n_jobs=3)
    store.ingest(_ok(golden_record, job_id="job-1"))
    assert sorted(store.cancel_sweep("s1")) == ["job-0", "job-2"]
    assert store.job_counts("s1") == {"cancelled": 2, "done": 1}
    assert store.get_sweep("s1").state == "cancelled"
    assert store.ingest(_ok(golden_record, job_id="job-2")) == LATE
    assert store.job_counts("s1") == {"cancelled": 2, "done": 1} and len(store.sweep_results("s1")) == 1
    store.add_sweep(SweepRow(sweep_id="s2", name="nightly", spec={}, state="running", created_at=now()), [], supersede=True)
    assert store.get_sweep("s1").state == "cancelled"
    assert store.cancel_sweep("s1") == []  # twice: nothing left


def test_a_sweep_finished_by_a_tick_after_a_cancel_stays_cancelled(store):
    """A tick that read the sweep as running before a cancel landed does not write `done` over it."""
    _sweep(store, n_jobs=1)
    store.cancel_sweep("s1")
    store.set_sweep_state("s1", "done", only_from="running")
    assert store.get_sweep("s1").state == "cancelled"


def test_resume_sends_again_what_the_lost_broker_held(store, redis_url):
    """`sweep --resume` on the embedded fleet: queued, running, and sent-then-waiting jobs go back to pending
    (the fresh broker holds none of their messages); done ones and never-sent waiting ones are left as they are."""
    from controller.dispatch import Dispatcher
    from controller.sweeps import Scheduler

    jobs = _sweep(store, n_jobs=5)
    store.update_job("job-0", state="running", agent_id="a1", sent_attempt=1)
    store.update_job("job-1", sent_attempt=1)  # queued
    store.update_job("job-2", state="waiting-for-device", sent_attempt=1)  # sent, then its agent's heartbeat lapsed
    store.update_job("job-3", state="waiting-for-device", attempt=0, sent_attempt=0)  # never sent
    store.update_job("job-4", state="done")
    d = Dispatcher(redis_url)  # resume sends nothing itself
    try:
        unfinished = Scheduler.on_broker(store, d).resume("s1", [], resend=True)
    finally:
        d.close()
    assert unfinished == 4 and len(jobs) == 5
    states = {j.job_id: j.state for j in store.jobs("s1")}
    assert states == {"job-0": "pending", "job-1": "pending", "job-2": "pending", "job-3": "waiting-for-device", "job-4": "done"}
    assert all("resumed" in j.reason for j in store.jobs("s1") if j.state == "pending")


_COLLECTOR = """
import json, sys
import redis
from controller.collector import Collector
from controller.store import Store
url, kwargs, redis_url, name = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
store, client = Store(url, **kwargs), redis.Redis.from_url(redis_url)
sys.stdin.readline()  # both start together
done = {}
while True:
    got = Collector(client, store, name=name).drain(batch=50)
    for k, v in got.items():
        done[k] = done.get(k, 0) + v
    if not got and not client.llen("fleetbench:results"):
        break
print(json.dumps(done))
"""


def test_two_collector_processes_on_one_results_list_store_each_record_once(store, golden_record, tmp_path, request):
    """Issue 16: several collectors may run at once. Two processes drain one results list in which every
    outcome is there twice (a redelivery); each record is stored once, nothing is set aside, nothing fails
    (on SQLite that needs WAL with BEGIN IMMEDIATE for writes; on PostgreSQL the unique keys)."""
    import json
    import subprocess
    import sys

    import redis

    from controller.embedded import RedisServer
    from protocol import RESULTS_DEAD_KEY, RESULTS_KEY

    n_jobs = 120
    jobs = _sweep(store, n_jobs=n_jobs)
    bodies = [_ok(golden_record, job_id=j.job_id).to_json(samples="text") for j in jobs]
    server = RedisServer(tmp_path / "redis", tmp_path / "redis.log").start()
    try:
        client = redis.Redis.from_url(server.url)
        client.rpush(RESULTS_KEY, *[b for pair in zip(bodies, bodies) for b in pair])
        kwargs = request.getfixturevalue("pg_url")[1] if store.engine.dialect.name == "postgresql" else {}
        procs = [subprocess.Popen([sys.executable, "-c", _COLLECTOR, store.url, json.dumps(kwargs), server.url, f"c{i}"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]  # fmt: skip
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (_, err) in zip(procs, outs):
            assert p.returncode == 0, err
        done = [json.loads(out) for out, _ in outs]
        assert sum(d.get(STORED, 0) for d in done) == n_jobs
        assert sum(d.get(DUPLICATE, 0) for d in done) == n_jobs
        assert all(set(d) <= {STORED, DUPLICATE} for d in done), done
        assert client.llen(RESULTS_DEAD_KEY) == 0 and client.llen(RESULTS_KEY) == 0
        client.close()
    finally:
        server.stop()
    assert store.count_results() == n_jobs and len(store.sweep_results("s1")) == n_jobs
    assert store.job_counts("s1") == {DONE: n_jobs}

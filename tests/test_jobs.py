"""The job lifecycle without a broker: controller.jobs' pure rules from tables of cases, and the scheduler
driving a sweep on the in-memory fleet (controller/fleet/memory.py) with a real SQLite store.

The same scheduler on real Redis, Celery and agents is tested in test_sweeps.py and test_delivery.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil

import pytest

from controller import jobs
from controller.fleet.memory import MemoryFleet
from controller.jobs import FleetView, Ingest, JobState
from protocol import ArtifactRef, BenchmarkSettings, JobOutcome
from protocol.errors import ErrorKind

T0 = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.timezone.utc)


@dataclasses.dataclass
class J:
    """A job as the rules see it (a JobRow has these and more)."""

    state: str = JobState.PENDING
    attempt: int = 0
    max_attempts: int = 3
    sent_attempt: int = 0
    agent_id: str | None = None
    pinned_agent: str | None = None
    capability: str = "litert:cpu"
    expires_at: dt.datetime | None = None


CPU = FleetView({"a1": {"litert:cpu"}})
NONE = FleetView({})

# ---------------------------------------------------------------- on_tick, from a table

TICK_CASES = [
    # (name, job, fleet, started, expected: "send N" | state | None)
    ("pending with a device is sent", J(), CPU, None, "send 1"),
    ("pending without a device waits", J(), NONE, None, JobState.WAITING),
    ("pinned to an agent that is not there waits", J(pinned_agent="b7"), CPU, None, JobState.WAITING),
    ("pinned to its agent is sent", J(pinned_agent="a1"), CPU, None, "send 1"),
    ("a retry is sent as the next attempt", J(attempt=2), CPU, None, "send 3"),
    ("waiting, its device back, is sent", J(JobState.WAITING, expires_at=T0), CPU, None, "send 1"),
    ("waiting, sent before, goes back to queued", J(JobState.WAITING, 1, sent_attempt=1), CPU, None, JobState.QUEUED),
    ("waiting, not yet expired, stays", J(JobState.WAITING, expires_at=T0 + dt.timedelta(seconds=1)), NONE, None, None),
    ("waiting past its expiry expires", J(JobState.WAITING, expires_at=T0 - dt.timedelta(seconds=1)), NONE, None,
     JobState.EXPIRED),
    ("waiting with no expiry stays", J(JobState.WAITING), NONE, None, None),
    ("queued and started runs", J(JobState.QUEUED, 1), CPU, "a1", JobState.RUNNING),
    ("queued, started, device gone: still runs", J(JobState.QUEUED, 1), NONE, "a1", JobState.RUNNING),
    ("queued, not started, device there: stays", J(JobState.QUEUED, 1), CPU, None, None),
    ("waiting with its message on a queue, started, runs", J(JobState.WAITING, 1, sent_attempt=1), NONE, "a1",
     JobState.RUNNING),
    ("waiting, never sent, a stray start: still waits", J(JobState.WAITING, 1, sent_attempt=0), NONE, "a1", None),
    ("queued, not started, device gone: waits", J(JobState.QUEUED, 1), NONE, None, JobState.WAITING),
    ("running on a live agent stays", J(JobState.RUNNING, 1, agent_id="a1"), CPU, None, None),
    ("running on a lost agent is retried", J(JobState.RUNNING, 1, agent_id="gone"), CPU, None, JobState.PENDING),
    ("running, lost, last attempt: dead letter", J(JobState.RUNNING, 3, agent_id="gone"), CPU, None, JobState.DEAD_LETTER),
    ("running with no agent known stays", J(JobState.RUNNING, 1), NONE, None, None),
]  # fmt: skip


@pytest.mark.parametrize("name, job, fleet, started, expected", TICK_CASES, ids=[c[0] for c in TICK_CASES])
def test_on_tick(name, job, fleet, started, expected):
    step = jobs.on_tick(job, fleet, T0, expire_s=600, started=started)
    if expected is None:
        assert step is None
    elif isinstance(expected, str) and expected.startswith("send"):
        assert step == jobs.Send(int(expected.split()[1]))
    else:
        assert isinstance(step, jobs.Change) and step.fields["state"] == expected and step.attempt == job.attempt


def test_on_tick_says_why_and_until_when():
    wait = jobs.on_tick(J(), NONE, T0, expire_s=90)
    assert wait.fields == {"state": JobState.WAITING, "reason": "waiting for a device with litert:cpu",
                           "expires_at": T0 + dt.timedelta(seconds=90)}  # fmt: skip
    expired = jobs.on_tick(J(JobState.WAITING, expires_at=T0 - dt.timedelta(seconds=1)), NONE, T0, expire_s=90)
    assert (
        expired.fence == 0 and expired.fields["reason"] == "waiting for a device with litert:cpu: none came within 90 s"
    )
    lost = jobs.on_tick(J(JobState.RUNNING, 1, agent_id="pi-7"), CPU, T0, expire_s=90)
    assert lost.fields == {"state": JobState.PENDING, "error_kind": "agent-lost",
                           "reason": "agent pi-7 went away (no heartbeat) during attempt 1; retrying"}  # fmt: skip
    started = jobs.on_tick(J(JobState.QUEUED, 1), CPU, T0, 90, started="")
    assert started.fields == {"state": JobState.RUNNING, "agent_id": None}  # started, but not said by whom


def test_a_naive_expiry_from_sqlite_is_read_as_utc():
    naive = (T0 - dt.timedelta(seconds=1)).replace(tzinfo=None)
    assert jobs.on_tick(J(JobState.WAITING, expires_at=naive), NONE, T0, 600).fields["state"] == JobState.EXPIRED


# ---------------------------------------------------------------- on_outcome and the retry rule, from a table

OUTCOME_CASES = [
    # (name, job, outcome attempt, ok, kind, expected answer, expected state or None)
    ("the current attempt's record is stored", J(JobState.RUNNING, 1), 1, True, None, Ingest.STORED, JobState.DONE),
    ("a queued job's record is stored too", J(JobState.QUEUED, 1), 1, True, None, Ingest.STORED, JobState.DONE),
    ("an older attempt's record is late", J(JobState.RUNNING, 2), 1, True, None, Ingest.LATE, None),
    ("a superseded job's record is late", J(JobState.SUPERSEDED, 1), 1, True, None, Ingest.LATE, None),
    ("an expired job's record is late", J(JobState.EXPIRED, 1), 1, True, None, Ingest.LATE, None),
    ("a cancelled job's record is late", J(JobState.CANCELLED, 1), 1, True, None, Ingest.LATE, None),
    ("a done job's record again is a duplicate", J(JobState.DONE, 1), 1, True, None, Ingest.DUPLICATE, None),
    ("a failed job's outcome again is a duplicate", J(JobState.FAILED, 1), 1, False, "crashed", Ingest.DUPLICATE, None),
    ("a crash is retried", J(JobState.RUNNING, 1), 1, False, "crashed", Ingest.RETRY, JobState.PENDING),
    ("a time-out is retried", J(JobState.RUNNING, 2), 2, False, "timeout", Ingest.RETRY, JobState.PENDING),
    ("the last attempt's crash is a dead letter", J(JobState.RUNNING, 3), 3, False, "crashed", Ingest.FAILED_FINAL,
     JobState.DEAD_LETTER),
    ("a bad data set fails at once", J(JobState.RUNNING, 1), 1, False, "bad-dataset", Ingest.FAILED_FINAL,
     JobState.FAILED),
    ("a newer agent's unknown kind fails at once", J(JobState.RUNNING, 1), 1, False, "brand-new", Ingest.FAILED_FINAL,
     JobState.FAILED),
    ("a failure without a kind fails at once", J(JobState.RUNNING, 1), 1, False, None, Ingest.FAILED_FINAL,
     JobState.FAILED),
]  # fmt: skip


@pytest.mark.parametrize(
    "name, job, attempt, ok, kind, answer, state", OUTCOME_CASES, ids=[c[0] for c in OUTCOME_CASES]
)
def test_on_outcome(name, job, attempt, ok, kind, answer, state):
    verdict = jobs.on_outcome(job, attempt, ok, "a2", kind, "boom" if not ok else None)
    assert verdict.answer == answer
    assert verdict.fields.get("state") == state
    if state is not None:
        assert verdict.fields["agent_id"] == "a2" and verdict.fields["error_kind"] == kind


def test_the_retry_rule_counts_attempts_and_says_why():
    assert jobs.after_failure(J(attempt=1), ErrorKind.CRASHED, "it died") == {
        "state": JobState.PENDING, "reason": "it died; retrying", "error_kind": "crashed"}  # fmt: skip
    assert jobs.after_failure(J(attempt=3), "timeout", "too slow") == {
        "state": JobState.DEAD_LETTER, "reason": "failed 3 time(s), the last because too slow", "error_kind": "timeout"}  # fmt: skip
    assert jobs.after_failure(J(attempt=1), "load-failed", "no") == {"state": JobState.FAILED, "reason": "no",
                                                                     "error_kind": "load-failed"}  # fmt: skip
    failed = jobs.on_outcome(J(JobState.RUNNING, 1), 1, False, error_kind="bad-spec")
    assert failed.fields["reason"] == "failed without an error message"


def test_a_set_aside_result_is_retried_only_for_the_attempt_in_flight():
    assert jobs.on_result_set_aside(J(JobState.RUNNING, 1), 1, "bad stats").fields["state"] == JobState.PENDING
    assert jobs.on_result_set_aside(J(JobState.QUEUED, 3), None, "x").fields["state"] == JobState.DEAD_LETTER
    assert jobs.on_result_set_aside(J(JobState.RUNNING, 2), 1, "an old attempt's") is None
    assert jobs.on_result_set_aside(J(JobState.DONE, 1), 1, "after it finished") is None


# ---------------------------------------------------------------- the scheduler on the in-memory fleet


@pytest.fixture(scope="module")
def _migrated(tmp_path_factory):
    from controller.store import Store

    path = tmp_path_factory.mktemp("template") / "fb.db"
    s = Store(f"sqlite:///{path}")
    s.migrate()  # once per module: each test copies the migrated file
    s.close()
    return path


@pytest.fixture
def fleet_store(_migrated, tmp_path):
    from controller.store import Store

    path = tmp_path / "fb.db"
    shutil.copyfile(_migrated, path)
    s = Store(f"sqlite:///{path}")
    yield s
    s.close()


def _sweep(store, fleet, *, devices=("litert:cpu",), max_attempts=3, expire_after=600, name="t", n_threads=1):
    from controller.sweeps import ModelVariants, Scheduler, spec_from_dict

    sched = Scheduler(store, fleet)
    spec = spec_from_dict({"name": name, "models": [{"id": "m"}], "variants": ["tflite-fp32"], "devices": list(devices),
                           "settings": {"threads": list(range(1, n_threads + 1))}, "max_attempts": max_attempts,
                           "expire_after": expire_after})  # fmt: skip
    art = ArtifactRef(sha256="ab" * 32, uri="file:///nowhere/m.tflite", size_bytes=1, filename="m.tflite")
    model = ModelVariants(model_id="cd" * 32, name="m", dataset=None, ready={"tflite-fp32": (art, None)}, converting=[])
    return sched, sched.submit(spec, [model])


def _ok(golden_record, spec, agent="a1") -> JobOutcome:
    rec = dataclasses.replace(golden_record, job_id=spec.job_id, attempt=spec.attempt)
    return JobOutcome(job_id=spec.job_id, attempt=spec.attempt, ok=True, record=rec, agent_id=agent)


def _fail(spec, kind, agent="a1") -> JobOutcome:
    return JobOutcome(job_id=spec.job_id, attempt=spec.attempt, ok=False, error="boom", error_kind=kind, agent_id=agent)


def _state(store, sweep_id):
    (job,) = store.jobs(sweep_id)
    return job


def test_a_sweep_runs_to_done_and_its_fence_is_lifted(fleet_store, golden_record):
    fleet = MemoryFleet(fleet_store)
    fleet.add_agent("a1", "litert:cpu")
    sched, sid = _sweep(fleet_store, fleet)
    assert sched.tick(sid) == {"queued": 1}
    (sent,) = fleet.sent
    assert sent.queue == "fleetbench.cap.litert:cpu" and sent.spec.attempt == 1 and fleet.fences[sent.spec.job_id] == 1
    fleet.start(sent.spec.job_id, "a1")
    assert sched.tick(sid) == {"running": 1} and _state(fleet_store, sid).agent_id == "a1"
    fleet.finish(_ok(golden_record, sent.spec))
    assert sched.tick(sid) == {"done": 1}
    assert fleet.fences[sent.spec.job_id] == 0  # a redelivered message of it does not run again
    assert fleet_store.get_sweep(sid).state == "done" and fleet_store.count_results() == 1


def test_a_lost_agent_is_retried_on_another_and_its_late_result_kept_apart(fleet_store, golden_record):
    fleet = MemoryFleet(fleet_store)
    fleet.add_agent("a1", "litert:cpu")
    fleet.add_agent("a2", "litert:cpu")
    sched, sid = _sweep(fleet_store, fleet)
    sched.tick(sid)
    first = fleet.start(fleet.sent[0].spec.job_id, "a1")
    sched.tick(sid)
    fleet.remove_agent("a1")
    assert sched.tick(sid) == {"pending": 1}  # seen lost ...
    assert _state(fleet_store, sid).reason.endswith("during attempt 1; retrying")
    assert sched.tick(sid) == {"queued": 1}  # ... and sent again on the next tick
    job = _state(fleet_store, sid)
    assert job.error_kind == "agent-lost" and job.attempt == 2 and fleet.fences[job.job_id] == 2
    second = fleet.start(job.job_id, "a2")
    fleet.finish(_ok(golden_record, first, "a1"))  # the stale attempt's result arrives after all
    assert sched.tick(sid) == {"running": 1}
    fleet.finish(_ok(golden_record, second, "a2"))
    assert sched.tick(sid) == {"done": 1}
    assert fleet_store.count_results() == 1 and fleet_store.count_superseded(job.job_id) == 1


def test_crashes_are_retried_then_dead_lettered(fleet_store):
    fleet = MemoryFleet(fleet_store)
    fleet.add_agent("a1", "litert:cpu")
    sched, sid = _sweep(fleet_store, fleet, max_attempts=2)
    sched.tick(sid)
    fleet.finish(_fail(fleet.start(fleet.sent[-1].spec.job_id, "a1"), "crashed"))
    assert sched.tick(sid) == {"queued": 1} and [s.spec.attempt for s in fleet.sent] == [1, 2]
    fleet.finish(_fail(fleet.start(fleet.sent[-1].spec.job_id, "a1"), "crashed"))
    assert sched.tick(sid) == {"dead-letter": 1}
    job = _state(fleet_store, sid)
    assert job.reason == "failed 2 time(s), the last with (crashed): boom"
    assert len(fleet.sent) == 2 and fleet.fences[job.job_id] == 0 and fleet_store.get_sweep(sid).state == "done"


def test_a_bad_result_is_set_aside_and_the_job_sent_again(fleet_store, golden_record):
    fleet = MemoryFleet(fleet_store)
    fleet.add_agent("a1", "litert:cpu")
    sched, sid = _sweep(fleet_store, fleet)
    sched.tick(sid)
    spec = fleet.start(fleet.sent[-1].spec.job_id, "a1")
    bad = _ok(golden_record, spec).to_dict()
    bad["record"]["stats"]["p50_ms"] *= 3
    import json

    fleet.finish_raw(json.dumps(bad))
    assert sched.tick(sid) == {"queued": 1}
    job = _state(fleet_store, sid)
    assert job.error_kind == "bad-result" and job.attempt == 2 and fleet_store.count_results() == 0


def test_a_job_waits_for_its_device_then_expires(fleet_store):
    fleet = MemoryFleet(fleet_store)
    fleet.add_agent("a1", "litert:cpu")  # seen once, so the selector expands; then it goes
    sched, sid = _sweep(fleet_store, fleet, devices=("litert:cpu",), expire_after=0.05)
    fleet.remove_agent("a1")
    assert sched.tick(sid) == {"waiting-for-device": 1}
    assert _state(fleet_store, sid).reason == "waiting for a device with litert:cpu"
    import time

    time.sleep(0.1)
    assert sched.tick(sid) == {"expired": 1}
    assert fleet.sent == [] and fleet.fences[_state(fleet_store, sid).job_id] == 0


def test_a_waiting_job_is_sent_when_its_device_comes(fleet_store):
    fleet = MemoryFleet(fleet_store)
    fleet.add_agent("a1", "litert:cpu")
    sched, sid = _sweep(fleet_store, fleet)
    fleet.remove_agent("a1")
    assert sched.tick(sid) == {"waiting-for-device": 1}
    fleet.add_agent("a9", "litert:cpu")
    assert sched.tick(sid) == {"queued": 1} and len(fleet.sent) == 1


def test_a_new_sweep_of_the_same_name_supersedes_the_old_ones_jobs(fleet_store, golden_record):
    fleet = MemoryFleet(fleet_store)
    fleet.add_agent("a1", "litert:cpu")
    sched, old = _sweep(fleet_store, fleet, n_threads=2)
    sched.tick(old)
    spec = fleet.start(fleet.sent[0].spec.job_id, "a1")
    _, new = _sweep(fleet_store, fleet)
    assert fleet_store.job_counts(old) == {"superseded": 2}
    assert all(fleet.fences[s.spec.job_id] == 0 for s in fleet.sent)  # their queued messages are not run
    fleet.finish(_ok(golden_record, spec))  # the old sweep's result is kept apart, not counted
    assert sched.tick(new) == {"queued": 1}
    assert fleet_store.count_results() == 0 and fleet_store.count_superseded(spec.job_id) == 1


def test_a_cancelled_sweep_fences_its_jobs(fleet_store):
    fleet = MemoryFleet(fleet_store)
    fleet.add_agent("a1", "litert:cpu")
    sched, sid = _sweep(fleet_store, fleet, n_threads=3)
    sched.tick(sid)
    assert sched.cancel(sid) == 3
    assert fleet_store.job_counts(sid) == {"cancelled": 3} and set(fleet.fences.values()) == {0}
    assert sched.tick(sid) == {"cancelled": 3} and len(fleet.sent) == 3


def test_settings_a_job_was_sent_with_travel_to_the_agent(fleet_store):
    fleet = MemoryFleet(fleet_store)
    fleet.add_agent("pi-7", "litert:cpu")
    sched, sid = _sweep(fleet_store, fleet, devices=("agent:pi-7",), n_threads=2)
    sched.tick(sid)
    assert sorted(s.spec.settings.threads for s in fleet.sent) == [1, 2]
    assert {s.queue for s in fleet.sent} == {"fleetbench.agent.pi-7"}
    assert all(isinstance(s.spec.settings, BenchmarkSettings) for s in fleet.sent)


def test_a_tick_looks_only_at_the_jobs_something_happened_to(fleet_store, monkeypatch):
    """Issue 16: the scheduler's work follows events, not active jobs x ticks. With nothing happening a
    tick loads no job row; a start loads that job; an agent going away loads the queued and running jobs;
    and the periodic full pass still looks at every active one."""
    from controller.sweeps import scheduler as S

    fleet = MemoryFleet(fleet_store)
    fleet.add_agent("a1", "litert:cpu")
    fleet.add_agent("a2", "litert:cpu")
    sched, sid = _sweep(fleet_store, fleet, n_threads=8)
    assert sched.tick(sid) == {"queued": 8}
    loaded = []
    for name in ("jobs", "jobs_by_id"):
        real = getattr(fleet_store, name)
        monkeypatch.setattr(fleet_store, name, lambda *a, _real=real, **k: _count(loaded, _real(*a, **k)))
    for _ in range(3):
        assert sched.tick(sid) == {"queued": 8}
    assert loaded == []  # nothing happened: no job looked at
    ids = [s.spec.job_id for s in fleet.sent]
    for job_id in ids[:3]:
        fleet.start(job_id, "a1")
    assert sched.tick(sid) == {"queued": 5, "running": 3}
    assert sorted(j.job_id for j in loaded) == sorted(ids[:3])  # the three started, nothing else
    loaded.clear()
    assert sched.tick(sid) == {"queued": 5, "running": 3} and loaded == []
    fleet.remove_agent("a1")
    assert sched.tick(sid) == {"queued": 5, "pending": 3}  # its three are seen lost
    assert sorted(j.job_id for j in loaded) == sorted(ids[:3])  # only the jobs running on it: a2 still takes the queued
    loaded.clear()
    monkeypatch.setattr(S, "FULL_PASS_S", -1.0)
    assert sched.tick(sid) == {"queued": 8}  # the three sent again ...
    assert sorted(j.job_id for j in loaded) == sorted(ids[:3])  # ... and the full pass read only what could move
    loaded.clear()
    fleet_store.update_job(ids[5], state="running", agent_id="ghost")  # a move no event told the scheduler of
    assert sched.tick(sid) == {"queued": 7, "pending": 1}  # the full pass heals it: ghost is not live
    assert [j.job_id for j in loaded] == [ids[5]]


def _count(loaded: list, rows: list) -> list:
    loaded.extend(rows)
    return rows


def test_a_send_the_broker_fails_goes_back_to_pending_and_is_sent_again_as_a_new_attempt(fleet_store):
    """Review of issue 16: a batch marked queued whose send fails must not stay queued with no message."""
    fleet = MemoryFleet(fleet_store)
    fleet.add_agent("a1", "litert:cpu")
    sched, sid = _sweep(fleet_store, fleet, n_threads=3)
    real = fleet.send_many

    def broken(sends):
        raise ConnectionError("the broker went away")

    fleet.send_many = broken
    with pytest.raises(ConnectionError):
        sched.tick(sid)
    assert fleet_store.job_counts(sid) == {"pending": 3} and fleet.sent == []
    fleet.send_many = real
    assert sched.tick(sid) == {"queued": 3}
    assert sorted(s.spec.attempt for s in fleet.sent) == [2, 2, 2]  # attempt 1 may have gone out: it is fenced off
    assert all(fleet.fences[s.spec.job_id] == 2 for s in fleet.sent)


def test_a_lost_agent_among_hundreds_touches_only_its_own_job(fleet_store, golden_record, monkeypatch):
    """1% of 300 busy agents crash: each of their jobs is sent again, and the tick reads only those jobs
    from the store, not every running one (controller.fleet.presence's change log)."""
    fleet = MemoryFleet(fleet_store)
    for i in range(300):
        fleet.add_agent(f"a{i:03d}", "litert:cpu")
    sched, sid = _sweep(fleet_store, fleet, n_threads=300)
    assert sched.tick(sid) == {"queued": 300}
    for i, sent in enumerate(fleet.sent):
        fleet.start(sent.spec.job_id, f"a{i:03d}")
    assert sched.tick(sid) == {"running": 300}
    loaded, real = [], fleet_store.jobs
    monkeypatch.setattr(fleet_store, "jobs", lambda *a, **k: _count(loaded, real(*a, **k)))
    lost = {"a007", "a150", "a299"}
    for agent in lost:
        fleet.remove_agent(agent)
    assert sched.tick(sid) == {"running": 297, "pending": 3}
    assert {j.agent_id for j in loaded} == lost and len(loaded) == 3  # not the 297 still running
    assert sched.tick(sid) == {"running": 297, "queued": 3}
    resent = [s.spec for s in fleet.sent[300:]]
    assert len(resent) == 3 and {s.attempt for s in resent} == {2}

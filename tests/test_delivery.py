"""Delivery guarantees, each with real Redis and real agent processes: nothing lost, nothing stored twice."""

import json
import subprocess
import sys
import time
import uuid

import pytest
from sqlalchemy.exc import SQLAlchemyError

from agent.outbox import Outbox
from controller.artifacts import ArtifactStore
from controller.collector import DEAD_KEY
from controller.dispatch import Dispatcher
from controller.embedded import LocalAgent, RedisServer
from controller.errors import DispatchError
from controller.store import Store, StoreError
from controller.store.jobs import DEAD_LETTER, DONE, RUNNING
from controller.sweeps import ModelVariants, Scheduler, SweepSpec
from protocol import BENCHMARK_TASK, RESULTS_KEY, STARTED_KEY, BenchmarkSettings, JobSpec, agent_queue, new_job_id
from tests.helpers import wait_outcome

#: max_iterations: a job asked for seconds of sampling gets them (up to a million samples). The tiny model takes
#: the default 200,000 in ~0.25 s, and since outcomes cost the agent no JSON per sample the whole job can end
#: inside one 0.3 s tick, before a test sees it running and stops its broker or kills its agent.
SHORT = dict(threads=1, warmup_iterations=2, timeout_s=9, max_iterations=1_000_000)
#: agents in these tests hand back unacknowledged jobs quickly
FAST_REDELIVERY = ("--visibility-timeout", "20", "--job-time-limit", "10")


def _agent(broker_url, tmp_path, name="a", *extra, state_dir=None):
    agent_id = f"{name}-{uuid.uuid4().hex[:6]}"
    return LocalAgent(broker_url, agent_id, tmp_path / f"{agent_id}.log", capabilities=("litert:cpu",),
                      extra_args=tuple(extra), state_dir=state_dir or tmp_path / f"{agent_id}-state")  # fmt: skip


def _online(agent, dispatcher, timeout_s=60):
    agent.wait_ready(lambda: agent.agent_id in {a.agent_id for a in dispatcher.live_agents()}, timeout_s=timeout_s)
    return agent


def _sweep(scheduler, tiny_model, tmp_path, settings: list[BenchmarkSettings], max_attempts=3, name="delivery"):
    art = ArtifactStore(tmp_path / "artifacts").put_file(tiny_model["path"])
    spec = SweepSpec(name=name, models=[], variants=["tflite-fp32"], devices=["litert:cpu"], settings=settings,
                     expire_after_s=120, max_attempts=max_attempts)  # fmt: skip
    return scheduler.submit(spec, [ModelVariants("tiny-model", "tiny", None, {"tflite-fp32": (art, None)}, [])])


def _tick_until(scheduler, sweep_id, done, timeout_s=120, outage_ok=False):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = scheduler.tick(sweep_id)
            if done(last):
                return last
        except (StoreError, SQLAlchemyError, DispatchError):
            if not outage_ok:
                raise
        time.sleep(0.3)
    raise AssertionError(f"sweep did not get there within {timeout_s} s; last counts {last}")


def _all_final(counts):
    return counts and sum(n for s, n in counts.items() if s in ("done", "failed", "dead-letter", "expired")) == sum(counts.values())


@pytest.fixture
def scheduler_on(tmp_path):
    made = []

    def _make(broker_url, store):
        d = Dispatcher(broker_url)
        made.append(d)
        return Scheduler.on_broker(store, d)

    yield _make
    for d in made:
        d.close()


def test_pickle_message_is_refused_and_never_run(clean_redis_url, tmp_path, tiny_model):
    redis_url = clean_redis_url
    d = Dispatcher(redis_url)
    agent = _online(_agent(redis_url, tmp_path).start(), d)
    try:
        art = ArtifactStore(tmp_path / "artifacts").put_file(tiny_model["path"])
        spec = JobSpec(job_id=new_job_id(), model_id="m", model_name="tiny", variant="tflite-fp32",
                       capability="litert:cpu", artifact=art, settings=BenchmarkSettings(**SHORT, min_iterations=100, min_duration_s=0.0))  # fmt: skip
        pickled = d.app.send_task(BENCHMARK_TASK, args=[spec.to_dict()], queue=agent_queue(agent.agent_id),
                                  serializer="pickle", task_id=f"{spec.job_id}.1")  # fmt: skip
        # the same job as JSON runs; by then the pickled one was long taken off the queue
        spec2 = JobSpec.from_dict(dict(spec.to_dict(), job_id=new_job_id()))
        outcome = wait_outcome(d, d.app.send_task(BENCHMARK_TASK, args=[spec2.to_dict()], queue=agent_queue(agent.agent_id),
                                         task_id=f"{spec2.job_id}.1"), spec2, check=agent.check_alive)  # fmt: skip
        assert outcome.ok
        assert pickled.id.startswith(spec.job_id)
        seen = [json.loads(x)["job_id"] for key in (STARTED_KEY, RESULTS_KEY) for x in d.redis.lrange(key, 0, -1)]
        assert spec2.job_id in seen and spec.job_id not in seen  # never started, never finished
        log = agent.log_path.read_text()
        assert "refused a task message and discarded it: Refusing to deserialize untrusted content" in log, log[-3000:]
        assert "Traceback" not in log  # one line, not Celery's traceback and body dump
        relayed = [json.loads(x)["job_id"] for x in d.redis.lrange(RESULTS_KEY, 0, -1)]
        assert spec2.job_id in relayed and spec.job_id not in relayed
    finally:
        agent.stop()
        d.close()


@pytest.mark.parametrize("visibility, limit", [(60, 120), (300, 300)])
def test_agent_refuses_a_visibility_timeout_not_above_the_time_limit(visibility, limit):
    r = subprocess.run([sys.executable, "-m", "agent", "--broker", "redis://127.0.0.1:1/0", "--visibility-timeout",
                        str(visibility), "--job-time-limit", str(limit)], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2
    assert "visibility timeout" in r.stderr and "must be longer than the job time limit" in r.stderr


def test_results_wait_for_a_stopped_controller_and_arrive_once(sqlite_store, clean_redis_url, tmp_path, tiny_model, scheduler_on):
    store = sqlite_store
    sched = scheduler_on(clean_redis_url, store)
    agent = _online(_agent(clean_redis_url, tmp_path).start(), sched.dispatcher)
    try:
        settings = [BenchmarkSettings(**SHORT, min_duration_s=0.0, min_iterations=100 + i) for i in range(3)]
        sweep_id = _sweep(sched, tiny_model, tmp_path, settings, name="no-controller")
        # send them, then "stop the controller": nobody collects while the agent finishes
        _tick_until(sched, sweep_id, lambda c: c.get("queued", 0) + c.get("running", 0) == 3)
        deadline = time.monotonic() + 60
        while sched.collector.pending() < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sched.collector.pending() == 3 and store.count_results() == 0
        # the same results delivered again (a relay that retried): still one row each
        for raw in sched.dispatcher.redis.lrange(RESULTS_KEY, 0, -1):
            sched.dispatcher.redis.rpush(RESULTS_KEY, raw, raw)
        counts = _tick_until(sched, sweep_id, _all_final)
    finally:
        agent.stop()
    assert counts == {DONE: 3}
    assert store.count_results() == 3 and sched.collector.pending() == 0


def test_stopped_postgres_while_jobs_finish_loses_nothing(clean_redis_url, tmp_path, tiny_model, own_postgres, scheduler_on):
    store = Store(own_postgres.url)
    store.migrate()
    sched = scheduler_on(clean_redis_url, store)
    agent = _online(_agent(clean_redis_url, tmp_path).start(), sched.dispatcher)
    try:
        settings = [BenchmarkSettings(**SHORT, min_duration_s=0.5, min_iterations=100 + i) for i in range(4)]
        sweep_id = _sweep(sched, tiny_model, tmp_path, settings, name="pg-down")
        _tick_until(sched, sweep_id, lambda c: c.get("done", 0) >= 1)
        own_postgres.stop()  # jobs keep finishing; their results wait in the broker
        with pytest.raises((StoreError, SQLAlchemyError)):
            sched.tick(sweep_id)
        deadline = time.monotonic() + 60
        while sched.collector.pending() < 3 and time.monotonic() < deadline:
            time.sleep(0.3)
        time.sleep(1.0)
        own_postgres.start()
        counts = _tick_until(sched, sweep_id, _all_final, outage_ok=True)
    finally:
        agent.stop()
    assert counts == {DONE: 4}
    assert store.count_results() == 4 and len({r.job_id for r in store.sweep_results(sweep_id)}) == 4
    assert sched.collector.pending() == 0
    assert sched.collector.redis.llen(DEAD_KEY) == 0  # an outage is retried, never set aside as a bad message
    store.close()


def test_stopped_broker_and_agent_restart_keep_the_result(sqlite_store, tmp_path, tiny_model, scheduler_on):
    store = sqlite_store
    broker = RedisServer(tmp_path / "redis", tmp_path / "redis.log", persist=True).start()
    sched = scheduler_on(broker.url, store)
    state = tmp_path / "agent-state"
    agent = _online(_agent(broker.url, tmp_path, "restart", *FAST_REDELIVERY, state_dir=state).start(), sched.dispatcher)
    second = None
    try:
        sweep_id = _sweep(sched, tiny_model, tmp_path, [BenchmarkSettings(**SHORT, min_iterations=100, min_duration_s=3.0)], name="broker-down")
        _tick_until(sched, sweep_id, lambda c: c.get(RUNNING, 0) == 1)
        broker.stop()  # the job finishes while the broker is down: its outcome waits in the outbox
        outbox = Outbox(state / agent.agent_id / "outbox.db")
        deadline = time.monotonic() + 60
        while len(outbox) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(outbox) == 1
        agent.kill()  # and the agent restarts, with the broker still down
        broker = RedisServer(tmp_path / "redis", tmp_path / "redis.log", port=broker.port, persist=True).start()
        second = LocalAgent(broker.url, agent.agent_id, tmp_path / "again.log", capabilities=("litert:cpu",),
                            extra_args=FAST_REDELIVERY, state_dir=state).start()  # fmt: skip
        counts = _tick_until(sched, sweep_id, _all_final, outage_ok=True)
        assert "result(s) from before a restart, relaying" in (tmp_path / "again.log").read_text()
    finally:
        for a in (agent, second):
            if a is not None:
                a.stop()
        broker.stop()
    assert counts == {DONE: 1} and store.count_results() == 1 and len(outbox) == 0


@pytest.mark.slow
def test_kill_9_agent_mid_job_runs_it_again_on_another_and_stores_one_record(sqlite_store, clean_redis_url, tmp_path, tiny_model, scheduler_on):
    store = sqlite_store
    sched = scheduler_on(clean_redis_url, store)
    agents = [_online(_agent(clean_redis_url, tmp_path, n, *FAST_REDELIVERY).start(), sched.dispatcher) for n in ("k1", "k2")]
    try:
        sweep_id = _sweep(sched, tiny_model, tmp_path, [BenchmarkSettings(**SHORT, min_iterations=100, min_duration_s=6.0)], name="kill9")
        _tick_until(sched, sweep_id, lambda c: c.get(RUNNING, 0) == 1)
        (job,) = store.jobs(sweep_id)
        victim = next(a for a in agents if a.agent_id == job.agent_id)
        victim.kill()
        counts = _tick_until(sched, sweep_id, _all_final, timeout_s=120)
        (job,) = store.jobs(sweep_id)
        # the killed agent's message comes back after the visibility timeout; the fence keeps it from running
        time.sleep(25)
        sched.tick(sweep_id)
    finally:
        for a in agents:
            a.stop()
    survivor = next(a for a in agents if a is not victim)
    assert counts == {DONE: 1}
    assert job.attempt == 2 and job.agent_id == survivor.agent_id
    (record,) = store.sweep_results(sweep_id)
    assert record.agent_id == survivor.agent_id and record.attempt == 2
    assert store.count_results() == 1 and store.count_superseded(job.job_id) == 0


def test_a_job_that_keeps_failing_goes_to_dead_letter(sqlite_store, clean_redis_url, tmp_path, tiny_model, scheduler_on):
    store = sqlite_store
    sched = scheduler_on(clean_redis_url, store)
    agent = _online(_agent(clean_redis_url, tmp_path).start(), sched.dispatcher)
    try:
        # it runs past its own time limit every time: the child is killed, the job fails as a time-out
        hang = BenchmarkSettings(threads=1, warmup_iterations=0, min_iterations=10**7, max_iterations=10**7,
                                 min_duration_s=60, max_duration_s=60, timeout_s=1.5)  # fmt: skip
        sweep_id = _sweep(sched, tiny_model, tmp_path, [hang], max_attempts=2, name="dead-letter")
        counts = _tick_until(sched, sweep_id, _all_final, timeout_s=90)
    finally:
        agent.stop()
    (job,) = store.jobs(sweep_id)
    assert counts == {DEAD_LETTER: 1} and job.attempt == 2
    assert "failed 2 time(s)" in job.reason and "timeout" in job.reason
    assert store.count_results() == 0


def test_items_on_a_queue_that_are_not_task_messages_do_not_stop_the_agent(clean_redis_url, tmp_path, tiny_model):
    """Issue 14 (found by bench/soak.py): kombu decodes each popped item inside the worker's event loop, so bytes
    that are not JSON stopped the agent with "Unrecoverable error". Each bad item is now one log line."""
    d = Dispatcher(clean_redis_url)
    agent = _online(_agent(clean_redis_url, tmp_path).start(), d)
    try:
        queue = agent_queue(agent.agent_id)
        junk = [b"{not json \xff", b"5", b"[1, 2]", b"{}", b'{"properties": 5}',
                b'{"body": "!!not base64", "properties": {"delivery_tag": "t1", "body_encoding": "base64"}}',
                b'{"body": "", "headers": 7, "properties": {"delivery_tag": "t2"}}',
                b'{"__type__": "datetime", "__value__": 5}', b"[" * 200_000]  # kombu's decoder: TypeError, RecursionError  # fmt: skip
        d.redis.lpush(queue, *junk)
        bad_args = [d.app.send_task(BENCHMARK_TASK, args=args, queue=queue, task_id=f"bad-{i}.1")
                    for i, args in enumerate(([], [5], [{"job_id": "j", "settings": "x", "artifact": 5}], [{}, 2]))]  # fmt: skip
        art = ArtifactStore(tmp_path / "artifacts").put_file(tiny_model["path"])
        spec = JobSpec(job_id=new_job_id(), model_id="m", model_name="tiny", variant="tflite-fp32", capability="litert:cpu",
                       artifact=art, settings=BenchmarkSettings(**SHORT, min_iterations=50, min_duration_s=0.0))  # fmt: skip
        outcome = wait_outcome(d, d.app.send_task(BENCHMARK_TASK, args=[spec.to_dict()], queue=queue, task_id=f"{spec.job_id}.1"),
                         spec, check=agent.check_alive)  # fmt: skip
        assert outcome.ok and agent.alive()
        log = agent.log_path.read_text()
        assert "Unrecoverable error" not in log
        assert log.count("that is not a Celery task message") == len(junk), log[-3000:]
        # the three that are no job spec at all are refused in one line each; "j" has an id: its refusal is an outcome
        assert log.count("refused a job message whose argument is") == 3, log[-3000:]
        outcomes = {json.loads(x)["job_id"]: json.loads(x).get("error_kind") for x in d.redis.lrange(RESULTS_KEY, 0, -1)}
        assert len(bad_args) == 4 and {k for k, v in outcomes.items() if v == "bad-spec"} == {"j"}, outcomes
        assert "AttributeError" not in log and d.redis.llen(queue) == 0
    finally:
        agent.stop()
        d.close()

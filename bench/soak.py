"""Soak: a fleet of 2 real agents on random small sweeps, with poison messages and agent kills.

    .venv/bin/python bench/soak.py [--minutes 30] [--poison-every 60] [--kill-every 300] [--seed 1]
                                   [--db sqlite:///... | postgresql+psycopg://...]

Real parts on loopback: a private redis-server, the sweep scheduler and the
results collector in this process, a SQLite (or PostgreSQL) store, and two
``python -m agent`` processes benchmarking a tiny TFLite model on litert:cpu.

- Sweeps of 1 to 8 jobs (random iterations and threads) run one after
  another until the time is up.
- Every ``--poison-every`` seconds one poison message is injected, in turn:
  a results-list item that is not JSON, one whose stats do not follow from its
  samples, one that is not an outcome at all, a 2 MiB blob, a pickled Celery
  task, a JSON task whose arguments are not a job, and raw bytes on an
  agent's Celery queue.
- Every ``--kill-every`` seconds one agent (in turn) is killed with SIGKILL
  mid-sweep and started again 15 s later with the same id and outbox, as a
  device that lost power and came back.

At the end every job must be ``done`` with exactly one counted record, every
agent outbox must be empty, and every poisoned results item must be in the
dead-letter list. Prints one table for docs/benchmarks.md and exits 1 if a
record was lost or stored twice.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fleet import tiny_tflite  # noqa: E402
from controller.artifacts import ArtifactStore  # noqa: E402
from controller.collector import DEAD_KEY  # noqa: E402
from controller.dispatch import Dispatcher  # noqa: E402
from controller.embedded import LocalAgent, RedisServer  # noqa: E402
from controller.store import Store  # noqa: E402
from controller.store.jobs import ACTIVE_STATES, DONE, QUEUED, RUNNING  # noqa: E402
from controller.sweeps import ModelVariants, Scheduler, SweepSpec  # noqa: E402
from protocol import BENCHMARK_TASK, RESULTS_KEY, BenchmarkSettings, JobOutcome, ResultRecord, agent_queue  # noqa: E402

#: agents hand an unacknowledged job back after 20 s, so a killed agent's job runs again soon
AGENT_ARGS = ("--visibility-timeout", "20", "--job-time-limit", "10")
DOWN_S = 15.0
POISON_KINDS = ("not-json", "bad-stats", "not-an-outcome", "oversized", "pickle-task", "bad-args-task", "raw-queue-bytes")
RESULTS_POISON = {"not-json", "bad-stats", "not-an-outcome", "oversized"}


def _golden() -> ResultRecord:
    return ResultRecord.from_dict(json.loads((ROOT / "tests/data/golden_record_litert_cpu.json").read_text()))


def poison(kind: str, d: Dispatcher, agent_id: str, n: int) -> None:
    """One hostile message of ``kind``: onto the results list, or onto an agent's Celery queue."""
    job_id = f"poison-{n}-{uuid.uuid4().hex[:6]}"
    if kind == "not-json":
        d.redis.rpush(RESULTS_KEY, b"{not json" + bytes([0xFF, 0xFE]))
    elif kind == "bad-stats":
        rec = _golden()
        doc = json.loads(JobOutcome(job_id=job_id, attempt=1, ok=True, record=rec, agent_id=agent_id).to_json())
        doc["record"]["job_id"] = job_id
        doc["record"]["stats"]["p50_ms"] *= 3  # valid JSON whose stats do not follow from its samples
        d.redis.rpush(RESULTS_KEY, json.dumps(doc))
    elif kind == "not-an-outcome":
        d.redis.rpush(RESULTS_KEY, json.dumps({"job_id": 7, "attempt": "x"}))
    elif kind == "oversized":
        d.redis.rpush(RESULTS_KEY, b"[" + b"1," * (1 << 20) + b"1]")
    elif kind == "pickle-task":
        d.app.send_task(BENCHMARK_TASK, args=[{"job_id": job_id}], queue=agent_queue(agent_id), serializer="pickle",
                        task_id=f"{job_id}.1")  # fmt: skip
    elif kind == "bad-args-task":
        d.app.send_task(BENCHMARK_TASK, args=[{"job_id": job_id, "settings": "x", "artifact": 5}],
                        queue=agent_queue(agent_id), task_id=f"{job_id}.1")  # fmt: skip
    elif kind == "raw-queue-bytes":
        d.redis.lpush(agent_queue(agent_id), b"\x80\x04\x95garbage\x00\xff{not a kombu message")
    else:
        raise ValueError(kind)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--poison-every", type=float, default=60.0, help="seconds between poison messages (default 60)")
    p.add_argument("--kill-every", type=float, default=300.0, help="seconds between agent kills (default 300)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--db", default=None, help="store URL (default: SQLite in the work folder)")
    args = p.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="fleetbench-soak-"))
    print(f"work folder {work}", flush=True)
    art = ArtifactStore(work / "artifacts").put_file(tiny_tflite(work / "tiny.tflite"))
    broker = RedisServer(work / "redis", work / "redis.log").start()
    store = Store(args.db or f"sqlite:///{work / 'soak.db'}")
    store.migrate()
    d = Dispatcher(broker.url)
    sched = Scheduler.on_broker(store, d)
    agent_args = (*AGENT_ARGS, "--file-root", str(work / "artifacts"))  # the artifacts are file:// URIs here
    agents = [LocalAgent(broker.url, f"soak-{i}", work / f"agent{i}.log", ("litert:cpu",), agent_args,
                         state_dir=work / f"agent{i}-state").start() for i in range(2)]  # fmt: skip

    def restarted(a: LocalAgent) -> LocalAgent:
        """The same agent again (id, log, outbox), as a device that lost power and came back."""
        return LocalAgent(broker.url, a.agent_id, a.log_path, a.capabilities, a.extra_args, state_dir=a.state_dir).start()

    def live() -> set[str]:
        return {a.agent_id for a in d.live_agents()}

    for a in agents:
        a.wait_ready(lambda a=a: a.agent_id in live(), timeout_s=120)
    figures: Counter = Counter()
    poisoned: Counter = Counter()
    sweep_walls, sweep_ids, down = [], [], {}
    t_start = time.monotonic()
    end = t_start + 60 * args.minutes
    next_poison, next_kill = t_start + args.poison_every, t_start + args.kill_every
    try:
        while time.monotonic() < end:
            n_jobs = rng.randint(1, 8)
            settings = [BenchmarkSettings(threads=rng.choice((1, 2)), warmup_iterations=3, min_iterations=rng.randint(30, 300),
                                          min_duration_s=rng.choice((0.0, 0.2, 0.5)), timeout_s=9)
                        for _ in range(n_jobs)]  # fmt: skip
            spec = SweepSpec(name=f"soak-{len(sweep_ids)}", models=[], variants=["tflite-fp32"], devices=["litert:cpu"],
                             settings=settings, expire_after_s=600, max_attempts=5)  # fmt: skip
            sweep_id = sched.submit(spec, [ModelVariants("soak-model", "tiny", None, {"tflite-fp32": (art, None)}, [])])
            sweep_ids.append(sweep_id)
            t0 = time.monotonic()
            while True:
                counts = sched.tick(sweep_id, wait_s=0.5)
                now = time.monotonic()
                if now >= next_poison:
                    kind = POISON_KINDS[sum(poisoned.values()) % len(POISON_KINDS)]
                    poison(kind, d, rng.choice(agents).agent_id, sum(poisoned.values()))
                    poisoned[kind] += 1
                    next_poison += args.poison_every
                if now >= next_kill:
                    i = figures["agent kills"] % len(agents)
                    in_flight = store.jobs(sweep_id, states=(QUEUED, RUNNING))
                    figures["jobs running on the killed agent"] += sum(j.agent_id == agents[i].agent_id for j in in_flight)
                    figures["jobs queued or running at a kill"] += len(in_flight)
                    agents[i].kill()
                    figures["agent kills"] += 1
                    down[i] = now + DOWN_S
                    next_kill += args.kill_every
                    print(f"[{(now - t_start) / 60:5.1f} min] killed {agents[i].agent_id} (kill -9)", flush=True)
                for i, back_at in list(down.items()):
                    if now >= back_at:
                        agents[i] = restarted(agents[i])
                        del down[i]
                for i, a in enumerate(agents):
                    if i not in down and not a.alive():
                        figures["agents that died unasked"] += 1
                        print(f"{a.agent_id} died unasked; its log ends:\n{a.log_path.read_text()[-2000:]}", flush=True)
                        down[i] = now
                if not any(counts.get(s) for s in ACTIVE_STATES):
                    break
                if now - t0 > 600:
                    print(f"sweep {spec.name} did not finish within 600 s: {counts}", flush=True)
                    figures["sweeps stuck"] += 1
                    break
            sweep_walls.append(time.monotonic() - t0)
            figures["jobs"] += n_jobs
            elapsed = (time.monotonic() - t_start) / 60
            print(f"[{elapsed:5.1f}/{args.minutes:g} min] sweep {spec.name}: {n_jobs} job(s) in {sweep_walls[-1]:.1f} s; "
                  f"{figures['jobs']} jobs, {sum(poisoned.values())} poison, {figures['agent kills']} kill(s) so far", flush=True)  # fmt: skip
        # let the last outboxes drain into the store
        for i in list(down):
            agents[i] = restarted(agents[i])
        for _ in range(20):
            sched.drain(block_s=0.5)
        return report(args, store, d, sweep_ids, figures, poisoned, sweep_walls, agents, t_start)
    finally:
        for a in agents:
            a.stop()
        d.close()
        broker.stop()
        store.close()


def report(args, store, d, sweep_ids, figures, poisoned, sweep_walls, agents, t_start) -> int:
    import sqlalchemy

    from agent.outbox import Outbox

    jobs = [j for s in sweep_ids for j in store.jobs(s)]
    states = Counter(j.state for j in jobs)
    with store.engine.connect() as c:
        rows = c.execute(sqlalchemy.text("SELECT job_id, superseded FROM results")).all()
    counted = Counter(job_id for job_id, superseded in rows if not superseded)
    job_ids = {j.job_id for j in jobs}
    lost = sum(1 for j in job_ids if counted[j] == 0)
    duplicated = sum(1 for j in job_ids if counted[j] > 1)
    strangers = sum(1 for j in counted if j not in job_ids)
    left_in_outboxes = 0
    for a in agents:
        for db in Path(a.state_dir).rglob("outbox.db"):
            left_in_outboxes += len(Outbox(db))
    dead = d.redis.llen(DEAD_KEY)
    logs = "".join(Path(a.log_path).read_text(errors="replace") for a in agents)
    rows = {
        "minutes": (time.monotonic() - t_start) / 60,
        "sweeps": len(sweep_ids),
        "jobs": len(jobs),
        "jobs done": states[DONE],
        "jobs in other states (by error kind)": dict(Counter(f"{j.state} ({j.error_kind})" for j in jobs if j.state != DONE)) or 0,
        "jobs that needed more than one attempt": sum(1 for j in jobs if j.attempt > 1),
        "records lost": lost,
        "records stored twice": duplicated,
        "records for jobs not in a sweep": strangers,
        "results left in agent outboxes": left_in_outboxes,
        "poison messages": f"{sum(poisoned.values())} ({', '.join(f'{k} {v}' for k, v in sorted(poisoned.items()))})",
        "results set aside (dead-letter list)": f"{dead} of {sum(poisoned[k] for k in RESULTS_POISON)} poisoned",
        "agent kills (kill -9, back after 15 s)": figures["agent kills"],
        "jobs queued or running at a kill (of them on the killed agent)":
            f"{figures['jobs queued or running at a kill']} ({figures['jobs running on the killed agent']})",
        "agents that died unasked": figures["agents that died unasked"],
        "sweeps stuck past 600 s": figures["sweeps stuck"],
        "sweep wall p50 / max s": f"{statistics.median(sweep_walls):.1f} / {max(sweep_walls):.1f}" if sweep_walls else "-",
        "tracebacks in agent logs": logs.count("Traceback"),
    }
    print("\n| figure | value |\n|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {v:,.1f} |" if isinstance(v, float) else f"| {k} | {v} |")
    bad = lost or duplicated or strangers or left_in_outboxes or figures["sweeps stuck"] or figures["agents that died unasked"]
    bad = bad or dead != sum(poisoned[k] for k in RESULTS_POISON) or states[DONE] != len(jobs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Fleet figures (issue 16): floors, per-job overhead, scaling over agents, the sweep-size curve, the send
rate, ingestion and bytes per sample.

    .venv/bin/python bench/fleet.py [--only floors|overhead|scaling|size|send|ingestion]
        [--overhead-jobs 30] [--scaling-jobs 100 --scaling-job-s 0.005] [--jobs 100,1000] [--send 2000]
        [--ingest 3000 --ingest-large 300] [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test]

- floors: a bare Celery round trip (a no-op task, fleetbench's Celery settings,
  a private Redis) and a fork and exit of an empty child, in the same run.
- overhead: one job at a time through the real path (scheduler -> Redis on
  loopback -> agent -> benchmark child -> outbox -> Redis -> collector ->
  SQLite), from sending to the stored record, minus the time the record's own
  timed inferences took. Target p50 <= 20 ms (stretch 10 ms).
- scaling: a sweep of 100 single-threaded jobs (~5 ms of sampling each) on 1
  agent, then on 2 agents, on this machine. Target speed-up >= 1.8x.
- size: per-job cost (wall / jobs) of sweeps of each size in --jobs, one agent,
  in one run; target: the largest's / the smallest's <= 1.1.
- send: jobs/s the scheduler sends with a heartbeat and no agent taking them.
  Target >= 500/s.
- ingestion: outcomes pushed onto the broker's results list, stored into
  PostgreSQL by the collector (the real ingestion path), at 700 samples per
  record (target >= 2,000/s) and 85,535 (a demo run's; target >= 300/s), with
  the COPY of the same rows as the floor and the bytes per sample stored
  (target <= 4).

Prints one table; copy it to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller.artifacts import ArtifactStore  # noqa: E402
from controller.collector import Collector  # noqa: E402
from controller.dispatch import Dispatcher  # noqa: E402
from controller.embedded import LocalAgent, RedisServer  # noqa: E402
from controller.store import Store  # noqa: E402
from controller.store.jobs import DONE  # noqa: E402
from controller.sweeps import ModelVariants, Scheduler, SweepSpec  # noqa: E402
from protocol import RESULTS_KEY, BenchmarkSettings, JobOutcome, ResultRecord  # noqa: E402


def tiny_tflite(out: Path) -> Path:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from controller.demo_model import import_tf

    tf = import_tf()
    model = tf.keras.Sequential([tf.keras.Input(shape=(6, 6, 2)), tf.keras.layers.Conv2D(4, 3, activation="relu"),
                                 tf.keras.layers.Flatten(), tf.keras.layers.Dense(5)])  # fmt: skip
    out.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return out


@contextlib.contextmanager
def local_fleet(work: Path, name: str, n_agents: int):
    """A private broker, a SQLite store, the sweep scheduler and ``n_agents`` real agents; all stopped after."""
    broker = RedisServer(work / f"redis-{name}", work / f"redis-{name}.log").start()
    store = Store(f"sqlite:///{work / f'{name}.db'}")
    store.migrate()
    d = Dispatcher(broker.url)
    agents = []
    try:
        for i in range(n_agents):
            agents.append(LocalAgent(broker.url, f"bench-{i}-{uuid.uuid4().hex[:4]}", work / f"{name}-agent{i}.log",
                                     ("litert:cpu",), file_roots=(work,)).start())  # fmt: skip
        for a in agents:
            a.wait_ready(lambda a=a: a.agent_id in {x.agent_id for x in d.live_agents()}, timeout_s=90)
        yield store, Scheduler.on_broker(store, d)
    finally:
        for a in agents:
            a.stop()
        d.close()
        broker.stop()
        store.close()


def sweep(sched: Scheduler, art, settings: list[BenchmarkSettings], name: str) -> str:
    spec = SweepSpec(name=name, models=[], variants=["tflite-fp32"], devices=["litert:cpu"], settings=settings)
    return sched.submit(spec, [ModelVariants("bench-model", "tiny", None, {"tflite-fp32": (art, None)}, [])], confirm=True)


def run_to_end(sched: Scheduler, sweep_id: str, wait_s: float) -> float:
    t0 = time.perf_counter()
    while True:
        counts = sched.tick(sweep_id, wait_s=wait_s)  # blocks on the results list, no busy polling
        if sum(n for s, n in counts.items() if s != DONE) == 0:
            return time.perf_counter() - t0
        if any(s in counts for s in ("failed", "dead-letter", "expired")):
            sys.exit(f"a job failed: {counts}")


def overhead(work: Path, art, n: int) -> dict:
    settings = BenchmarkSettings(threads=1, warmup_iterations=5, min_iterations=100, min_duration_s=0.0)
    rows = []
    with local_fleet(work, "overhead", 1) as (store, sched):
        for i in range(n + 2):
            sweep_id = sweep(sched, art, [settings], f"overhead-{i}")
            wall = run_to_end(sched, sweep_id, wait_s=0.2)
            (r,) = store.sweep_results(sweep_id)
            inference = sum(r.samples_ns) / 1e9
            if i >= 2:  # the first two warm the agent's imports and caches
                rows.append((wall - inference, wall, inference, r.stats.load_ms / 1e3))
    over = sorted(x[0] for x in rows)
    return {
        "overhead p50 ms": 1e3 * statistics.median(over),
        "overhead p90 ms": 1e3 * over[int(0.9 * (len(over) - 1))],
        "wall p50 ms": 1e3 * statistics.median(x[1] for x in rows),
        "inference (timed samples) p50 ms": 1e3 * statistics.median(x[2] for x in rows),
        "model load p50 ms": 1e3 * statistics.median(x[3] for x in rows),
    }


def scaling(work: Path, art, n_jobs: int, job_s: float = 0.005) -> dict:
    out = {}
    settings = [BenchmarkSettings(threads=1, warmup_iterations=2, min_iterations=20 + i, min_duration_s=job_s)
                for i in range(n_jobs)]  # fmt: skip
    for n_agents in (1, 2):
        with local_fleet(work, f"scaling{n_agents}", n_agents) as (store, sched):
            sweep_id = sweep(sched, art, settings, f"scaling-{n_agents}")
            out[n_agents] = run_to_end(sched, sweep_id, wait_s=0.05)
            assert store.count_results() == n_jobs
    return {"jobs": n_jobs, "sampling per job s": job_s, "1 agent s": out[1], "2 agents s": out[2],
            "speed-up": out[1] / out[2]}  # fmt: skip


def sweep_size(work: Path, art, sizes: list[int]) -> dict:
    """Per-job cost (wall time / jobs) of sweeps of each size, one agent, jobs of ~5 ms of sampling, in one
    run; the ratio of the largest size's per-job cost to the smallest's is the growth (target <= 1.1)."""
    settings = [BenchmarkSettings(threads=1, warmup_iterations=2, min_iterations=20 + i, min_duration_s=0.005)
                for i in range(max(sizes))]  # fmt: skip
    out = {}
    with local_fleet(work, "size", 1) as (store, sched):
        for n in sizes:
            sweep_id = sweep(sched, art, settings[:n], f"size-{n}")
            wall = run_to_end(sched, sweep_id, wait_s=0.05)
            assert len(store.sweep_results(sweep_id)) == n
            out[f"{n:,} jobs: per-job ms"] = 1e3 * wall / n
    first, last = out[f"{sizes[0]:,} jobs: per-job ms"], out[f"{sizes[-1]:,} jobs: per-job ms"]
    out[f"per-job cost at {sizes[-1]:,} / at {sizes[0]:,}"] = last / first
    return out


def send_rate(work: Path, art, n: int) -> dict:
    """Jobs per second the scheduler sends (stored as queued, fenced, on the broker) for a sweep of ``n``
    jobs, with a heartbeat but no agent taking them: the send path alone, as far as the broker."""
    from agent.presence import Heartbeat
    from protocol import AgentInventory, CapabilityInfo, HostFacts, utc_now

    settings = [BenchmarkSettings(threads=1, min_iterations=10 + i) for i in range(n)]
    with local_fleet(work, "send", 0) as (store, sched):
        host = HostFacts(hostname="ghost", cpu_model="-", cpu_cores=1, ram_bytes=1, os="-", python="3")
        inv = AgentInventory(agent_id="ghost", host=host, started_at=utc_now(), heartbeat_at=utc_now(),
                             capabilities=(CapabilityInfo("litert:cpu", "litert", "0", "cpu", "-"),))  # fmt: skip
        Heartbeat(sched.dispatcher.redis, inv).beat()  # one beat: live for HEARTBEAT_TTL_S, longer than the sends
        sweep_id = sweep(sched, art, settings, "send")
        t0 = time.perf_counter()
        while sched.tick(sweep_id).get("queued", 0) < n:
            pass
        elapsed = time.perf_counter() - t0
        on_queue = sched.dispatcher.redis.llen("fleetbench.cap.litert:cpu")
    assert on_queue == n, on_queue
    return {"jobs": n, "seconds": elapsed, "jobs/s": n / elapsed}


def floors(work: Path, n: int = 200) -> dict:
    """What no job can beat, measured in this run: a bare Celery round trip (a no-op task on a worker with
    fleetbench's settings, through a private Redis) and a fork and exit of an empty child."""
    import os
    import subprocess

    from celery import Celery

    from protocol import CELERY_SETTINGS

    # forked from a process like the agent's fork server (its runtimes imported), not from this one,
    # which has TensorFlow loaded (a far bigger address space to copy)
    fork_script = f"""
import os, statistics, time
from agent.child import _preload
_preload()
times = []
for _ in range({n}):
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    times.append(time.perf_counter() - t0)
print(statistics.median(times))
"""
    fork_s = float(subprocess.run([sys.executable, "-c", fork_script], cwd=ROOT, capture_output=True, text=True,
                                  check=True, env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout.split()[-1])  # fmt: skip
    broker = RedisServer(work / "redis-floor", work / "redis-floor.log").start()
    env = dict(os.environ, PYTHONPATH=str(ROOT), FLEETBENCH_BENCH_BROKER=broker.url)
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench.noop_worker", "worker", "-P", "solo", "-c", "1",
                               "-l", "WARNING"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        app = Celery("bench-client", broker=broker.url, backend=broker.url)
        app.conf.update(CELERY_SETTINGS)
        app.send_task("bench.noop").get(timeout=60)  # the worker is up
        trips = []
        for _ in range(n):
            t0 = time.perf_counter()
            app.send_task("bench.noop").get(timeout=10)
            trips.append(time.perf_counter() - t0)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        broker.stop()
    return {"bare Celery round trip p50 ms": 1e3 * statistics.median(trips),
            "fork and exit of an empty child (fork server's imports) p50 ms": 1e3 * fork_s}  # fmt: skip


def _records_with(golden: ResultRecord, n_samples: int) -> ResultRecord:
    """``golden`` with ``n_samples`` raw samples drawn from its own (a longer run of the same model)."""
    import numpy as np

    from protocol.records import LatencyStats
    from protocol.stats import summarize_ns

    if n_samples == len(golden.samples_ns):
        return golden
    ns = np.random.default_rng(0).choice(golden.samples_ns.array, n_samples)
    stats = LatencyStats.from_summary(summarize_ns(ns), load_ms=golden.stats.load_ms,
                                      first_inference_ms=golden.stats.first_inference_ms)  # fmt: skip
    return dataclasses.replace(golden, samples_ns=ns, stats=stats)


def _copy_floor(pg_url: str, schema: str, rows: list[dict]) -> float:
    """Seconds to COPY the same result rows (the same columns, JSONB and the samples blob) into a bare
    copy of the results table: the floor for any ingestion into this PostgreSQL."""
    import psycopg
    from psycopg.types.json import Jsonb

    columns = list(rows[0])
    with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql"), options=f"-csearch_path={schema}") as conn:
        conn.execute("CREATE TABLE copy_floor (LIKE results INCLUDING DEFAULTS)")
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY copy_floor ({', '.join(columns)}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row([Jsonb(r[c]) if c == "record" else r[c] for c in columns])
        conn.commit()
        return time.perf_counter() - t0


def ingestion(work: Path, n: int, pg_url: str, n_samples: int = 700) -> dict:
    """Outcomes (as agents send them: the samples as fbs1 text) pushed onto a private broker's results
    list and stored into PostgreSQL by the real collector; then the COPY floor on the same rows, and the
    bytes each sample takes in the table."""
    import sqlalchemy

    golden = ResultRecord.from_dict(json.loads((ROOT / "tests/data/golden_record_litert_cpu.json").read_text()))
    golden = _records_with(golden, n_samples)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(pg_url)
    with admin.begin() as c:
        c.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    store = Store(pg_url, connect_args={"options": f"-csearch_path={schema}"})
    store.migrate()
    broker = RedisServer(work / "ri", work / "ri.log").start()
    d = Dispatcher(broker.url)
    try:
        bodies, records = [], []
        for i in range(n):
            r = dataclasses.replace(golden, job_id=f"ingest-{i}")
            records.append(r)
            bodies.append(JobOutcome(job_id=r.job_id, attempt=1, ok=True, record=r, agent_id=r.agent_id).to_json(samples="text"))
        for i in range(0, n, 500):
            d.redis.rpush(RESULTS_KEY, *bodies[i : i + 500])
        collector = Collector(d.redis, store)
        t0 = time.perf_counter()
        done = collector.drain()
        elapsed = time.perf_counter() - t0
        assert done.get("stored") == n and store.count_results() == n, done
        with store.engine.connect() as c:
            blob, samples, table = c.execute(sqlalchemy.text(
                "SELECT sum(octet_length(samples)), sum(sample_count), pg_total_relation_size('results') FROM results"
            )).one()  # fmt: skip
        copy_s = _copy_floor(pg_url, schema, [store._result_values(r) for r in records])
    finally:
        d.close()
        broker.stop()
        store.close()
        with admin.begin() as c:
            c.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    return {"records": n, "samples per record": n_samples, "seconds": elapsed, "records/s": n / elapsed,
            "COPY floor records/s": n / copy_s, "samples blob bytes/sample": int(blob) / int(samples),
            "table bytes/sample (all columns, indexes)": int(table) / int(samples)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--overhead-jobs", type=int, default=30)
    p.add_argument("--scaling-jobs", type=int, default=100)
    p.add_argument("--scaling-job-s", type=float, default=0.005, help="seconds of sampling per scaling job")
    p.add_argument("--jobs", default="100,1000", help="sweep sizes for the per-job cost curve, e.g. 100,10000")
    p.add_argument("--send", type=int, default=2000, help="jobs in the send-rate sweep")
    p.add_argument("--ingest", type=int, default=3000, help="records of 700 samples to ingest")
    p.add_argument("--ingest-large", type=int, default=300, help="records of 85,535 samples (a demo run's) to ingest")
    p.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    p.add_argument("--only", choices=["floors", "overhead", "scaling", "size", "send", "ingestion"])
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fleetbench-bench-"))
    art = ArtifactStore(work / "artifacts").put_file(tiny_tflite(work / "tiny.tflite"))
    results = {}
    if args.only in (None, "floors"):
        results["floors"] = floors(work)
        print(results["floors"], flush=True)
    if args.only in (None, "overhead"):
        results["per-job overhead"] = overhead(work, art, args.overhead_jobs)
        print(results["per-job overhead"], flush=True)
    if args.only in (None, "scaling"):
        results["scaling"] = scaling(work, art, args.scaling_jobs, args.scaling_job_s)
        print(results["scaling"], flush=True)
    if args.only in (None, "size"):
        results["sweep size"] = sweep_size(work, art, [int(x) for x in args.jobs.split(",")])
        print(results["sweep size"], flush=True)
    if args.only in (None, "send"):
        results["send rate"] = send_rate(work, art, args.send)
        print(results["send rate"], flush=True)
    if args.only in (None, "ingestion"):
        results["ingestion (PostgreSQL), 700 samples"] = ingestion(work, args.ingest, args.pg)
        print(results["ingestion (PostgreSQL), 700 samples"], flush=True)
        results["ingestion (PostgreSQL), 85,535 samples"] = ingestion(work, args.ingest_large, args.pg, 85_535)
        print(results["ingestion (PostgreSQL), 85,535 samples"], flush=True)
    print("\n| figure | value |\n|---|---|")
    for group, figures in results.items():
        for k, v in figures.items():
            print(f"| {group}: {k} | {v:,.3f} |" if isinstance(v, float) else f"| {group}: {k} | {v} |")


if __name__ == "__main__":
    main()

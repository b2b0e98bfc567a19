"""Fleet figures: per-job overhead, scaling over agents, ingestion rate.

    .venv/bin/python bench/fleet.py [--overhead-jobs 30] [--scaling-jobs 40] [--ingest 3000]
                                    [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test]

- overhead: one job at a time through the real path (scheduler -> Redis on
  loopback -> agent -> benchmark child -> outbox -> Redis -> collector ->
  SQLite), from sending to the stored record, minus the time the record's own
  timed inferences took. Target p50 <= 50 ms.
- scaling: a sweep of 40 single-threaded jobs (0.5 s of sampling each) on 1
  agent, then on 2 agents, on this machine. Target speed-up >= 1.7x.
- ingestion: outcomes pushed onto the broker's results list, stored into
  PostgreSQL by the collector (the real ingestion path). Target >= 1,000/s.

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
                                     ("litert:cpu",)).start())  # fmt: skip
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
    return sched.submit(spec, [ModelVariants("bench-model", "tiny", None, {"tflite-fp32": (art, None)}, [])])


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


def scaling(work: Path, art, n_jobs: int) -> dict:
    out = {}
    settings = [BenchmarkSettings(threads=1, warmup_iterations=5, min_iterations=100 + i, min_duration_s=0.5)
                for i in range(n_jobs)]  # fmt: skip
    for n_agents in (1, 2):
        with local_fleet(work, f"scaling{n_agents}", n_agents) as (store, sched):
            sweep_id = sweep(sched, art, settings, f"scaling-{n_agents}")
            out[n_agents] = run_to_end(sched, sweep_id, wait_s=0.2)
            assert store.count_results() == n_jobs
    return {"1 agent s": out[1], "2 agents s": out[2], "speed-up": out[1] / out[2]}


def ingestion(work: Path, n: int, pg_url: str) -> dict:
    import sqlalchemy

    golden = ResultRecord.from_dict(json.loads((ROOT / "tests/data/golden_record_litert_cpu.json").read_text()))
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(pg_url)
    with admin.begin() as c:
        c.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    store = Store(pg_url, connect_args={"options": f"-csearch_path={schema}"})
    store.migrate()
    broker = RedisServer(work / "ri", work / "ri.log").start()
    d = Dispatcher(broker.url)
    try:
        bodies = []
        for i in range(n):
            r = dataclasses.replace(golden, job_id=f"ingest-{i}")
            bodies.append(JobOutcome(job_id=r.job_id, attempt=1, ok=True, record=r, agent_id=r.agent_id).to_json(samples="text"))
        for i in range(0, n, 500):
            d.redis.rpush(RESULTS_KEY, *bodies[i : i + 500])
        collector = Collector(d.redis, store)
        t0 = time.perf_counter()
        done = collector.drain()
        elapsed = time.perf_counter() - t0
        assert done.get("stored") == n and store.count_results() == n, done
    finally:
        d.close()
        broker.stop()
        store.close()
        with admin.begin() as c:
            c.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    return {"records": n, "seconds": elapsed, "records/s": n / elapsed, "samples per record": len(golden.samples_ns)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--overhead-jobs", type=int, default=30)
    p.add_argument("--scaling-jobs", type=int, default=40)
    p.add_argument("--ingest", type=int, default=3000)
    p.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    p.add_argument("--only", choices=["overhead", "scaling", "ingestion"])
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fleetbench-bench-"))
    art = ArtifactStore(work / "artifacts").put_file(tiny_tflite(work / "tiny.tflite"))
    results = {}
    if args.only in (None, "overhead"):
        results["per-job overhead"] = overhead(work, art, args.overhead_jobs)
        print(results["per-job overhead"], flush=True)
    if args.only in (None, "scaling"):
        results["scaling"] = scaling(work, art, args.scaling_jobs)
        print(results["scaling"], flush=True)
    if args.only in (None, "ingestion"):
        results["ingestion (PostgreSQL)"] = ingestion(work, args.ingest, args.pg)
        print(results["ingestion (PostgreSQL)"], flush=True)
    print("\n| figure | value |\n|---|---|")
    for group, figures in results.items():
        for k, v in figures.items():
            print(f"| {group}: {k} | {v:,.3f} |" if isinstance(v, float) else f"| {group}: {k} | {v} |")


if __name__ == "__main__":
    main()

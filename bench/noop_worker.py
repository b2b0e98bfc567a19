"""A Celery worker with one task that does nothing, on fleetbench's Celery settings: the floor under a job's
round trip (bench/fleet.py starts it: ``celery -A bench.noop_worker worker``)."""

import os

from celery import Celery

from protocol import CELERY_SETTINGS

BROKER = os.environ.get("FLEETBENCH_BENCH_BROKER", "redis://127.0.0.1:6379/15")
app = Celery("fleetbench-bench-noop", broker=BROKER, backend=BROKER)
app.conf.update(CELERY_SETTINGS)


@app.task(name="bench.noop")
def noop() -> int:
    return 1

"""A Celery worker with one task that does nothing, on fleetbench's Celery settings: the floor under a job's
round trip (bench/fleet.py starts it: ``celery -A bench.noop_worker worker``)."""

from celery import Celery

from protocol import CELERY_SETTINGS

app = Celery("fleetbench-bench-noop")
app.conf.update(CELERY_SETTINGS)
app.conf.update(broker_url="redis://127.0.0.1:6379/0", result_backend="redis://127.0.0.1:6379/0")


@app.task(name="bench.noop")
def noop() -> int:
    return 1

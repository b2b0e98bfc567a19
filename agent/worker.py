"""The agent's Celery app. The task is thin: it calls :func:`agent.runner.run_job`."""

from __future__ import annotations

import os

from celery import Celery

from agent.runner import run_job
from protocol import BENCHMARK_TASK, CELERY_SETTINGS

app = Celery("fleetbench-agent")
app.conf.update(CELERY_SETTINGS)
# Agents consume only queues they declare; never the default "celery" queue.
app.conf.task_create_missing_queues = True


def agent_id() -> str:
    return os.environ.get("FLEETBENCH_AGENT_ID", "")


@app.task(name=BENCHMARK_TASK)
def benchmark(spec: dict) -> dict:
    return run_job(spec, agent_id()).to_dict()

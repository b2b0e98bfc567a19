"""The controller-side Celery worker: conversions on the ``fleetbench.convert`` queue.

    fleetbench worker --broker redis://... [--data-dir DIR]

Run it on a big machine; agents stay small. The task is thin: it calls
:func:`controller.convert.runner.run_conversion` and streams its events as
task progress (state ``PROGRESS``, ``meta={"events": [...]}``).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import uuid

from celery import Celery

from controller.dispatch import CONVERT_QUEUE, CONVERT_TASK
from protocol import CELERY_SETTINGS

app = Celery("fleetbench-controller")
app.conf.update(CELERY_SETTINGS)


def _artifacts():
    from controller.artifacts import ArtifactStore
    from controller.config import Paths

    return ArtifactStore(Paths.resolve(os.environ.get("FLEETBENCH_HOME")).artifacts)


@app.task(name=CONVERT_TASK, bind=True)
def convert(self, job: dict) -> dict:
    from controller.convert.runner import Limits, run_conversion

    events: list[dict] = []

    def on_event(event: dict) -> None:
        events.append({k: v for k, v in event.items() if k != "file"})
        self.update_state(state="PROGRESS", meta={"events": events})

    return run_conversion(job, _artifacts(), on_event, Limits(**job.get("limits", {})))


def serve(broker_url: str, data_dir: str | None, worker_id: str | None = None, loglevel: str = "INFO") -> None:
    if data_dir:
        os.environ["FLEETBENCH_HOME"] = str(data_dir)
    app.conf.broker_url = broker_url
    app.conf.result_backend = broker_url
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    name = worker_id or f"converter-{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
    app.worker_main(
        ["worker", f"--hostname={name}@%h", f"--queues={CONVERT_QUEUE}", "--pool=solo", "--concurrency=1",
         "--without-gossip", "--without-mingle", f"--loglevel={loglevel}"]
    )  # fmt: skip


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m controller.worker")
    ap.add_argument("--broker", required=True)
    ap.add_argument("--data-dir")
    ap.add_argument("--worker-id")
    a = ap.parse_args()
    serve(a.broker, a.data_dir, a.worker_id)

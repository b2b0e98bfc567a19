"""``fleetbench demo``: the main job on embedded defaults, as plain functions.

Build (or reuse) the demo model, start a private Redis and a local agent
process, send the benchmark job through Celery, store the record, stop
everything it started.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from typing import Callable

from controller import demo_model
from controller.artifacts import ArtifactStore
from controller.config import Paths
from controller.dispatch import Dispatcher
from controller.embedded import LocalAgent, RedisServer
from controller.store import Store
from protocol import BenchmarkSettings, JobSpec, ResultRecord, new_job_id

CAPABILITY = "litert:cpu"
VARIANT = "tflite-fp32"


class DemoError(RuntimeError):
    """The demo job failed; the message is the agent's error."""


@dataclass(frozen=True)
class DemoRun:
    model: demo_model.DemoModel
    model_reused: bool
    records: list[ResultRecord]
    db_url: str
    total_records: int


def run_demo(
    paths: Paths,
    db_url: str,
    settings: BenchmarkSettings,
    *,
    rebuild: bool = False,
    on_step: Callable[[str], None] = lambda msg: None,
) -> DemoRun:
    store = Store(db_url)
    try:
        on_step("opening the database")
        store.migrate()
        artifacts = ArtifactStore(paths.artifacts)
        model = None if rebuild else demo_model.load_cached(paths, artifacts)
        reused = model is not None
        if model is None:
            model = demo_model.build(paths, artifacts, on_step=on_step)

        spec = JobSpec(
            job_id=new_job_id(),
            model_id=model.model_id,
            model_name=model.name,
            variant=VARIANT,
            capability=CAPABILITY,
            artifact=model.tflite_fp32,
            dataset=model.validation,
            settings=settings,
        )
        on_step("starting the embedded broker (redis-server)")
        with RedisServer(paths.run / "redis", paths.logs / "redis.log") as redis:
            agent_id = f"local-{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
            on_step(f"starting a local agent ({agent_id})")
            with LocalAgent(redis.url, agent_id, paths.logs / "agent.log", capabilities=(CAPABILITY,)) as agent:
                dispatcher = Dispatcher(redis.url)
                try:
                    agent.wait_ready(lambda: agent_id in dispatcher.agents_offering(CAPABILITY))
                    on_step(f"sending the {VARIANT} job to {CAPABILITY}")
                    result = dispatcher.submit(spec)
                    outcome = dispatcher.wait(
                        result,
                        spec,
                        on_state=lambda s: on_step(f"job {spec.job_id[:8]}: {s.replace('-', ' ')}"),
                        check=agent.check_alive,
                    )
                finally:
                    dispatcher.close()
                on_step("stopping the local agent and broker")
        if not outcome.ok:
            raise DemoError(f"{outcome.error_kind}: {outcome.error}")
        store.add_result(outcome.record)
        return DemoRun(
            model=model,
            model_reused=reused,
            records=[outcome.record],
            db_url=db_url,
            total_records=store.count_results(),
        )
    finally:
        store.close()

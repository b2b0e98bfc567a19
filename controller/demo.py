"""``fleetbench demo``: the main job on embedded defaults, as plain functions.

Build (or reuse) the demo model, convert it into every variant through the
conversion pipeline (a converter worker behind a private Redis; cached
variants are not converted again), benchmark each variant on a local agent
as a one-sweep run through the scheduler (Celery queues, the agent's outbox,
the collector), store the records, stop everything it started.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from controller import demo_model
from controller.artifacts import ArtifactStore
from controller.config import Paths
from controller.convert import service
from controller.convert.variants import FAMILY_CAPABILITY, STANDARD, VARIANTS, QuantOptions
from controller.datasets import Preprocessing
from controller.embedded import EmbeddedFleet
from controller.store import Store
from controller.store.jobs import ACTIVE_STATES, DONE, FAILED, PENDING, QUEUED, WAITING
from protocol import BenchmarkSettings, ResultRecord
from controller.jobs import SweepState

#: Calibration images taken from the held-out set; the rest measure accuracy.
N_CALIBRATION = 64
#: ``demo --quant``: post-training int8, QAT int8 and accuracy-controlled int8 of both families side by side.
QUANT_VARIANTS = ["tflite-int8", "tflite-int8-qat", "openvino-int8", "openvino-int8-qat", "openvino-int8-ac"]
#: ``demo --quant``: held-out images set apart to fine-tune on (QAT), between calibration and validation.
QUANT_TRAIN = 150


class DemoError(RuntimeError):
    """The demo failed as a whole; the message says why."""


@dataclass(frozen=True)
class DemoRun:
    files: demo_model.DemoFiles
    model_id: str
    convert: service.ConvertReport
    records: list[ResultRecord]
    failures: list[tuple[str, str]]  # (variant, error)
    db_url: str
    total_records: int
    sweep_id: str = ""


def run_demo(
    paths: Paths,
    db_url: str,
    settings: BenchmarkSettings,
    *,
    rebuild: bool = False,
    variants: list[str] | None = None,
    on_step: Callable[[str], None] = lambda msg: None,
    quant: bool = False,
    options: QuantOptions | None = None,
) -> DemoRun:
    """``quant``: :data:`QUANT_VARIANTS` (unless ``variants`` names others), with a training split of
    :data:`QUANT_TRAIN` held-out images for QAT; the validation split is what is left."""
    store = Store(db_url)
    try:
        on_step("opening the database")
        store.migrate()
        artifacts = ArtifactStore(paths.artifacts)
        files = demo_model.ensure(paths, rebuild=rebuild, on_step=on_step)
        plan = service.plan(
            files.keras, variants or (QUANT_VARIANTS if quant else list(STANDARD)), store, artifacts,
            dataset_path=files.holdout, preprocessing=Preprocessing(scale=demo_model.SCALE),
            n_calibration=N_CALIBRATION, name=demo_model.MODEL_NAME, n_train=QUANT_TRAIN if quant else 0,
            options=options,
        )  # fmt: skip
        cached = [v.variant for v in plan.variants if v.status == "cached"]
        if cached:
            on_step(f"reusing {len(cached)} converted variant(s) from the cache")
        failures: list[tuple[str, str]] = []
        with EmbeddedFleet(paths, on_step) as fleet:
            report = service.execute(plan, store, fleet.convert, on_event=lambda e: _conversion_step(e, on_step))
            ready = [o for o in report.outcomes if o.status in ("converted", "cached")]
            failures += [(o.variant, o.error or o.status) for o in report.outcomes if o not in ready]
            if not ready:
                raise DemoError("no variant converted: " + "; ".join(f"{v}: {e}" for v, e in failures))
            caps = tuple(sorted({FAMILY_CAPABILITY[VARIANTS[o.variant].family] for o in ready}))
            fleet.ensure_agent(caps)
            records, failed, sweep_id = _benchmark(store, fleet, plan, ready, settings, on_step)
            failures += failed
        if not records:
            raise DemoError("every benchmark failed: " + "; ".join(f"{v}: {e}" for v, e in failures))
        return DemoRun(
            files=files, model_id=plan.model_id, convert=report, records=records, failures=failures,
            db_url=db_url, total_records=store.count_results(), sweep_id=sweep_id,
        )  # fmt: skip
    except service.ConvertError as exc:
        raise DemoError(str(exc)) from None
    finally:
        store.close()


def _benchmark(store: Store, fleet: EmbeddedFleet, plan, ready, settings: BenchmarkSettings,
               on_step: Callable[[str], None]) -> tuple[list[ResultRecord], list[tuple[str, str]], str]:  # fmt: skip
    """Benchmark every ready variant as a one-sweep run named ``demo``, through the same scheduler, queues,
    outbox and collector a fleet's sweep uses (so `fleetbench status` and the dashboard's Sweeps and
    Compare pages show each demo run like any other sweep). Returns the records in variant order, the
    failures, and the sweep's id."""
    from controller.sweeps import ModelVariants, Scheduler, SweepSpec

    dispatcher = fleet.dispatcher()
    agent = fleet.agent
    sched = Scheduler.on_broker(store, dispatcher)
    order = [o.variant for o in ready]
    spec = SweepSpec(name="demo", models=[], variants=order, devices=sorted({FAMILY_CAPABILITY[VARIANTS[v].family]
                     for v in order}), settings=[settings], max_attempts=1, raw={"name": "demo", "demo": True,
                     "variants": order, "settings": settings.to_dict()})  # fmt: skip
    model = ModelVariants(model_id=plan.model_id, name=plan.name, dataset=plan.dataset.validation,
                          ready={o.variant: (o.artifact, o.reference) for o in ready}, converting=[])  # fmt: skip
    sweep_id = sched.submit(spec, [model])
    # the agent enforces each job's time limit; this only stops a demo whose agent hangs past all of them
    budget_s = len(order) * (settings.timeout_s + 60)
    deadline = time.monotonic() + budget_s
    told: set[str] = set()
    try:
        while True:
            counts = sched.tick(sweep_id, wait_s=0.5)
            for job in store.jobs(sweep_id):  # each job once: when it runs, or when it is over if that came first
                if job.job_id not in told and job.state not in (PENDING, QUEUED, WAITING):
                    told.add(job.job_id)
                    on_step(f"benchmarking {job.variant} on {job.capability}")
            if not any(counts.get(s) for s in ACTIVE_STATES):
                break
            agent.check_alive()
            if time.monotonic() > deadline:
                raise DemoError(f"the local agent did not finish the demo's jobs within {budget_s:g} s; "
                                f"see its log, {fleet.paths.logs / 'agent.log'}")  # fmt: skip
    finally:
        _finish_sweep(store, sweep_id)
    records = sorted(store.sweep_results(sweep_id), key=lambda r: order.index(r.variant))
    failures = [(j.variant, f"{j.error_kind}: {j.reason}") for j in store.jobs(sweep_id) if j.state != DONE]
    return records, failures, sweep_id


def _finish_sweep(store: Store, sweep_id: str) -> None:
    """Close the demo's sweep; a job it never finished (interrupted) is failed, not left running."""
    for job in store.jobs(sweep_id, states=ACTIVE_STATES):
        store.update_job(job.job_id, state=FAILED, reason="the demo stopped before this job finished")
    store.set_sweep_state(sweep_id, SweepState.DONE.value)


def _conversion_step(event: dict, on_step: Callable[[str], None]) -> None:
    kind = event.get("event")
    if kind == "done":
        on_step(f"converted {event['variant']} in {event['seconds']:.1f} s")
    elif kind == "failed":
        on_step(f"could not convert {event['variant']}: {event['error']}")

"""``fleetbench demo``: the main job on embedded defaults, as plain functions.

Build (or reuse) the demo model, convert it into every variant through the
conversion pipeline (a converter worker behind a private Redis; cached
variants are not converted again), benchmark each variant on a local agent
through Celery, store the records, stop everything it started.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from controller import demo_model
from controller.artifacts import ArtifactStore
from controller.config import Paths
from controller.convert import service
from controller.convert.variants import FAMILY_CAPABILITY, VARIANTS
from controller.datasets import Preprocessing
from controller.embedded import EmbeddedFleet
from controller.store import Store
from controller.store.jobs import ACTIVE_STATES, FAILED, QUEUED, STORED, now
from controller.store.models import JobRow, SweepRow
from protocol import BenchmarkSettings, JobSpec, ResultRecord, new_job_id

#: Calibration images taken from the held-out set; the rest measure accuracy.
N_CALIBRATION = 64


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
) -> DemoRun:
    store = Store(db_url)
    try:
        on_step("opening the database")
        store.migrate()
        artifacts = ArtifactStore(paths.artifacts)
        files = demo_model.ensure(paths, rebuild=rebuild, on_step=on_step)
        plan = service.plan(
            files.keras, variants or list(VARIANTS), store, artifacts,
            dataset_path=files.holdout, preprocessing=Preprocessing(scale=demo_model.SCALE),
            n_calibration=N_CALIBRATION, name=demo_model.MODEL_NAME,
        )  # fmt: skip
        cached = [v.variant for v in plan.variants if v.status == "cached"]
        if cached:
            on_step(f"reusing {len(cached)} converted variant(s) from the cache")
        records: list[ResultRecord] = []
        failures: list[tuple[str, str]] = []
        with EmbeddedFleet(paths, on_step) as fleet:
            report = service.execute(plan, store, fleet.convert, on_event=lambda e: _conversion_step(e, on_step))
            ready = [o for o in report.outcomes if o.status in ("converted", "cached")]
            failures += [(o.variant, o.error or o.status) for o in report.outcomes if o not in ready]
            if not ready:
                raise DemoError("no variant converted: " + "; ".join(f"{v}: {e}" for v, e in failures))
            caps = tuple(sorted({FAMILY_CAPABILITY[VARIANTS[o.variant].family] for o in ready}))
            agent = fleet.ensure_agent(caps)
            dispatcher = fleet.dispatcher()
            dispatcher.record_live_agents(store)  # so `fleetbench fleet` knows the local agent
            specs = [
                JobSpec(
                    job_id=new_job_id(), model_id=plan.model_id, model_name=plan.name, variant=o.variant,
                    capability=FAMILY_CAPABILITY[VARIANTS[o.variant].family], artifact=o.artifact,
                    dataset=plan.dataset.validation, reference=o.reference, settings=settings,
                )  # fmt: skip
                for o in ready
            ]
            sweep_id = _record_sweep(store, specs, settings)
            try:
                for spec in specs:
                    on_step(f"benchmarking {spec.variant} on {spec.capability}")
                    store.update_job(spec.job_id, state="running", agent_id=agent.agent_id, attempt=1)
                    outcome = dispatcher.wait(dispatcher.submit(spec), spec, check=agent.check_alive)
                    if store.ingest(outcome) == STORED:
                        records.append(outcome.record)
                    elif not outcome.ok:
                        failures.append((spec.variant, f"{outcome.error_kind}: {outcome.error}"))
            finally:
                _finish_sweep(store, sweep_id)
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


def _record_sweep(store: Store, specs: list[JobSpec], settings: BenchmarkSettings) -> str:
    """Keep the demo's benchmarks as a sweep called ``demo``, so `fleetbench status` and the
    dashboard's Sweeps and Compare pages show each demo run like any other sweep."""
    sweep_id, t = new_job_id()[:16], now()
    spec = {"name": "demo", "demo": True, "variants": [s.variant for s in specs], "settings": settings.to_dict()}
    jobs = [
        JobRow(job_id=s.job_id, sweep_id=sweep_id, model_id=s.model_id, model_name=s.model_name, variant=s.variant,
               capability=s.capability, settings=settings.to_dict(), spec=s.to_dict(), state=QUEUED, reason="",
               attempt=1, sent_attempt=1, max_attempts=1, created_at=t, updated_at=t)
        for s in specs
    ]  # fmt: skip
    store.add_sweep(SweepRow(sweep_id=sweep_id, name="demo", spec=spec, state="running", created_at=t), jobs)
    return sweep_id


def _finish_sweep(store: Store, sweep_id: str) -> None:
    """Close the demo's sweep; a job it never finished (interrupted) is failed, not left running."""
    for job in store.jobs(sweep_id, states=ACTIVE_STATES):
        store.update_job(job.job_id, state=FAILED, reason="the demo stopped before this job finished")
    store.set_sweep_state(sweep_id, "done")


def _conversion_step(event: dict, on_step: Callable[[str], None]) -> None:
    kind = event.get("event")
    if kind == "done":
        on_step(f"converted {event['variant']} in {event['seconds']:.1f} s")
    elif kind == "failed":
        on_step(f"could not convert {event['variant']}: {event['error']}")

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
            for o in ready:
                spec = JobSpec(
                    job_id=new_job_id(), model_id=plan.model_id, model_name=plan.name, variant=o.variant,
                    capability=FAMILY_CAPABILITY[VARIANTS[o.variant].family], artifact=o.artifact,
                    dataset=plan.dataset.validation, reference=o.reference, settings=settings,
                )  # fmt: skip
                on_step(f"benchmarking {o.variant} on {spec.capability}")
                outcome = dispatcher.wait(dispatcher.submit(spec), spec, check=agent.check_alive)
                if outcome.ok:
                    store.add_result(outcome.record)
                    records.append(outcome.record)
                else:
                    failures.append((o.variant, f"{outcome.error_kind}: {outcome.error}"))
        if not records:
            raise DemoError("every benchmark failed: " + "; ".join(f"{v}: {e}" for v, e in failures))
        return DemoRun(
            files=files, model_id=plan.model_id, convert=report, records=records, failures=failures,
            db_url=db_url, total_records=store.count_results(),
        )  # fmt: skip
    except service.ConvertError as exc:
        raise DemoError(str(exc)) from None
    finally:
        store.close()


def _conversion_step(event: dict, on_step: Callable[[str], None]) -> None:
    kind = event.get("event")
    if kind == "done":
        on_step(f"converted {event['variant']} in {event['seconds']:.1f} s")
    elif kind == "failed":
        on_step(f"could not convert {event['variant']}: {event['error']}")

"""The profile phase (issue 17): how its figures relate to the whole-model latency, and that it leaves the
latency phase alone.

    python bench/profile.py [--pairs 6] [--models demo,palm_detection_lite] [--data-dir DIR]

1. Summed node time against latency. Each variant runs one job with ``profile: true``; the profile's summed
   mean node time is set against the same job's latency-phase mean, and against the runtime's own
   whole-inference time while profiling (OpenVINO's request.latency, LiteRT's Invoke event). OpenVINO's
   per-node times may add up past the total where nodes overlap; LiteRT's are whole microseconds (ops under
   1 µs count as 0) and carry the profiler's own overhead, so on a model of tens of µs the sum can read low
   or high. Both are reported as they come.
2. The latency phase with and without the profile phase. The same job runs ``--pairs`` times with the
   profile phase off and on, alternated (off, on, off, on, ...) so both see the same machine; the ratio of
   the median p50s is the effect, and the spread of the "off" runs' p50s (max / min) is the noise it must be
   read against. The median wall time of a whole job, off and on, is what the phase costs.

Jobs run in real benchmark children (``agent.runner.run_job`` through a fork server, as an agent runs them);
the demo model is trained and converted once into ``--data-dir`` (a temporary folder by default), the corpus
models come from ``make corpus``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.runner import ForkServer, run_job  # noqa: E402
from protocol import BenchmarkSettings, JobSpec, new_job_id  # noqa: E402

SETTINGS = BenchmarkSettings(threads=1, warmup_iterations=50, min_iterations=1000, min_duration_s=1.0, timeout_s=900,
                             profile_runs=100)  # fmt: skip
DEMO_VARIANTS = ["tflite-fp32", "tflite-int8", "openvino-fp32", "openvino-int8"]
CORPUS_VARIANTS = ["openvino-fp32"]  # beside the file itself, benchmarked as it is on litert:cpu


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def variants(data_dir: Path, models: list[str]) -> list[tuple[str, str, str, object]]:
    """(model, variant, capability, artifact ref) for every job of the bench, converted here."""
    from controller import demo_model
    from controller.artifacts import ArtifactStore
    from controller.config import Paths
    from controller.convert import service
    from controller.datasets import Preprocessing
    from controller.store import Store
    from tests import corpus

    from agent.artifacts import FILE_ROOTS_ENV

    paths = Paths.resolve(data_dir)
    os.environ[FILE_ROOTS_ENV] = str(paths.artifacts)  # the benchmark children read the artifacts in place
    store = Store(paths.db_url(None))
    store.migrate()
    arts = ArtifactStore(paths.artifacts)
    out = []
    for model in models:
        if model == "demo":
            files = demo_model.ensure(paths, on_step=lambda m: _say(f"  demo: {m}"))
            plan = service.plan(files.keras, DEMO_VARIANTS, store, arts, dataset_path=files.holdout, n_calibration=64,
                                preprocessing=Preprocessing(scale=demo_model.SCALE), name="digits-cnn")  # fmt: skip
        else:
            source = corpus.path(f"{model}.tflite")
            if not source.is_file():
                sys.exit(f"error: {source} is missing; run `make corpus` first")
            plan = service.plan(source, CORPUS_VARIANTS, store, arts, name=model)
        report = service.execute(plan, store, service.local_runner(arts))
        for o in report.outcomes:
            if o.artifact is None:
                _say(f"  {model} {o.variant}: not converted ({o.error})")
                continue
            cap = "litert:cpu" if o.variant.startswith("tflite") else "openvino:CPU"
            out.append(("digits-cnn" if model == "demo" else model, o.variant, cap, o.artifact))
    store.close()
    return out


def job(forkserver, model: str, variant: str, capability: str, artifact, profile: bool):
    spec = JobSpec(job_id=new_job_id(), model_id=artifact.sha256, model_name=model, variant=variant,
                   capability=capability, artifact=artifact, settings=dataclasses.replace(SETTINGS, profile=profile))  # fmt: skip
    outcome = run_job(spec.to_dict(), "profile-bench", forkserver=forkserver)
    if not outcome.ok:
        sys.exit(f"error: {model} {variant} on {capability}: {outcome.error_kind}: {outcome.error}")
    return outcome.record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=6, help="off/on pairs per job for the perturbation figure")
    ap.add_argument("--models", default="demo,palm_detection_lite", help="demo and/or corpus .tflite names (no suffix)")
    ap.add_argument("--data-dir", default=None, help="where the demo model and the conversions go (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleetbench-profile-bench-") as tmp:
        _say("converting the variants")
        jobs = variants(Path(args.data_dir or tmp), [m.strip() for m in args.models.split(",") if m.strip()])
        forkserver = ForkServer()
        try:
            ratios(forkserver, jobs)
            perturbation(forkserver, jobs, args.pairs)
        finally:
            forkserver.close()


def ratios(forkserver, jobs) -> None:
    print("\n| model | variant | device | profile source | runs | summed node ms | latency-phase mean ms | "
          "node / latency | runtime's latency while profiling ms | node / that |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model, variant, cap, art in jobs:
        _say(f"  profiling {model} {variant} on {cap}")
        r = job(forkserver, model, variant, cap, art, profile=True)
        p = r.profile
        if p.error or p.node_time_ms is None:
            print(f"| {model} | {variant} | {cap} | {p.source} | {p.runs} | - | {r.stats.mean_ms:.4f} | - | - | "
                  f"{p.error or p.op_time} |")  # fmt: skip
            continue
        lat = p.latency_ms
        print(f"| {model} | {variant} | {cap} | {p.source} | {p.runs} | {p.node_time_ms:.4f} | {r.stats.mean_ms:.4f} | "
              f"{p.node_time_ms / r.stats.mean_ms:.2f} | {lat:.4f} | {p.node_time_ms / lat:.2f} |")  # fmt: skip


def perturbation(forkserver, jobs, pairs: int) -> None:
    print("\n| model | variant | device | pairs | median p50 off ms | median p50 on ms | on / off | "
          "noise: off runs' p50 max / min | job s off | job s on |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model, variant, cap, art in jobs:
        off, on, secs = [], [], {False: [], True: []}
        for i in range(pairs):
            _say(f"  {model} {variant} on {cap}: pair {i + 1}/{pairs}")
            for profile, into in ((False, off), (True, on)):
                t0 = time.monotonic()
                into.append(job(forkserver, model, variant, cap, art, profile=profile).stats.p50_ms)
                secs[profile].append(time.monotonic() - t0)
        m_off, m_on = statistics.median(off), statistics.median(on)
        print(f"| {model} | {variant} | {cap} | {pairs} | {m_off:.4f} | {m_on:.4f} | {m_on / m_off:.3f} | "
              f"{max(off) / min(off):.3f} | {statistics.median(secs[False]):.2f} | {statistics.median(secs[True]):.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()

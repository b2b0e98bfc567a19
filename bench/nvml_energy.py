"""Energy per inference of a model from NVML, beside its latency (issue 19), as the agent records it: the agent's
own benchmark child (no broker), on ``litert:gpu`` and, for comparison, ``litert:cpu`` (whose record says which
sensor it had, or why none).

    python bench/nvml_energy.py MODEL.tflite [--rounds 3] [--min-duration 5] [--out DIR]

Run by bench/gpu_device.sh on a lent GPU machine (needs nvidia-ml-py there). Prints one markdown row per run and
writes the records to DIR/nvml_energy.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.runner import run_job  # noqa: E402
from protocol import ArtifactRef, BenchmarkSettings, JobSpec, new_job_id  # noqa: E402
from protocol.hashing import sha256_file  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--capabilities", default="litert:gpu,litert:cpu")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-duration", type=float, default=5.0, help="seconds of the latency phase (energy window)")
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args()
    import os

    from agent.artifacts import FILE_ROOTS_ENV

    os.environ[FILE_ROOTS_ENV] = str(args.model.resolve().parent)  # the benchmark child reads the file in place
    ref = ArtifactRef(sha256=sha256_file(args.model), uri=args.model.resolve().as_uri(),
                      size_bytes=args.model.stat().st_size, filename=args.model.name)  # fmt: skip
    settings = BenchmarkSettings(threads=1, warmup_iterations=50, min_iterations=500, min_duration_s=args.min_duration,
                                 timeout_s=600, throughput_requests=0)  # fmt: skip
    print("| capability | round | p50 ms | mJ/inf | avg W | peak W | domain (source) | intervals | why not valid |")
    print("|---|---|---|---|---|---|---|---|---|")
    records, failed = [], False
    for cap in args.capabilities.split(","):
        for i in range(args.rounds):
            spec = JobSpec(job_id=new_job_id(), model_id=ref.sha256, model_name=args.model.stem, variant="as-given",
                           capability=cap, artifact=ref, settings=settings)  # fmt: skip
            outcome = run_job(spec.to_dict(), "nvml-bench")
            if not outcome.ok:
                print(f"| {cap} | {i + 1} | - | - | - | - | - | - | {outcome.error_kind}: {outcome.error} |", flush=True)
                failed = True
                break
            r = outcome.record
            e = r.energy
            d = e.domains[0] if e.domains else None
            mj = f"{e.mj_per_inference:.4g}" if e.mj_per_inference is not None else "-"
            print(f"| {cap} | {i + 1} | {r.stats.p50_ms:.4f} | {mj} | {d.avg_w:.1f} | {d.peak_w:.1f} | {d.name} ({d.source}) | "
                  f"{e.intervals} | {e.why or '-'} |" if d else f"| {cap} | {i + 1} | {r.stats.p50_ms:.4f} | - | - | - | - | "
                  f"{e.intervals} | {e.why} |", flush=True)  # fmt: skip
            records.append(r.to_dict(samples="omit"))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nvml_energy.json").write_text(json.dumps(records, indent=1))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()

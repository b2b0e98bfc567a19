"""How often does `fleetbench compare` cry wolf, and does it catch a real slowdown?

    .venv/bin/python bench/regress.py [--pairs 20] [--iterations 1000] [--min-duration 0.5]

Models: MobileNetV2 (alpha 0.35, 96x96, ``weights=None``, made and converted here, cached in
build/bench-regress/) and the same at alpha 0.5 as "a larger model". Every run is a real
benchmark child (``agent.runner.run_job``, fork server as agents use it), LiteRT on the CPU,
1 thread, with the bench process and its children pinned to core 0.

- A/A: two identical runs back to back, ``--pairs`` times. Flagged = a regression or an
  improvement by ``controller.analysis.regress.significance`` (alpha 0.05, its default thresholds).
  Target: about 5% or fewer flagged.
- A/B, a second process competing: B runs while a busy process spins on the same core.
- A/B, a larger model: B is the alpha-0.5 model.

Prints the rates, and saves each pair's ratios and p-value to build/bench-regress/results.json;
``bench/regress.py --grid`` prints the rates those pairs give under other thresholds.
Copy them to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.runner import ForkServer, run_job  # noqa: E402
from controller.analysis.regress import ALPHA, REGRESSION, SAME, TAIL_THRESHOLD, THRESHOLD, significance  # noqa: E402
from protocol import ArtifactRef, BenchmarkSettings, JobSpec, new_job_id  # noqa: E402
from protocol.hashing import sha256_file  # noqa: E402

CACHE = ROOT / "build" / "bench-regress"


def model(alpha: float) -> Path:
    """MobileNetV2 at ``alpha``, 96x96, random weights, as fp32 .tflite (made once)."""
    out = CACHE / f"mobilenetv2_{alpha}_96.tflite"
    if not out.exists():
        import tensorflow as tf

        CACHE.mkdir(parents=True, exist_ok=True)
        net = tf.keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=alpha, weights=None)
        out.write_bytes(tf.lite.TFLiteConverter.from_keras_model(net).convert())
    return out


def run(path: Path, fs: ForkServer, iterations: int, min_duration: float) -> tuple[int, ...]:
    ref = ArtifactRef(sha256=sha256_file(path), uri=path.resolve().as_uri(), size_bytes=path.stat().st_size,
                      filename=path.name)  # fmt: skip
    spec = JobSpec(job_id=new_job_id(), model_id=ref.sha256, model_name=path.stem, variant="tflite-fp32",
                   capability="litert:cpu", artifact=ref,
                   settings=BenchmarkSettings(threads=1, warmup_iterations=50, min_iterations=iterations,
                                              min_duration_s=min_duration, timeout_s=600))  # fmt: skip
    outcome = run_job(spec.to_dict(), "regress-bench", forkserver=fs)
    if not outcome.ok:
        sys.exit(f"benchmark failed: {outcome.error_kind}: {outcome.error}")
    return outcome.record.samples_ns


def _spin(stop) -> None:
    os.sched_setaffinity(0, {0})
    while not stop.is_set():
        sum(range(10_000))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--min-duration", type=float, default=0.5)
    args = ap.parse_args()
    small, large = model(0.35), model(0.5)
    os.sched_setaffinity(0, {0})  # the fork server and each benchmark child inherit it
    fs = ForkServer().start()
    results: dict[str, list] = {"A/A": [], "A/B competing process": [], "A/B larger model": []}
    t0 = time.monotonic()
    for i in range(args.pairs):
        a = run(small, fs, args.iterations, args.min_duration)
        b = run(small, fs, args.iterations, args.min_duration)
        results["A/A"].append(significance(a, b))
        a = run(small, fs, args.iterations, args.min_duration)
        stop = mp.Event()
        spinner = mp.Process(target=_spin, args=(stop,))
        spinner.start()
        b = run(small, fs, args.iterations, args.min_duration)
        stop.set()
        spinner.join()
        results["A/B competing process"].append(significance(a, b))
        a = run(small, fs, args.iterations, args.min_duration)
        b = run(large, fs, args.iterations, args.min_duration)
        results["A/B larger model"].append(significance(a, b))
        print(f"\rpair {i + 1} of {args.pairs} ({time.monotonic() - t0:.0f} s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    fs.close()
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "results.json").write_text(json.dumps({k: [r._asdict() for r in v] for k, v in results.items()}, indent=1))
    print(f"{args.pairs} pairs each, LiteRT CPU, 1 thread, pinned to one core, >= {args.iterations} samples "
          f"and {args.min_duration} s per run; alpha {ALPHA}, thresholds {THRESHOLD:.0%} (median), "
          f"{TAIL_THRESHOLD:.0%} (99%-trimmed mean)")  # fmt: skip
    print("| pairs | flagged | as regression | p50 ratio B/A, median (min-max) | tail ratio B/A, median (min-max) |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        flagged = sum(1 for r in rows if r.verdict != SAME)
        regressions = sum(1 for r in rows if r.verdict == REGRESSION)

        def spread(values):
            v = sorted(values)
            return f"{v[len(v) // 2]:.3f} ({v[0]:.3f}-{v[-1]:.3f})"

        print(f"| {name} | {flagged}/{len(rows)} ({flagged / len(rows):.0%}) | {regressions}/{len(rows)} | "
              f"{spread(r.ratio for r in rows)} | {spread(r.tail_ratio for r in rows)} |")  # fmt: skip




def grid(path: Path = CACHE / "results.json") -> None:
    """Flag rates of the saved pairs under other thresholds (the p-values do not change)."""
    results = json.loads(path.read_text())
    print("| median threshold | tail threshold | " + " | ".join(results) + " |")
    print("|---|---|" + "---|" * len(results))
    for t in (0.05, 0.10, 0.15, 0.20, 0.25):
        for tail in (0.25, 0.5):
            cells = []
            for rows in results.values():
                n = sum(1 for r in rows if (r["p_value"] < ALPHA and abs(r["ratio"] - 1) > t) or
                        (r["tail_p_value"] < ALPHA and (r["tail_ratio"] > 1 + tail or r["tail_ratio"] < 1 / (1 + tail))))  # fmt: skip
                cells.append(f"{n}/{len(rows)} ({n / len(rows):.0%})")
            print(f"| {t:.0%} | {tail:.0%} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if sys.argv[1:] == ["--grid"]:
        grid()
    else:
        main()

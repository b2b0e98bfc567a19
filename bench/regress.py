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

``bench/regress.py --changepoints [--runs 30] [--series 60]`` measures the change-point detector of
`fleetbench regressions` (controller/analysis/changepoints.py) on series made of real recorded runs of the demo
model (tflite-fp32 on litert:cpu, each run a real benchmark child; kept in build/bench-regress/demo_runs.npz,
``--reuse`` reads them again): each series is 20 runs drawn at random, in random order (the real run-to-run
noise), with a slowdown injected from point 12 on (every sample 5%, 10% or 25% slower, or only the slowest 10%
of each run 2x slower: the p99 series is watched for that one). It prints, for a few settings of the
detector, the A/A false-alarm rate (no change injected: any change point found), the share of slowdowns found
within 3 points of the change, found at all (20 points), and the median delay in points.
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


def demo_runs(runs: int, reuse: bool) -> list:
    """``runs`` real runs of the demo model's tflite-fp32 (their samples, ns), recorded once."""
    import numpy as np

    saved = CACHE / "demo_runs.npz"
    if reuse and saved.exists():
        with np.load(saved) as z:
            return [z[k] for k in sorted(z.files, key=int)]
    import tempfile

    from agent.artifacts import FILE_ROOTS_ENV
    from controller import demo_model
    from controller.artifacts import ArtifactStore
    from controller.config import Paths
    from controller.convert import service
    from controller.datasets import Preprocessing
    from controller.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="fleetbench-cp-bench-"))
    paths = Paths.resolve(str(tmp))
    files = demo_model.ensure(paths, on_step=lambda m: print(f"  demo: {m}", file=sys.stderr))
    store = Store(paths.db_url(None))
    store.migrate()
    arts = ArtifactStore(paths.artifacts)
    plan = service.plan(files.keras, ["tflite-fp32"], store, arts, dataset_path=files.holdout, n_calibration=64,
                        preprocessing=Preprocessing(scale=demo_model.SCALE), name="digits-cnn")  # fmt: skip
    (outcome,) = service.execute(plan, store, service.local_runner(arts)).outcomes
    store.close()
    os.environ[FILE_ROOTS_ENV] = str(paths.artifacts)
    path = Path(outcome.artifact.uri.removeprefix("file://"))
    fs = ForkServer()
    out = []
    try:
        for i in range(runs):
            print(f"  run {i + 1}/{runs}", file=sys.stderr, flush=True)
            out.append(np.asarray(run(path, fs, 1000, 0.3), dtype=np.int64))
    finally:
        fs.close()
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(saved, **{str(i): a for i, a in enumerate(out)})
    return out


# size: the experiment's table: the series, the injected changes and the scoring, read top to bottom
def changepoints(runs: list, n_series: int, length: int = 20, at: int = 12) -> None:
    import datetime as dt

    import numpy as np

    from controller.analysis import changepoints as cp

    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    conditions = [("A/A (no change)", None, 1.0, "p50_ms"), ("5% slower", "all", 1.05, "p50_ms"),
                  ("10% slower", "all", 1.10, "p50_ms"), ("25% slower", "all", 1.25, "p50_ms"),
                  ("tail only: slowest 10% 2x", "tail", 2.0, "p99_ms")]  # fmt: skip
    settings = [(0.05, 0.01), (0.05, 0.001), (0.03, 0.01), (0.10, 0.01)]
    print(f"\n{len(runs)} recorded runs of the demo model (median {np.median([np.median(r) for r in runs]) / 1e3:.2f} µs, "
          f"run-to-run p50 spread max/min {max(np.median(r) for r in runs) / min(np.median(r) for r in runs):.3f}); "
          f"{n_series} series of {length} points per condition, change at point {at}\n")  # fmt: skip
    print("| threshold | max p (E-Divisive) | condition | false alarms / found within 3 points | found by point 20 | "
          "median delay (points) |")
    print("|---|---|---|---|---|---|")
    for threshold, max_p in settings:
        for name, kind, factor, metric in conditions:
            rng = np.random.default_rng(7)  # the same series for every setting
            hits3 = hits = 0
            delays = []
            for _ in range(n_series):
                arrs = [runs[i].astype(np.float64) for i in rng.choice(len(runs), size=length)]
                for j in range(at, length):
                    if kind == "all":
                        arrs[j] = arrs[j] * factor
                    elif kind == "tail":
                        a = arrs[j].copy()
                        a[a >= np.quantile(a, 0.9)] *= factor
                        arrs[j] = a
                samples = {j: a.astype(np.int64) for j, a in enumerate(arrs)}
                q = 50 if metric == "p50_ms" else 99
                points = [cp.Point(j, str(j), t0 + dt.timedelta(days=j), float(np.percentile(a, q)) / 1e6)
                          for j, a in enumerate(arrs)]  # fmt: skip
                series = cp.Series("digits-cnn", "tflite-fp32", "litert:cpu", 1)

                def found(n):
                    got = cp.find(series, metric, points[:n], lambda ids: {i: samples[i] for i in ids},
                                  threshold=threshold, max_pvalue=max_p)  # fmt: skip
                    if kind is None:
                        return bool(got)
                    return any(f.kind == "regression" and at - 1 <= f.index <= at + 1 for f in got)

                if kind is None:
                    hits += found(length)
                    continue
                delay = next((d for d in (1, 2, 3) if found(at + d)), None)
                if delay is not None:
                    hits3 += 1
                    delays.append(delay)
                    hits += 1
                elif found(length):
                    hits += 1
                    delays.append(next(d for d in range(4, length - at + 1) if found(at + d)))
            if kind is None:
                cell, by20, med = f"{hits}/{n_series} ({hits / n_series:.0%}) false alarms", "-", "-"
            else:
                cell = f"{hits3}/{n_series} ({hits3 / n_series:.0%})"
                by20 = f"{hits}/{n_series} ({hits / n_series:.0%})"
                med = f"{np.median(delays):.0f}" if delays else "-"
            print(f"| {threshold:.0%} | {max_p:g} | {name} | {cell} | {by20} | {med} |", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--grid"]:
        grid()
    elif "--changepoints" in sys.argv[1:]:
        ap = argparse.ArgumentParser(description="the change-point detector on series of real demo runs")
        ap.add_argument("--changepoints", action="store_true")
        ap.add_argument("--runs", type=int, default=30)
        ap.add_argument("--series", type=int, default=60)
        ap.add_argument("--reuse", action="store_true", help="read the recorded runs again instead of running")
        args = ap.parse_args()
        changepoints(demo_runs(args.runs, args.reuse), args.series)
    else:
        main()

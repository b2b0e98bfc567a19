"""Energy and conditions (issue 19): what the energy sampler and the conditions watch cost the numbers they sit
beside.

    python bench/energy.py [--rounds 6] [--models palm_detection_lite,iris_landmark]

1. The latency phase with the sampler off and on. The same job (a corpus model, benchmarked as it is on
   litert:cpu in a fresh benchmark child, as an agent runs it) runs in rounds of three: no sensor (no sampling
   thread runs), a RAPL tree sampled every 20 ms (the default) and every 5 ms. The tree is a recorded one
   (tests/data/sysfs) whose five counters a thread of this process advances every 5 ms in all three runs, so the
   only difference is the sampler. The ratio of median p50s (on / off) is the effect; the spread of the "off"
   runs' p50s (max / min) is the noise it must be read against. No machine here has a real RAPL counter: reading
   a real one is a sysfs read like these (a few µs), so the figure carries over; the GPU recipe
   (bench/gpu_device.sh) measures NVML's where a GPU is lent.
2. What one reading costs, timed in this process: a sample of the five RAPL domains, the thermal state (the
   recorded laptop's two zones and two cores), and the CPU time of every other process (a scan of /proc, taken
   twice per job, outside the timed loop).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.runner import run_job  # noqa: E402
from protocol import BenchmarkSettings, JobSpec, new_job_id  # noqa: E402

SETTINGS = BenchmarkSettings(threads=1, warmup_iterations=50, min_iterations=1000, min_duration_s=2.0, timeout_s=600)
MODES = [("off", None), ("on, 20 ms", "0.02"), ("on, 5 ms", "0.005")]


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def job(model: str, artifact, powercap: Path, interval: str | None):
    os.environ["FLEETBENCH_POWERCAP_ROOT"] = str(powercap) if interval else str(powercap.parent / "none")
    os.environ["FLEETBENCH_ENERGY_INTERVAL_S"] = interval or "0.02"
    spec = JobSpec(job_id=new_job_id(), model_id=artifact.sha256, model_name=model, variant="tflite",
                   capability="litert:cpu", artifact=artifact, settings=SETTINGS)  # fmt: skip
    outcome = run_job(spec.to_dict(), "energy-bench")
    if not outcome.ok:
        sys.exit(f"error: {model}: {outcome.error_kind}: {outcome.error}")
    r = outcome.record
    if interval and not r.energy.valid:
        sys.exit(f"error: {model}: the sampler's window was not valid: {r.energy.why}")
    return r


def perturbation(models: list[str], rounds: int, tmp: Path) -> None:
    from agent.artifacts import FILE_ROOTS_ENV
    from controller.artifacts import ArtifactStore
    from tests import corpus
    from tests.sysfs import RaplTree, Ticker

    arts = ArtifactStore(tmp / "artifacts")
    os.environ[FILE_ROOTS_ENV] = str(tmp / "artifacts")
    os.environ["FLEETBENCH_HWMON_ROOT"] = str(tmp / "no-hwmon")
    tree = RaplTree(tmp / "powercap", wrap_uj=262_143_328_850, start_uj=0)
    print("\n| model | rounds | median p50 off ms | on, 20 ms / off | on, 5 ms / off | noise: off runs' p50 max / min | "
          "sampling intervals (20 ms, 5 ms) |")
    print("|---|---|---|---|---|---|---|")
    with Ticker(tree, step_s=0.005):
        for model in models:
            source = corpus.path(f"{model}.tflite")
            if not source.is_file():
                sys.exit(f"error: {source} is missing; run `make corpus` first")
            art = arts.put_file(source)
            p50: dict[str, list[float]] = {m: [] for m, _ in MODES}
            intervals: dict[str, list[int]] = {m: [] for m, _ in MODES}
            for i in range(rounds):
                _say(f"  {model}: round {i + 1}/{rounds}")
                order = MODES[i % 3 :] + MODES[: i % 3]  # each mode takes each place in turn
                for mode, interval in order:
                    r = job(model, art, tmp / "powercap", interval)
                    p50[mode].append(r.stats.p50_ms)
                    intervals[mode].append(r.energy.intervals)
            off = statistics.median(p50["off"])
            print(f"| {model} | {rounds} | {off:.4f} | {statistics.median(p50['on, 20 ms']) / off:.3f} | "
                  f"{statistics.median(p50['on, 5 ms']) / off:.3f} | {max(p50['off']) / min(p50['off']):.3f} | "
                  f"{statistics.median(intervals['on, 20 ms']):.0f}, {statistics.median(intervals['on, 5 ms']):.0f} |")  # fmt: skip


def readings(tmp: Path, n: int = 200) -> None:
    from agent import conditions
    from agent.energy import Sampler, Sources
    from tests.sysfs import RaplTree, ThermalTree

    RaplTree(tmp / "rp")
    ThermalTree(tmp / "thermal", tmp / "cpu")
    os.environ["FLEETBENCH_THERMAL_ROOT"], os.environ["FLEETBENCH_CPUFREQ_ROOT"] = str(tmp / "thermal"), str(tmp / "cpu")
    sampler = Sampler(Sources.probe(powercap=tmp / "rp", hwmon=tmp / "none", nvml=False))
    mine = conditions._ancestors()
    procs = sum(1 for e in os.scandir("/proc") if e.name.isdigit())
    print("\n| reading | µs per call (median of {n}) |".replace("{n}", str(n)))
    print("|---|---|")
    for name, fn in [("energy sample: 5 RAPL domains", sampler._sample), ("thermal state: 2 zones, 2 cores", conditions.thermal_state),
                     (f"other processes' CPU time: {procs} processes in /proc", lambda: conditions.other_cpu_seconds(mine))]:  # fmt: skip
        times = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            fn()
            times.append(time.perf_counter_ns() - t0)
        print(f"| {name} | {statistics.median(times) / 1e3:,.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6, help="rounds of off / on at 20 ms / on at 5 ms per model")
    ap.add_argument("--models", default="palm_detection_lite,iris_landmark", help="corpus .tflite names (no suffix)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleetbench-energy-bench-") as tmp:
        readings(Path(tmp))
        perturbation([m.strip() for m in args.models.split(",") if m.strip()], args.rounds, Path(tmp))


if __name__ == "__main__":
    main()

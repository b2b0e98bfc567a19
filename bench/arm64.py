"""The emulated aarch64 agent (issue 21): what it costs to build and to run, and how far qemu's timings are from
this host's, the same bundle run natively and emulated in one run.

    .venv/bin/python bench/arm64.py [--runs 3] [--cold]

Needs root and `make arm64` (tests/arm64.py). ``--cold`` also builds the root again into a temporary folder
(debootstrap, the wheels; minutes), as a machine without the cache does. Prints one table; copy it to
docs/benchmarks.md. The emulated-over-native ratio is why emulated records are left out of every comparison:
it says how slow qemu-user is here, not how fast a board is.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import arm64  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _bundle(work: Path) -> Path:
    """A bundle of the tests' tiny model (tflite-fp32 on litert:cpu), made with the controller here."""
    from controller import demo_model
    from controller.artifacts import ArtifactStore
    from controller.bundles import create_bundle
    from controller.config import Paths
    from controller.convert import service
    from controller.store import Store
    from protocol import BenchmarkSettings

    paths = Paths.resolve(work / "fb")
    paths.demo.mkdir(parents=True, exist_ok=True)
    store = Store(f"sqlite:///{work / 'fb.db'}")
    store.migrate()
    arts = ArtifactStore(work / "artifacts")
    files = demo_model.ensure(paths)  # the demo's digit classifier: a real small CNN, trained here
    plan = service.plan(files.keras, ["tflite-fp32"], store, arts, dataset_path=files.holdout, n_calibration=8,
                        name="digits")  # fmt: skip
    service.execute(plan, store, service.local_runner(arts))
    out = work / "digits.fbb"
    create_bundle(store, arts, "digits", out, variants=["tflite-fp32"],
                  settings=BenchmarkSettings(min_iterations=300, min_duration_s=1.0))  # fmt: skip
    store.close()
    return out


def _p50(results: Path) -> float:
    from protocol.bundles import read_results

    (o,) = read_results(results)
    assert o.ok, o.error
    return o.record.stats.p50_ms


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--cold", action="store_true", help="also build the root from nothing (minutes)")
    args = p.parse_args(argv)
    if arm64.problem() or not arm64.ready():
        print(f"error: {arm64.problem() or 'no arm64 root: run `make arm64`'}", file=sys.stderr)
        return 2
    rows = []
    if args.cold:
        with tempfile.TemporaryDirectory() as cold:
            os.environ["FLEETBENCH_ARM64"] = str(Path(cold) / "root-cache")
            rows.append(("cold build: debootstrap + wheels (s)", f"{_timed(lambda: arm64.build(say=lambda m: None)):.0f}"))
            del os.environ["FLEETBENCH_ARM64"]
    with tempfile.TemporaryDirectory() as tmp, arm64.binfmt():
        work = Path(tmp)
        wheels = work / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)], check=True)
        copy = _timed(lambda: setattr(main, "m", arm64.Machine(work)))
        m = main.m
        m.install_agent(next(wheels.glob("fleetbench-*.whl")))
        rows.append(("warm: a private copy of the root (s)", f"{copy:.1f}"))
        probe = [_timed(lambda: m.run(["python3", "-m", "agent", "--probe"], FLEETBENCH_DISABLE_GPU_PROBE="1"))
                 for _ in range(args.runs)]  # fmt: skip
        native_probe = [_timed(lambda: subprocess.run([sys.executable, "-m", "agent", "--probe"], capture_output=True,
                                                      env=dict(os.environ, FLEETBENCH_DISABLE_GPU_PROBE="1")))
                        for _ in range(args.runs)]  # fmt: skip
        rows.append(("`fleetbench-agent --probe`, emulated / native (s)",
                     f"{statistics.median(probe):.1f} / {statistics.median(native_probe):.1f}"))  # fmt: skip
        bundle = _bundle(work)
        emu, nat = [], []
        for i in range(args.runs):
            out_e, out_n = work / f"e{i}.json", work / f"n{i}.json"
            wall_e = _timed(lambda: m.run(["python3", "-m", "agent", "run-bundle", str(bundle), "--out", str(out_e)],
                                          binds=(work,), FLEETBENCH_DISABLE_GPU_PROBE="1"))  # fmt: skip
            wall_n = _timed(lambda: subprocess.run([sys.executable, "-m", "agent", "run-bundle", str(bundle), "--out", str(out_n)],
                                                   capture_output=True, check=True))  # fmt: skip
            emu.append((wall_e, _p50(out_e)))
            nat.append((wall_n, _p50(out_n)))
        rows.append(("run-bundle wall, emulated / native (s)",
                     f"{statistics.median(w for w, _ in emu):.1f} / {statistics.median(w for w, _ in nat):.1f}"))  # fmt: skip
        pe, pn = [p for _, p in emu], [p for _, p in nat]
        rows.append(("digits tflite-fp32 p50, emulated / native (ms)", f"{statistics.median(pe):.3f} / {statistics.median(pn):.3f}"))
        rows.append(("emulated ÷ native p50 (min–max over runs)",
                     f"{statistics.median(pe) / statistics.median(pn):.0f}× ({min(pe) / max(pn):.0f}–{max(pe) / min(pn):.0f})"))  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"| {'figure':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

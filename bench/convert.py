"""Time `fleetbench convert` into all seven variants, cold and cached.

    .venv/bin/python bench/convert.py [--skip-mobilenet]

Models:
- the demo model (digits CNN) with the digits held-out set as calibration data;
- Keras MobileNetV2, weights=None, 224x224x3, calibrated on 32 seeded random
  images (its accuracy is meaningless; it is a real graph for timing).

Each is converted through the real CLI (embedded broker, converter worker,
sandboxed child) into a fresh data directory (cold), then again (cached).
Targets: demo model cold < 60 s; cached < 2 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def convert(model: Path, data: Path, data_dir: Path, *extra: str) -> tuple[float, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "controller.cli", "convert", str(model), "--data", str(data),
           "--data-dir", str(data_dir), *extra]  # fmt: skip
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"convert failed:\n{r.stdout}\n{r.stderr}")
    return elapsed, r.stdout


def demo_inputs(tmp: Path) -> tuple[Path, Path, list[str]]:
    from controller.config import Paths
    from controller.demo_model import ensure

    files = ensure(Paths.resolve(tmp / "demo-build"))
    return files.keras, files.holdout, ["--scale", "0.0625", "--calibration-size", "64", "--name", "digits-cnn"]


def mobilenet_inputs(tmp: Path) -> tuple[Path, Path, list[str]]:
    from controller.demo_model import import_tf

    tf = import_tf()
    model = tf.keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    path = tmp / "mobilenetv2.keras"
    model.save(path)
    rng = np.random.default_rng(0)
    data = tmp / "random224.npz"
    np.savez(data, x=rng.random((40, 224, 224, 3), dtype=np.float32), y=rng.integers(0, 1000, 40))
    return path, data, ["--calibration-size", "32", "--name", "mobilenetv2"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-mobilenet", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        cases = [("digits CNN (demo)", demo_inputs)]
        if not args.skip_mobilenet:
            cases.append(("MobileNetV2 224x224", mobilenet_inputs))
        for label, make in cases:
            model, data, extra = make(tmp)
            data_dir = tmp / f"fb-{model.stem}"
            cold, out = convert(model, data, data_dir, *extra)
            if "7 to convert" not in out:
                sys.exit(f"expected a cold conversion of 7 variants:\n{out}")
            cached = [convert(model, data, data_dir, *extra)[0] for _ in range(3)]
            rows.append((label, cold, min(cached), max(cached)))
            print(out)
    print(f"machine: {os.cpu_count()} cores")
    print("| model | all 7 variants, cold, s | cached re-run, s (min-max of 3) |")
    print("|---|---|---|")
    for label, cold, lo, hi in rows:
        print(f"| {label} | {cold:.1f} | {lo:.2f}-{hi:.2f} |")


if __name__ == "__main__":
    main()

"""Time `fleetbench demo` (seven variants) cold and warm, and check the agent's numbers.

    .venv/bin/python bench/demo.py [--runs 3]

- cold: a fresh data directory (trains, converts all seven variants, benchmarks each);
- warm: the same data directory again (reuses the model and the cached variants);
- agent vs direct: the tflite-fp32 median the agent stored, against a plain
  in-process LiteRT loop on the same .tflite with the same thread count,
  interleaved so both see the same machine load. The ratio should sit near 1.0: the agent
  adds a child process and Celery around the loop, never inside it.

Prints one table; copy it to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "controller.cli", "demo", "--min-iterations", "2000", "--min-duration", "1.0"]


def run_demo(data_dir: Path) -> float:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.perf_counter()
    r = subprocess.run(CLI + ["--data-dir", str(data_dir)], capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"demo failed:\n{r.stdout}\n{r.stderr}")
    return time.perf_counter() - t0


def direct_median_ms(model: Path, n: int = 2000) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model), num_threads=1)
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], dtype=inp["dtype"]))
    for _ in range(20):
        interp.invoke()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        interp.invoke()
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3, help="warm runs (each also gets one direct-loop measurement)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "fb"
        cold = run_demo(data)
        warm, direct = [], []
        con = sqlite3.connect(data / "fleetbench.db")
        sha = con.execute("SELECT artifact_sha256 FROM results WHERE variant = 'tflite-fp32'").fetchone()[0]
        model = data / "artifacts" / sha[:2] / sha
        for _ in range(args.runs):
            warm.append(run_demo(data))
            direct.append(direct_median_ms(model))
        rows = con.execute("SELECT record FROM results WHERE variant = 'tflite-fp32' ORDER BY id").fetchall()
        agent = [json.loads(r[0])["stats"]["p50_ms"] for r in rows]
        con.close()
    agent_warm = agent[1:]
    print(f"machine: {os.cpu_count()} cores; runs: 1 cold + {args.runs} warm")
    print("| figure | value |")
    print("|---|---|")
    print(f"| demo, cold (train + convert 7 + benchmark 7), wall s | {cold:.1f} |")
    print(f"| demo, warm (model and variants reused), wall s, median of {args.runs} | {statistics.median(warm):.1f} |")
    print(f"| agent tflite-fp32 p50, ms, median of warm runs | {statistics.median(agent_warm):.4f} |")
    print(f"| direct LiteRT loop p50, ms, median | {statistics.median(direct):.4f} |")
    ratios = [a / d for a, d in zip(agent_warm, direct)]
    print(f"| agent / direct p50 ratio, median (min-max) | {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |")


if __name__ == "__main__":
    main()

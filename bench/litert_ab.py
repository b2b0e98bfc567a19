"""In one process, alternate blocks of the agent's LiteRT session and the
LiteRT benchmark tool's own way of running a model, to tell API and set-up
differences apart from machine state (GPU clocks, other load).

    python bench/litert_ab.py MODEL.tflite [--accelerator gpu|cpu] [--blocks 6] [--per-block 1000]

A: ``agent.backends.litert.CompiledModelSession`` (default environment,
   ``run_by_index`` on prebuilt buffer lists): what the agent times.
B: the tool's set-up (``Environment.create(EnvironmentOptions())``,
   ``CompiledModel.from_file(options=...)``, ``run_by_name`` with dicts).
Both are timed with the same loop: perf_counter_ns around the run call only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.backends.litert import CompiledModelSession  # noqa: E402


def tool_style(model: Path, accelerator: str):
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.environment import Environment, EnvironmentOptions
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import CpuOptions, Options

    env = Environment.create(options=EnvironmentOptions())
    accel = HardwareAccelerator.GPU if accelerator == "gpu" else HardwareAccelerator.CPU
    m = CompiledModel.from_file(str(model), environment=env,
                                options=Options(hardware_accelerators=accel, cpu_options=CpuOptions(num_threads=1)))
    key = next(iter(m.get_signature_list()))
    details = m.get_input_tensor_details(key)
    ins = {n: m.create_input_buffer_by_name(key, n) for n in details}
    outs = {n: m.create_output_buffer_by_name(key, n) for n in m.get_output_tensor_details(key)}
    for n, buf in ins.items():
        buf.write(np.random.uniform(-1, 1, details[n]["shape"]).astype(np.float32))
    return lambda: m.run_by_name(key, ins, outs)


def block(fn, n: int) -> float:
    xs = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        xs.append(time.perf_counter_ns() - t0)
    return statistics.median(xs) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--accelerator", default="gpu")
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--per-block", type=int, default=1000)
    args = ap.parse_args()
    session = CompiledModelSession(args.model, args.accelerator)
    session.prepare([np.random.default_rng(0).random(session.input_specs()[0].shape, dtype=np.float32)])
    a_fn, b_fn = session.run, tool_style(args.model, args.accelerator)
    for fn in (a_fn, b_fn):
        for _ in range(50):
            fn()
    a, b = [], []
    for i in range(args.blocks):
        a.append(block(a_fn, args.per_block))
        b.append(block(b_fn, args.per_block))
        print(f"block {i + 1}: agent session {a[-1]:.4f} ms, tool-style {b[-1]:.4f} ms", flush=True)
    ratios = [x / y for x, y in zip(a, b)]
    print(f"median agent {statistics.median(a):.4f} ms, tool-style {statistics.median(b):.4f} ms, "
          f"ratio {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")  # fmt: skip


if __name__ == "__main__":
    main()

"""Does the agent's median agree with the vendors' own benchmark tools?

    python bench/fidelity.py litert MODEL.tflite [--capability litert:cpu|litert:gpu] [--threads N]
    python bench/fidelity.py openvino MODEL_IR.tar|model.xml [--threads N]

Runs the vendor tool and the agent's benchmark of the same model with the
same settings, interleaved (tool, agent, tool, agent, ...) so both see the
same machine state, and prints the ratio of medians, agent over vendor.

- LiteRT: ``python -m ai_edge_litert.tools.benchmark_litert_model`` (CPU
  with --num_threads; GPU with --use_gpu --no_cpu --require_full_delegation).
  The tool rounds its median to 0.01 ms, which bounds the ratio's resolution
  for sub-millisecond models.
- OpenVINO: ``benchmark_app -hint none -nstreams 1 -nthreads N -nireq 1 -api sync``
  (``-hint latency`` when N is 0); its median.

The agent side is ``agent.runner.run_job``: a real benchmark child process,
no broker, so this also runs on a bare device with only numpy and a runtime
(no celery, no sqlalchemy). ``--out DIR`` writes results.json there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.runner import run_job  # noqa: E402 - and ForkServer, unless --cold
from protocol import ArtifactRef, BenchmarkSettings, JobSpec, new_job_id  # noqa: E402
from protocol.hashing import sha256_file  # noqa: E402
from protocol.packing import pack_files  # noqa: E402


#: Agents fork each benchmark child from a fork server (agent.runner.ForkServer); so does this bench,
#: unless --cold.
FORKSERVER = None


def _ref(path: Path) -> ArtifactRef:
    return ArtifactRef(sha256=sha256_file(path), uri=path.resolve().as_uri(), size_bytes=path.stat().st_size, filename=path.name)


def benchmark_app_like_input(xml: Path, out: Path) -> Path:
    """A one-sample data set filled as benchmark_app fills float inputs: uniform(0, 255).

    Timing depends on the data (MobileNetV2 reads ~4% slower on 0-255 than on 0-1 inputs here),
    so the agent is handed the same kind of input the vendor tool measures with.
    """
    import numpy as np
    import openvino as ov

    shape = [int(d) for d in ov.Core().read_model(str(xml)).inputs[0].get_shape()]
    np.savez(out, x=np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32))
    return out


def agent_median_ms(artifact: Path, capability: str, threads: int, min_iterations: int, min_duration: float,
                    dataset: Path | None = None, variant: str = "as-given") -> float:  # fmt: skip
    ref = _ref(artifact)
    spec = JobSpec(
        job_id=new_job_id(), model_id=ref.sha256, model_name=artifact.stem, variant=variant,
        capability=capability, artifact=ref, dataset=_ref(dataset) if dataset else None,
        settings=BenchmarkSettings(threads=threads, warmup_iterations=50, min_iterations=min_iterations,
                                   min_duration_s=min_duration, timeout_s=600),
    )  # fmt: skip
    outcome = run_job(spec.to_dict(), "fidelity-bench", forkserver=FORKSERVER)
    if not outcome.ok:
        sys.exit(f"agent benchmark failed: {outcome.error_kind}: {outcome.error}")
    return outcome.record.stats.p50_ms


def litert_tool_median_ms(model: Path, capability: str, threads: int, runs: int) -> float:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model", "--model", str(model),
               "--num_runs", str(runs), "--warmup_runs", "50", "--num_threads", str(threads), "--result_json", out.name]
        if capability == "litert:gpu":
            cmd += ["--use_gpu", "--no_cpu", "--require_full_delegation"]
        r = subprocess.run(cmd, capture_output=True, text=True)  # fmt: skip
        if r.returncode != 0:
            sys.exit(f"LiteRT benchmark tool failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        return float(json.loads(Path(out.name).read_text())["latency"]["median_ms"])


def openvino_tool_median_ms(xml: Path, threads: int, seconds: float) -> float:
    # -api sync: the agent's latency phase is one synchronous request; benchmark_app's default async API
    # adds the callback round trip to each latency (0.07 ms here: 10% of a 0.7 ms model, 0.2% of MobileNetV2)
    cmd = ["benchmark_app", "-m", str(xml), "-d", "CPU", "-nireq", "1", "-t", str(seconds), "-api", "sync"]
    import openvino as ov

    from agent.backends.openvino import is_plain_f32

    if is_plain_f32(ov.Core().read_model(str(xml))):  # as the agent runs it: an fp32 model in f32, not bf16
        cmd += ["-infer_precision", "f32"]
    if threads > 0:  # benchmark_app takes -nthreads only with -hint none; one stream = the latency set-up
        cmd += ["-hint", "none", "-nstreams", "1", "-nthreads", str(threads)]
    else:
        cmd += ["-hint", "latency"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    m = re.search(r"Median:\s+([\d.]+) (ms|us)", r.stdout)  # it prints us below a millisecond
    if r.returncode != 0 or not m:
        sys.exit(f"benchmark_app failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return float(m.group(1)) / (1000.0 if m.group(2) == "us" else 1.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runtime", choices=["litert", "openvino"])
    ap.add_argument("model", type=Path, help=".tflite; or an OpenVINO .xml (with its .bin) or IR tar")
    ap.add_argument("--capability", default=None, help="litert:cpu (default) or litert:gpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=1000, help="samples per measurement, both sides")
    ap.add_argument("--min-duration", type=float, default=2.0, help="agent's min_duration_s (0: iterations alone decide)")
    ap.add_argument("--tag", default="", help="suffix of the results file name")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--cold", action="store_true", help="start each agent child cold, not from the fork server as agents do")
    args = ap.parse_args()
    global FORKSERVER
    if not args.cold:
        from agent.runner import ForkServer

        FORKSERVER = ForkServer().start()

    tool, agent = [], []
    with tempfile.TemporaryDirectory() as tmp:
        artifact = args.model
        if args.runtime == "openvino":
            capability = "openvino:CPU"
            if args.model.suffix == ".xml":  # the agent takes IR tars, as the controller makes them
                artifact = Path(tmp) / "model.tar"
                artifact.write_bytes(pack_files({"model.xml": args.model, "model.bin": args.model.with_suffix(".bin")}))
                xml = args.model
            else:
                from protocol.packing import unpack

                xml = unpack(args.model, Path(tmp) / "ir") / "model.xml"
            dataset = benchmark_app_like_input(xml, Path(tmp) / "input.npz")
        else:
            capability = args.capability or "litert:cpu"
            dataset = None
        for i in range(args.rounds):
            if args.runtime == "litert":
                tool.append(litert_tool_median_ms(args.model, capability, args.threads, args.iterations))
            else:
                tool.append(openvino_tool_median_ms(xml, args.threads, seconds=10))
            agent.append(agent_median_ms(artifact, capability, args.threads, args.iterations, args.min_duration, dataset))
            print(f"round {i + 1}: vendor {tool[-1]:.4f} ms, agent {agent[-1]:.4f} ms", flush=True)
    ratios = [a / t for a, t in zip(agent, tool)]
    result = {
        "model": args.model.name, "runtime": args.runtime, "capability": capability, "threads": args.threads,
        "vendor_median_ms": statistics.median(tool), "agent_median_ms": statistics.median(agent),
        "ratio_median": statistics.median(ratios), "ratios": ratios, "rounds": args.rounds, "cores": os.cpu_count(),
        "iterations": args.iterations, "agent_min_duration_s": args.min_duration,
    }  # fmt: skip
    print(f"| {result['model']} | {capability} | {args.threads} | {result['vendor_median_ms']:.3f} | "
          f"{result['agent_median_ms']:.3f} | {result['ratio_median']:.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |")  # fmt: skip
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        name = f"fidelity-{args.runtime}-{capability.replace(':', '_')}-{args.model.stem}{args.tag}.json"
        (args.out / name).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""The model zoo: every corpus model (tests/corpus.py) in every variant that applies, on every local capability.

    .venv/bin/python bench/zoo.py [--rounds 3] [--out build/zoo.md] [MODEL ...]

For each corpus model: convert into all seven variants (the file itself is one of them), benchmark each on
litert:cpu or openvino:CPU in the agent's child process, and for the fp32 variants also compare the agent with
the vendor's own tool on the same file and the same kind of input, round by round (LiteRT's
``benchmark_litert_model``; OpenVINO's ``benchmark_app -infer_precision f32``; bench/fidelity.py's functions). Writes one Markdown table: model, variant, source or derived, precision run, status
(with the reason when refused or failed), size, p50, worst-output SNR and cosine, and agent/vendor p50 ratio
(median over rounds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from protocol import BenchmarkSettings  # noqa: E402
from tests import corpus  # noqa: E402

SETTINGS = BenchmarkSettings(threads=1, warmup_iterations=10, min_iterations=200, min_duration_s=1.0, timeout_s=600)


def agent_over_vendor(row: dict, workdir: Path) -> float:
    """The agent's p50 over the vendor tool's, on the same file, settings and kind of input (as bench/fidelity.py
    measures it: benchmark_app fills inputs uniform 0-255, so the agent gets such an input too)."""
    import fidelity

    rec = row["record"]
    path = Path(row["artifact_path"])
    threads = rec.settings.threads
    if rec.runtime == "litert":
        vendor = fidelity.litert_tool_median_ms(path, rec.capability, threads, 1000)
        agent = fidelity.agent_median_ms(path, rec.capability, threads, 1000, 1.0, variant=rec.variant)
        return agent / vendor
    from protocol.packing import unpack

    xml = unpack(path, Path(tempfile.mkdtemp(dir=workdir))) / "model.xml"
    data = fidelity.benchmark_app_like_input(xml, Path(tempfile.mkdtemp(dir=workdir)) / "input.npz")
    vendor = fidelity.openvino_tool_median_ms(xml, threads, 5)
    agent = fidelity.agent_median_ms(path, rec.capability, threads, 1000, 2.0, data, variant=rec.variant)
    return agent / vendor


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="corpus model file names (default: all)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "zoo.md")
    args = ap.parse_args()
    if corpus.missing():
        print(f"error: the corpus is missing {', '.join(corpus.missing())}: run `make corpus` first", file=sys.stderr)
        return 2
    names = args.models or corpus.names()
    import fidelity
    from agent.runner import ForkServer

    fidelity.FORKSERVER = ForkServer().start()  # agents fork each benchmark child from one, as bench/fidelity does
    lines = ["| model | variant | made | precision run | status | size KiB | p50 ms | SNR dB | cosine | agent/vendor p50 |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    spread = []
    with tempfile.TemporaryDirectory(prefix="fleetbench-zoo-") as tmp:
        for name in names:
            t0 = time.time()
            work = Path(tmp) / name
            rounds = []
            for i in range(args.rounds):
                rows = corpus.run_model(name, work, SETTINGS)
                for r in rows:
                    r["ratio"] = None
                    if r["record"] is not None and r["variant"].endswith("-fp32"):
                        from controller.artifacts import ArtifactStore

                        r["artifact_path"] = ArtifactStore(work / "artifacts").path_for(r["record"].artifact_sha256)
                        r["ratio"] = agent_over_vendor(r, work)
                rounds.append(rows)
            for j, r in enumerate(rounds[0]):
                recs = [rs[j]["record"] for rs in rounds if rs[j]["record"] is not None]
                ratios = [rs[j]["ratio"] for rs in rounds if rs[j]["ratio"] is not None]
                rec = recs[0] if recs else None
                f = rec.fidelity if rec else None
                p50 = statistics.median(x.stats.p50_ms for x in recs) if recs else None
                if len(ratios) > 1:
                    spread.append(max(ratios) / min(ratios))
                status = "ok" if rec else f"{r['status']}: {r['reason'].splitlines()[0][:160]}"
                if rec is not None:
                    from controller.artifacts import ArtifactStore
                    from controller.convert.sizes import int8_reason

                    fp32 = next((x["size_bytes"] for x in rounds[0] if x["variant"] == r["variant"].split("-")[0] + "-fp32"
                                 and x["size_bytes"]), None)  # fmt: skip
                    why = int8_reason(r["variant"], r["size_bytes"], fp32,
                                      ArtifactStore(work / "artifacts").path_for(rec.artifact_sha256))
                    status += f" ({why})" if why else ""
                    if rec.fidelity is not None and rec.fidelity.warnings:
                        status += " (the fp32 reference is constant across samples: fidelity compares nothing)"
                lines.append("| " + " | ".join([
                    name, r["variant"], "source" if r["source"] else ("derived" if r["size_bytes"] else "-"),
                    rec.precision if rec else "-", status.replace("|", "/"),
                    f"{r['size_bytes'] / 1024:,.0f}" if r["size_bytes"] else "-",
                    f"{p50:.3f}" if p50 is not None else "-",
                    ("identical" if f.snr_db >= 300 else f"{f.snr_db:.1f}") if f and f.snr_db is not None else "-",
                    f"{f.mean_cosine:.6f}" if f else "-",
                    f"{statistics.median(ratios):.3f}" if ratios else "-",
                ]) + " |")  # fmt: skip
            print(f"{name}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    noise = f"\nNoise: the agent/vendor ratio of one variant varied by up to {max(spread):.3f}x between rounds.\n" if spread else ""
    text = "\n".join(lines) + "\n" + noise
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())

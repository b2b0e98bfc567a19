"""`fleetbench demo` end to end, as a user runs it: a real CLI process, real services."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from controller.convert.variants import STANDARD

pytestmark = pytest.mark.slow

FLEETBENCH = [sys.executable, "-m", "controller.cli"]


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("FLEETBENCH_DB_URL", None)
    env.pop("COLUMNS", None)  # piped output: 120 columns
    return env


def _demo(data_dir: Path, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        FLEETBENCH + ["demo", "--data-dir", str(data_dir), "--min-iterations", "700", "--min-duration", "0.2", *extra],
        capture_output=True, text=True, timeout=timeout, env=_env(),
    )  # fmt: skip


def _rows(data_dir: Path) -> list[dict]:
    """The stored records as JSON, their raw samples (kept apart, FBS1) put back."""
    from protocol.samples import decode

    con = sqlite3.connect(data_dir / "fleetbench.db")
    try:
        return [dict(json.loads(r), samples_ns=decode(b).tolist())
                for r, b in con.execute("SELECT record, samples FROM results ORDER BY id")]  # fmt: skip
    finally:
        con.close()


def _leftovers(marker: str) -> list[str]:
    """Processes whose command line mentions ``marker`` (our agent id or data dir)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if marker in cmd and p.pid != os.getpid():
            found.append(f"{p.pid}: {cmd}")
    return found


def _agent_id(stdout: str) -> str:
    m = re.search(r"starting a local agent \(([^)]+)\)", stdout)
    assert m, stdout
    return m.group(1)


def test_demo_twice(tmp_path):
    data = tmp_path / "fb"
    first = _demo(data)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert "digits-cnn" in out and "litert:cpu" in out and "openvino:CPU" in out
    assert str(data / "fleetbench.db") in out  # says where the database is
    assert "trained in" in out
    for header in ("accuracy", "fidelity", "ran in", "p50 ms", "p90 ms", "inf/s", "KiB", "vs fp32", "cached"):
        assert header in out
    assert max(len(ln) for ln in out.splitlines()) <= 120  # piped: no wider than 120 columns

    rows = _rows(data)
    assert sorted(r["variant"] for r in rows) == sorted(STANDARD)
    for rec in rows:
        assert rec["accuracy_top1"] > 0.9 and rec["accuracy_samples"] == 359 - 64, rec["variant"]
        assert rec["stats"]["p50_ms"] > 0 and rec["stats"]["p90_ms"] >= rec["stats"]["p50_ms"]
        assert rec["throughput_ips"] > 0 and rec["model_size_bytes"] > 0
        assert rec["validity"]["valid"] and len(rec["samples_ns"]) >= 700
        assert rec["capability"] == ("litert:cpu" if rec["variant"].startswith("tflite") else "openvino:CPU")
        # measured on the device against the fp32 outputs computed at conversion
        fid = rec["fidelity"]
        assert fid["samples"] == 295 and fid["top1_agreement"] >= 0.95 and fid["mean_cosine"] > 0.99, rec["variant"]
        assert len(fid["outputs"]) == 1 and fid["snr_db"] is not None and fid["warnings"] == []
        assert rec["accuracy"]["task"] == "classification" and rec["accuracy"]["top5"] >= rec["accuracy_top1"]
        assert rec["precision"], f"{rec['variant']}: no precision read back from the runtime"
        if rec["variant"].endswith("fp32"):
            assert fid["top1_agreement"] == 1.0 and fid["max_abs_error"] < 1e-3
            assert rec["precision"] == "f32" and fid["snr_db"] >= 60
    assert _leftovers(_agent_id(out)) == [] and _leftovers(str(data)) == []

    second = _demo(data)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "reused from an earlier run" in second.stdout and "(14 in total)" in second.stdout
    assert "reusing 7 converted variant(s) from the cache" in second.stdout
    rows = _rows(data)
    assert len(rows) == 14 and len({r["job_id"] for r in rows}) == 14
    assert len({r["model_id"] for r in rows}) == 1
    assert _leftovers(_agent_id(second.stdout)) == [] and _leftovers(str(data)) == []

    shown = subprocess.run(FLEETBENCH + ["results", "--data-dir", str(data)], capture_output=True, text=True, env=_env())
    assert shown.returncode == 0 and shown.stdout.count("digits-cnn") == 14


def test_interrupted_demo_stops_what_it_started(tmp_path):
    data = tmp_path / "fb"
    # build and convert first so the next run reaches the benchmark fast
    assert _demo(data, "--variants", "tflite-fp32").returncode == 0
    proc = subprocess.Popen(
        # a long job on any machine: 120 s and 10^7 inferences (the most a record holds; 200,000 took 1.1 s here)
        FLEETBENCH + ["demo", "--data-dir", str(data), "--min-duration", "120", "--min-iterations", "10000000",
                      "--variants", "tflite-fp32"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
    )  # fmt: skip
    seen = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        seen.append(line)
        if "benchmarking" in line or time.monotonic() > deadline:
            break
    assert any("benchmarking" in line for line in seen), "".join(seen)
    time.sleep(2)  # let the job reach the agent
    agent_id = _agent_id("".join(seen))
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    deadline = time.monotonic() + 10
    while (_leftovers(agent_id) or _leftovers(str(data))) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _leftovers(agent_id) == [] and _leftovers(str(data)) == []
    assert len(_rows(data)) == 1  # the interrupted job stored nothing


def test_bad_settings_are_refused_before_anything_starts(tmp_path):
    r = subprocess.run(
        FLEETBENCH + ["demo", "--data-dir", str(tmp_path), "--min-iterations", "0"],
        capture_output=True, text=True, env=_env(),
    )  # fmt: skip
    assert r.returncode == 2 and "min_iterations must be >= 1" in r.stderr

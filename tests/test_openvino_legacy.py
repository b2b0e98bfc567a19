"""OpenVINO's 2022.3 API (``openvino.runtime``), the one NCS2 hosts run, for real.

NCS2 sticks need the MYRIAD plugin, whose last line is OpenVINO 2022.3 LTS (Python <= 3.10, ``Core`` in
``openvino.runtime`` and no API at the top level). It has no wheel for the Python these tests run on, so they
run the agent in ``.venv-openvino-legacy`` (made by ``make test``): OpenVINO 2023.3 LTS, the LTS line nearest 2022.3 that
still ships ``openvino.runtime`` (beside numpy < 1.25, as on 2022.3), with ``FLEETBENCH_OPENVINO_API=runtime``,
which makes the backend take every OpenVINO name it uses (Core, AsyncInferQueue, get_version) from that module
and probe configured device strings with an IR model, as it does on 2022.3. The children also lose the top-level
API at start-up (AS_ON_2022_3), so a use of it that slipped in fails here as it would on 2022.3.

What they prove: through the old API, the probe offers openvino:CPU (and HETERO/AUTO strings); a benchmark job
on an IR the current OpenVINO saved (as the controller does) runs its latency and throughput phases and gives
the current OpenVINO's accuracy and fidelity; a PERF_COUNT profile reads per-op times, also under HETERO. The
2022.3 forms 2023.3 never produces (rt_info values as plain ``str``, precisions named ``FP32``/``I8``, no pip
metadata on archive installs) are checked with fakes. What stays untested: MYRIAD itself (no stick here) and
OpenVINO 2022.3's own binaries; tests/test_py310.py checks the agent's code against Python 3.10.
"""

import dataclasses
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from agent.backends import Unavailable
from agent.runner import run_job
from controller.artifacts import ArtifactStore
from protocol import BenchmarkSettings, JobSpec
from protocol.packing import pack_files
from tests.helpers import venv_python

ROOT = Path(__file__).resolve().parent.parent
FAST = BenchmarkSettings(threads=1, warmup_iterations=2, min_iterations=700, min_duration_s=0.0, timeout_s=180)
PROFILED = BenchmarkSettings(threads=1, warmup_iterations=2, min_iterations=100, min_duration_s=0.0, timeout_s=180,
                             profile=True, profile_runs=20)  # fmt: skip


@pytest.fixture(scope="module")
def legacy_python():
    return venv_python(".venv-openvino-legacy")


#: Run at the start of each child (a sitecustomize): OpenVINO 2022.3's top-level package holds submodules only,
#: so any use of the top-level API (``openvino.Core``, ``from openvino import ...``) fails in them, as it would there.
AS_ON_2022_3 = """import openvino
KEEP = ("runtime", "frontend", "helpers", "preprocess", "utils")
for name in [n for n in vars(openvino) if not n.startswith("_") and n not in KEEP] + ["__version__"]:
    vars(openvino).pop(name, None)
"""


@pytest.fixture
def device_env(monkeypatch, tmp_path):
    """What the agent's children see on an NCS2 host: the repo's code, nothing else of this venv, the old API
    (forced by FLEETBENCH_OPENVINO_API, and the only one there: AS_ON_2022_3)."""
    (tmp_path / "sitecustomize.py").write_text(AS_ON_2022_3)
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{tmp_path}")
    monkeypatch.setenv("FLEETBENCH_OPENVINO_API", "runtime")


@pytest.fixture(scope="module")
def ir(tmp_path_factory, tiny_model):
    """The tiny model as an fp32 IR, saved by the current OpenVINO (as `fleetbench convert` does), its data set
    and Keras's outputs as the reference."""
    import openvino as ov

    root = tmp_path_factory.mktemp("legacy-ir")
    model = ov.convert_model(str(tiny_model["path"]))
    model.reshape([1, 6, 6, 2])
    ov.save_model(model, str(root / "model.xml"), compress_to_fp16=False)
    store = ArtifactStore(root / "artifacts")
    files = {"model.xml": root / "model.xml", "model.bin": root / "model.bin"}
    artifact = store.put_bytes(pack_files(files), "tiny.tar")
    np.savez(root / "data.npz", x=tiny_model["x"], y=tiny_model["y"])
    np.savez(root / "reference.npz", outputs=tiny_model["expected"])
    return {"artifact": artifact, "dataset": store.put_file(root / "data.npz"),
            "reference": store.put_file(root / "reference.npz")}  # fmt: skip


@pytest.fixture(scope="module")
def conv_ir(tmp_path_factory):
    """An fp32 IR whose convolutions take a measurable time (the CPU plugin reports an op below 1 µs on average
    as NOT_RUN), built and saved with the current OpenVINO."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(3)
    x = h = ops.parameter([1, 3, 96, 96], np.float32, name="x")
    for channels in (3, 32):
        w = ops.constant((rng.standard_normal((32, channels, 3, 3)) * 0.1).astype(np.float32))
        h = ops.relu(ops.convolution(h, w, [1, 1], [1, 1], [1, 1], [1, 1]))
    h = ops.reduce_mean(h, ops.constant(np.array([2, 3], np.int64)), False)
    h = ops.softmax(ops.matmul(h, ops.constant(rng.standard_normal((32, 10)).astype(np.float32)), False, False), 1)
    root = tmp_path_factory.mktemp("legacy-conv-ir")
    ov.save_model(ov.Model([h], [x], "conv"), str(root / "model.xml"), compress_to_fp16=False)
    store = ArtifactStore(root / "artifacts")
    return {"artifact": store.put_bytes(pack_files({"model.xml": root / "model.xml", "model.bin": root / "model.bin"}),
                                        "conv.tar"), "dataset": None, "reference": None}  # fmt: skip


def _spec(ir, job_id, capability="openvino:CPU", settings=FAST):
    return JobSpec(job_id=job_id, model_id="tiny", model_name="tiny", variant="openvino-fp32", capability=capability,
                   artifact=ir["artifact"], dataset=ir["dataset"], reference=ir["reference"],
                   settings=settings)  # fmt: skip


def test_probe_offers_cpu_through_openvino_runtime(legacy_python, device_env, monkeypatch):
    monkeypatch.setenv("FLEETBENCH_OPENVINO_DEVICES", "HETERO:CPU;AUTO:CPU")  # compiled with the IR probe model
    r = subprocess.run([legacy_python, "-m", "agent", "--probe"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "capability openvino:CPU: openvino 2023.3." in r.stdout, r.stdout
    assert "capability openvino:HETERO:CPU: openvino 2023.3." in r.stdout
    assert "capability openvino:AUTO:CPU: openvino 2023.3." in r.stdout
    assert "openvino unavailable" not in r.stdout
    which = ("import openvino, openvino.runtime as ov; from agent.backends import openvino as b; "
             "print(b.api().__name__, b._core_class() is ov.Core, hasattr(openvino, 'Core'))")  # fmt: skip
    forced = subprocess.run([legacy_python, "-c", which], capture_output=True, text=True, timeout=60)
    assert forced.stdout.split() == ["openvino.runtime", "True", "False"], forced.stdout + forced.stderr
    env = {**{k: v for k, v in os.environ.items() if k != "FLEETBENCH_OPENVINO_API"}, "PYTHONPATH": str(ROOT)}
    default = subprocess.run([legacy_python, "-c", which], capture_output=True, text=True, timeout=60, env=env)
    assert default.stdout.split()[::2] == ["openvino", "True"], default.stdout + default.stderr  # 2023.3's own


def test_a_benchmark_through_openvino_runtime_matches_the_current_openvino(legacy_python, device_env, monkeypatch, ir):
    """Latency, throughput (AsyncInferQueue from openvino.runtime), accuracy, fidelity and the precision read back."""
    settings = dataclasses.replace(FAST, throughput_requests=2, throughput_duration_s=0.3)
    legacy = run_job(_spec(ir, "legacy", settings=settings).to_dict(), "ncs2-host",
                     child_argv=[legacy_python, "-m", "agent.child"])  # fmt: skip
    monkeypatch.delenv("FLEETBENCH_OPENVINO_API")  # this venv's OpenVINO has only the top-level API
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    current = run_job(_spec(ir, "current").to_dict(), "a", child_argv=[sys.executable, "-m", "agent.child"])
    assert legacy.ok, legacy.error
    assert current.ok, current.error
    r, c = legacy.record, current.record
    assert (r.runtime, r.capability, r.device) == ("openvino", "openvino:CPU", "CPU")
    assert r.runtime_version.startswith("2023.3") and not c.runtime_version.startswith("2023.3")
    assert len(r.samples_ns) >= FAST.min_iterations and r.validity.valid, r.validity.reasons
    assert r.throughput.mode == "openvino-async-queue" and r.throughput.completed > 0 and r.throughput.ips > 0
    assert r.accuracy_top1 == c.accuracy_top1 == 1.0  # labels are the Keras model's own argmax
    assert r.fidelity.top1_agreement == c.fidelity.top1_agreement == 1.0
    assert r.fidelity.max_abs_error < 1e-4 and abs(r.fidelity.max_abs_error - c.fidelity.max_abs_error) < 1e-5
    assert r.precision == c.precision == "f32" and r.precision_ops  # an fp32 variant computes in f32 on both


@pytest.mark.parametrize("capability", ["openvino:CPU", "openvino:HETERO:CPU"])
def test_a_profile_through_openvino_runtime(legacy_python, device_env, monkeypatch, conv_ir, capability):
    """PERF_COUNT's profiling_info and the runtime model's rt_info; HETERO adds query_model's placement."""
    monkeypatch.setenv("FLEETBENCH_OPENVINO_DEVICES", "HETERO:CPU")
    outcome = run_job(_spec(conv_ir, f"profile-{capability}", capability, PROFILED).to_dict(), "ncs2-host",
                      child_argv=[legacy_python, "-m", "agent.child"])  # fmt: skip
    assert outcome.ok, outcome.error
    p = outcome.record.profile
    assert p is not None and p.error == "", p and p.error
    assert p.source == "openvino PERF_COUNT (profiling_info)" and p.runs >= 1
    assert p.nodes > 0 and p.node_time_ms > 0 and p.latency_ms > 0
    assert [t.op_type for t in p.op_types][0] == "Convolution" and p.op_types[0].count == 2
    assert all(n.exec_type and n.time_ms >= 0 for n in p.top_nodes)
    if capability == "openvino:CPU":  # an fp32 variant's hint is set for plain CPU only (HETERO:CPU may run bf16)
        assert {s.precision for s in p.precisions} == {"f32"}
    assert (p.placement.target, p.placement.fallback_ops, p.placement.partitions) == ("CPU", 0, 1)


# ---------------------------------------------------------------- 2022.3's own forms, from fakes


class _Op:
    def __init__(self, layer_type, precision):
        self.info = {"layerType": layer_type, "runtimePrecision": precision}  # 2022.3: plain str, no OVAny

    def get_rt_info(self):
        return self.info


def test_runtime_precision_reads_2022_3s_plain_strings_and_upper_case_names():
    from agent.backends.openvino import runtime_precision

    ops = [_Op("Input", "FP32"), _Op("Convolution", "I8"), _Op("Convolution", "U8"), _Op("FullyConnected", "I8"),
           _Op("Softmax", "FP32"), _Op("Output", "FP32"), _Op("Eltwise", "UNSPECIFIED")]  # fmt: skip
    compiled = types.SimpleNamespace(get_runtime_model=lambda: types.SimpleNamespace(get_ordered_ops=lambda: ops))
    assert runtime_precision(compiled) == ("i8+f32+u8", {"i8": 2, "u8": 1, "f32": 1})


def test_an_archive_install_without_pip_metadata_takes_the_version_from_openvino(monkeypatch):
    """Intel's 2022.3 archive (setupvars.sh), common on NCS2 hosts, has no distribution metadata."""
    from agent.backends import openvino as backend

    monkeypatch.delenv("FLEETBENCH_OPENVINO_API", raising=False)
    runtime = types.ModuleType("openvino.runtime")
    runtime.Core, runtime.get_version = object, lambda: "2022.3.2-9279-e2c7e4d7b4d-releases/2022/3"
    monkeypatch.setitem(sys.modules, "openvino", types.ModuleType("openvino"))
    monkeypatch.setitem(sys.modules, "openvino.runtime", runtime)
    monkeypatch.setattr(backend, "dist_version", lambda *dists: "unknown")
    assert backend._version() == "2022.3.2"


def test_the_api_variable_takes_only_runtime(monkeypatch):
    from agent.backends.openvino import api

    monkeypatch.setenv("FLEETBENCH_OPENVINO_API", "2022")
    with pytest.raises(Unavailable, match="set it to 'runtime'"):
        api()
    monkeypatch.setenv("FLEETBENCH_OPENVINO_API", "runtime")
    monkeypatch.setitem(sys.modules, "openvino.runtime", None)  # OpenVINO 2026 and newer
    with pytest.raises(Unavailable, match="openvino.runtime is not importable"):
        api()

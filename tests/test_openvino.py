"""The OpenVINO backend: API versions, device discovery, every capability end to end."""

import sys
import types

import numpy as np
import pytest

from agent.backends import Unavailable, probe_all
from agent.backends.openvino import Backend, _core_class
from agent.runner import run_job
from controller.artifacts import ArtifactStore
from protocol import BenchmarkSettings, JobSpec
from protocol.packing import pack_files


class FakeCore:
    """Stands in for a Core whose devices cannot exist on this machine (an NCS2 stick)."""

    available_devices = ["CPU", "MYRIAD"]

    def get_property(self, device, name):
        assert name == "FULL_DEVICE_NAME"
        return {"CPU": "Some CPU", "MYRIAD": "Intel Movidius Myriad X VPU"}[device]


def _module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    return m


@pytest.mark.parametrize(
    "modules,expected",
    [
        # OpenVINO 2023.1 and newer: Core at the top level
        ({"openvino": _module("openvino", Core="top-level Core")}, "top-level Core"),
        # 2022.3 LTS (MYRIAD's last line): the top-level package has no Core; openvino.runtime has
        ({"openvino": _module("openvino"), "openvino.runtime": _module("openvino.runtime", Core="runtime Core")},
         "runtime Core"),
        # only the 2022.3 runtime module importable
        ({"openvino": None, "openvino.runtime": _module("openvino.runtime", Core="runtime Core")}, "runtime Core"),
    ],
)
def test_openvino_api_versions(monkeypatch, modules, expected):
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    assert _core_class() == expected


def test_no_openvino_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setitem(sys.modules, "openvino.runtime", None)
    with pytest.raises(Unavailable, match="openvino==2022.3.2"):
        _core_class()


def test_myriad_is_offered_when_the_runtime_reports_it(monkeypatch):
    monkeypatch.delenv("FLEETBENCH_OPENVINO_DEVICES", raising=False)
    backend = Backend()
    backend._core = FakeCore()
    caps = {c.name: c for c in backend.probe()}
    assert set(caps) == {"openvino:CPU", "openvino:MYRIAD"}
    assert caps["openvino:MYRIAD"].device_name == "Intel Movidius Myriad X VPU"


def test_configured_device_strings_are_probed_for_real(monkeypatch):
    monkeypatch.setenv("FLEETBENCH_OPENVINO_DEVICES", "HETERO:CPU;AUTO:CPU;HETERO:FPGA,CPU")
    caps, missing = probe_all()
    names = {c.name for c in caps}
    assert {"openvino:CPU", "openvino:HETERO:CPU", "openvino:AUTO:CPU"} <= names
    assert "openvino:HETERO:FPGA,CPU" not in names
    assert 'Device with "FPGA" name is not registered' in missing["openvino:HETERO:FPGA,CPU"]


@pytest.fixture(scope="module")
def ir_job(tmp_path_factory, tiny_model):
    import openvino as ov

    root = tmp_path_factory.mktemp("ir")
    model = ov.convert_model(str(tiny_model["path"]))
    model.reshape([1, 6, 6, 2])  # as fleetbench convert does: static shapes only
    ov.save_model(model, str(root / "model.xml"))
    ov.save_model(ov.convert_model(str(tiny_model["path"])), str(root / "dynamic.xml"))
    store = ArtifactStore(root / "artifacts")
    ir = store.put_bytes(pack_files({"model.xml": root / "model.xml", "model.bin": root / "model.bin"}), "tiny.tar")
    buf = root / "data.npz"
    np.savez(buf, x=tiny_model["x"], y=tiny_model["y"])
    data = store.put_file(buf)
    return store, ir, data


@pytest.mark.parametrize("capability", ["openvino:CPU", "openvino:AUTO:CPU", "openvino:HETERO:CPU"])
def test_each_openvino_capability_end_to_end(ir_job, capability):
    _, ir, data = ir_job
    spec = JobSpec(job_id=f"ov-{capability}", model_id="tiny", model_name="tiny", variant="openvino-fp32",
                   capability=capability, artifact=ir, dataset=data,
                   settings=BenchmarkSettings(min_iterations=200, min_duration_s=0.0))  # fmt: skip
    outcome = run_job(spec.to_dict(), "a")
    assert outcome.ok, outcome.error
    r = outcome.record
    assert r.runtime == "openvino" and r.device == capability.split(":", 1)[1]
    assert r.timer == "openvino request.latency" and min(r.samples_ns) > 0
    assert r.accuracy_top1 == 1.0 and r.stats.count >= 200  # labels are Keras's own predictions


def test_corrupt_ir_is_a_clear_error(ir_job):
    store, _, data = ir_job
    bad = store.put_bytes(pack_files({"model.xml": b"<net>not really</net>", "model.bin": b"\x00"}), "bad.tar")
    spec = JobSpec(job_id="ov-bad", model_id="tiny", model_name="tiny", variant="openvino-fp32",
                   capability="openvino:CPU", artifact=bad)  # fmt: skip
    outcome = run_job(spec.to_dict(), "a")
    assert not outcome.ok and outcome.error_kind == "load-failed" and "bad.tar" in outcome.error


def test_dynamic_ir_is_refused_with_advice(ir_job, tmp_path):
    store, ir, _ = ir_job
    root = store.root.parent
    dyn = store.put_bytes(pack_files({"model.xml": root / "dynamic.xml", "model.bin": root / "dynamic.bin"}), "dyn.tar")
    spec = JobSpec(job_id="ov-dyn", model_id="tiny", model_name="tiny", variant="openvino-fp32",
                   capability="openvino:CPU", artifact=dyn)  # fmt: skip
    outcome = run_job(spec.to_dict(), "a")
    assert not outcome.ok and outcome.error_kind == "load-failed"
    assert "is dynamic" in outcome.error and "--input-shape" in outcome.error


def test_openvino_throughput_with_an_async_queue(ir_job):
    _, ir, data = ir_job
    spec = JobSpec(job_id="ov-tput", model_id="tiny", model_name="tiny", variant="openvino-fp32",
                   capability="openvino:CPU", artifact=ir, dataset=data,
                   settings=BenchmarkSettings(min_iterations=100, min_duration_s=0.0, throughput_requests=4,
                                              throughput_duration_s=0.5))  # fmt: skip
    outcome = run_job(spec.to_dict(), "a")
    assert outcome.ok, outcome.error
    t = outcome.record.throughput
    assert t.mode == "openvino-async-queue" and t.requests == 4 and t.completed > 100 and t.ips > 0


def test_an_fp32_model_runs_in_f32_and_a_compressed_one_keeps_the_default(ir_job, tiny_model, tmp_path):
    """OpenVINO's CPU plugin runs models in bf16 by default on CPUs with AVX-512 BF16 or AMX: an fp32
    variant must still compute in f32, or its latency and fidelity are bf16's."""
    import openvino as ov

    from agent.backends.openvino import Backend, is_plain_f32

    store, _, _ = ir_job
    f32 = ov.convert_model(str(tiny_model["path"]))
    f32.reshape([1, 6, 6, 2])
    ov.save_model(f32, str(tmp_path / "model.xml"), compress_to_fp16=False)  # as `fleetbench convert` saves fp32
    ov.save_model(f32, str(tmp_path / "fp16.xml"), compress_to_fp16=True)
    assert is_plain_f32(ov.Core().read_model(str(tmp_path / "model.xml")))
    assert not is_plain_f32(ov.Core().read_model(str(tmp_path / "fp16.xml")))
    ir = store.put_bytes(pack_files({"model.xml": tmp_path / "model.xml", "model.bin": tmp_path / "model.bin"}), "f32.tar")
    backend = Backend()
    backend.load(str(store.path_for(ir.sha256)), "CPU", BenchmarkSettings())
    assert backend._compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert backend._extra == {"INFERENCE_PRECISION_HINT": "f32"}  # the throughput phase compiles with it too
    del backend
    backend = Backend()
    fp16 = store.put_bytes(pack_files({"model.xml": tmp_path / "fp16.xml", "model.bin": tmp_path / "fp16.bin"}), "fp16.tar")
    backend.load(str(store.path_for(fp16.sha256)), "CPU", BenchmarkSettings())
    assert backend._extra == {}  # a compressed model keeps the plugin's default
    del backend

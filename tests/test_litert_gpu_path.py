"""The litert:gpu code path: the CompiledModel session (run here on the CPU
accelerator, the same API the GPU uses) and the GPU probe's clear refusal on a
machine without a GPU. The GPU itself is exercised by bench/gpu_device.sh on a
machine that has one; see docs/benchmarks.md."""

import numpy as np
import pytest

from agent.backends import probe_all
from agent.backends.litert import PROBE_MODEL, CompiledModelSession, probe_gpu, summarize_litert_error
from agent.errors import JobError


def test_compiled_model_session_matches_the_interpreter(tiny_model):
    from ai_edge_litert.interpreter import Interpreter

    session = CompiledModelSession(tiny_model["path"], "cpu", threads=1)
    (spec,) = session.input_specs()
    assert spec.shape == (1, 6, 6, 2) and spec.dtype == "float32"
    interp = Interpreter(str(tiny_model["path"]))
    interp.allocate_tensors()
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    for i in range(4):
        x = tiny_model["x"][i : i + 1]
        session.prepare([x])
        session.run()
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        np.testing.assert_allclose(session.outputs()[0], interp.get_tensor(out["index"]), rtol=1e-5, atol=1e-6)


def test_bundled_probe_model_runs(tmp_path):
    session = CompiledModelSession(PROBE_MODEL.read_bytes(), "cpu")
    session.prepare([np.ones(session.input_specs()[0].shape, np.float32)])
    session.run()
    out = session.outputs()[0]
    assert out.shape == (1, 4) and abs(float(out.sum()) - 1.0) < 1e-5  # a softmax


def test_corrupt_model_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
    with pytest.raises(JobError) as err:
        CompiledModelSession(bad, "cpu")
    assert err.value.kind == "load-failed" and "bad.tflite" in err.value.message


def test_without_a_gpu_the_capability_is_refused_with_a_reason():
    ok, reason = probe_gpu()
    if ok:
        pytest.skip(f"this machine has a GPU LiteRT can use ({reason})")
    caps, missing = probe_all()
    assert "litert:gpu" not in {c.name for c in caps}
    assert "litert:gpu" in missing and missing["litert:gpu"] == reason
    assert "GPU" in reason and len(reason.splitlines()) == 1


@pytest.mark.parametrize(
    "log,expected",
    [
        ("INFO: x\nERROR: [delegate_webgpu.cc:359] Failed to initialize WebGPU environment: INTERNAL: No adapters found",
         "no GPU adapter"),
        ("Warning: Couldn't load Vulkan: libvulkan.so.1: cannot open shared object file", "install libvulkan1"),
        ("INFO: a\nERROR: [foo.cc:1] something specific broke\nINFO: b", "something specific broke"),
    ],
)
def test_litert_logs_become_one_actionable_line(log, expected):
    assert expected in summarize_litert_error(log)

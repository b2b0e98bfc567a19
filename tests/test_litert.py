"""Real Keras -> TFLite conversion and real LiteRT inference."""

import importlib.metadata

import numpy as np
import pytest

from agent.backends import create, probe_all
from agent.errors import JobError
from protocol import BenchmarkSettings


def test_probe_finds_litert_cpu():
    caps, missing = probe_all()
    cap = next(c for c in caps if c.name == "litert:cpu")
    assert cap.runtime_version == importlib.metadata.version("ai-edge-litert")
    assert cap.device_name and cap.device == "cpu"
    assert "litert" not in missing


def test_converted_model_matches_keras_outputs(tiny_model):
    backend = create("litert")
    backend.load(str(tiny_model["path"]), "cpu", BenchmarkSettings(threads=1))
    (spec,) = backend.input_specs()
    assert spec.shape == (1, 6, 6, 2) and spec.dtype == "float32"
    x = tiny_model["x"]
    got = []
    for i in range(len(x)):
        backend.prepare([x[i : i + 1]])
        backend.run()
        got.append(backend.outputs()[0][0].copy())
    np.testing.assert_allclose(np.array(got), tiny_model["expected"], rtol=1e-4, atol=1e-5)


def test_prepared_inputs_are_reused_across_runs(tiny_model):
    backend = create("litert")
    backend.load(str(tiny_model["path"]), "cpu", BenchmarkSettings(threads=1))
    backend.prepare([tiny_model["x"][:1]])
    backend.run()
    first = backend.outputs()[0].copy()
    backend.run()  # no prepare in between: same inputs, same outputs
    np.testing.assert_array_equal(backend.outputs()[0], first)


def test_corrupt_model_file_gives_a_clear_error(tmp_path):
    bad = tmp_path / "garbage.tflite"
    bad.write_bytes(b"this is not a flatbuffer" * 10)
    with pytest.raises(JobError) as err:
        create("litert").load(str(bad), "cpu", BenchmarkSettings())
    assert err.value.kind == "load-failed"
    assert str(bad) in err.value.message and "fleetbench convert" in err.value.message


def test_unknown_device_is_refused(tiny_model):
    with pytest.raises(JobError) as err:
        create("litert").load(str(tiny_model["path"]), "npu", BenchmarkSettings())
    assert err.value.kind == "unsupported-device" and "litert:cpu" in err.value.message


def test_unknown_runtime_is_unavailable():
    from agent.backends import Unavailable

    with pytest.raises(Unavailable, match="unknown runtime 'tensorrt'"):
        create("tensorrt")

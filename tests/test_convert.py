"""Real conversions: every input type into every variant that makes sense for it.

Converted variants are checked by running them with the agent's own backends
against the fp32 reference outputs the controller computed.
"""

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from agent.backends import create
from controller.artifacts import ArtifactStore
from controller.convert import service
from controller.convert.runner import Limits, run_conversion
from controller.datasets import Preprocessing
from controller.store import Store
from protocol import BenchmarkSettings

pytestmark = pytest.mark.slow

ALL = list(service.STANDARD)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    from sklearn.datasets import load_digits

    from controller.demo_model import import_tf

    root = tmp_path_factory.mktemp("convert")
    store = Store(f"sqlite:///{root / 'fb.db'}")
    store.migrate()
    arts = ArtifactStore(root / "artifacts")
    d = load_digits()
    x = d.images[:160, ..., None].astype(np.float32)
    y = d.target[:160]
    np.savez(root / "digits.npz", x=x, y=y)
    np.savez(root / "digits_nchw.npz", x=x, y=y)

    tf = import_tf()
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((8, 8, 1)),
            tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x / 16, y, epochs=8, verbose=0)
    model.save(root / "cnn.keras")
    model.save(root / "cnn.h5")
    yield SimpleNamespace(root=root, store=store, arts=arts, npz=root / "digits.npz", tf=tf)
    store.close()


def _plan(ws, source, variants, **kw):
    kw.setdefault("preprocessing", Preprocessing(scale=1 / 16))
    kw.setdefault("n_calibration", 40)
    if "dataset_path" not in kw:
        kw["dataset_path"] = ws.npz
    return service.plan(source, variants, ws.store, ws.arts, **kw)


def _convert(ws, source, variants, limits=Limits(), **kw):
    p = _plan(ws, source, variants, **kw)
    report = service.execute(p, ws.store, lambda job, ev: run_conversion(job, ws.arts, ev, limits))
    return p, report


def _val(ws, p):
    with np.load(ws.arts.path_for(p.dataset.validation.sha256)) as d:
        return d["x"], d["y"]


def _ref(ws, outcome):
    with np.load(ws.arts.path_for(outcome.reference.sha256)) as d:
        return d["out_0"]


def _run_variant(ws, outcome, x):
    """Outputs of a converted variant, run by the agent's backend for its family."""
    backend = create("litert" if outcome.variant.startswith("tflite") else "openvino")
    device = "cpu" if outcome.variant.startswith("tflite") else "CPU"
    backend.load(str(ws.arts.path_for(outcome.artifact.sha256)), device, BenchmarkSettings(threads=1))
    outs = []
    for i in range(len(x)):
        backend.prepare([x[i : i + 1]])
        backend.run()
        outs.append(np.array(backend.outputs()[0]).reshape(-1))
    return np.stack(outs)


def test_keras_into_all_seven_variants(ws):
    p, report = _convert(ws, ws.root / "cnn.keras", ALL)
    assert [o.status for o in report.outcomes] == ["converted"] * 7, [o.error for o in report.outcomes]
    assert report.input_shape == (1, 8, 8, 1)
    x, y = _val(ws, p)
    sizes = {o.variant: o.size_bytes for o in report.outcomes}
    assert sizes["tflite-int8"] < 0.5 * sizes["tflite-fp32"] and sizes["tflite-fp16"] < 0.7 * sizes["tflite-fp32"]
    assert sizes["openvino-int8"] < sizes["openvino-fp16"] < sizes["openvino-fp32"]
    ref = _ref(ws, report.outcome("tflite-fp32"))
    assert ref.shape == (len(x), 10)
    for o in report.outcomes:
        out = _run_variant(ws, o, x)
        agreement = float((out.argmax(1) == ref.argmax(1)).mean())
        if o.variant.endswith("fp32"):
            np.testing.assert_allclose(out, ref, atol=1e-4)
        assert agreement >= 0.9, (o.variant, agreement)
    rows = {r.variant: r for r in ws.store.variants(p.model_id)}
    assert set(rows) == set(ALL)
    r = rows["tflite-int8"]
    assert r.recipe["params"]["supported_ops"] == ["TFLITE_BUILTINS_INT8"] and r.input_dtype == "float32"
    assert r.tool_versions["tensorflow"] and rows["openvino-int8"].tool_versions["nncf"]
    assert r.conversion_s > 0 and r.dataset_id == p.dataset.dataset_id


def test_int8_variant_has_int8_io(ws):
    p, report = _convert(ws, ws.root / "cnn.keras", ["tflite-int8"])
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(str(ws.arts.path_for(report.outcome("tflite-int8").artifact.sha256)))
    assert interp.get_input_details()[0]["dtype"] == np.int8 and interp.get_output_details()[0]["dtype"] == np.int8


def test_second_convert_does_no_work(ws):
    _convert(ws, ws.root / "cnn.keras", ALL)  # make sure everything is there

    def must_not_run(job, on_event):
        raise AssertionError(f"converted again: {job['variants']}")

    p = _plan(ws, ws.root / "cnn.keras", ALL)
    assert {v.status for v in p.variants} == {"cached"}
    report = service.execute(p, ws.store, must_not_run)
    assert {o.status for o in report.outcomes} == {"cached"}


def test_deleted_artifact_is_converted_again(ws):
    _, first = _convert(ws, ws.root / "cnn.keras", ["openvino-fp16"])
    ws.arts.path_for(first.outcome("openvino-fp16").artifact.sha256).unlink()
    p = _plan(ws, ws.root / "cnn.keras", ["openvino-fp16"])
    assert p.variants[0].status == "todo"


OPENVINO = ["openvino-fp32", "openvino-fp16", "openvino-int8"]


def test_h5_source_into_all_seven(ws):
    _, report = _convert(ws, ws.root / "cnn.h5", ALL)
    assert [o.status for o in report.outcomes] == ["converted"] * 7, [o.error for o in report.outcomes]


def test_savedmodel_source_into_all_seven(ws):
    import contextlib
    import io

    model = ws.tf.keras.models.load_model(ws.root / "cnn.keras")
    with contextlib.redirect_stdout(io.StringIO()):
        model.export(str(ws.root / "cnn_savedmodel"))
    p, report = _convert(ws, ws.root / "cnn_savedmodel", ALL)
    assert p.source.kind == "savedmodel"
    assert [o.status for o in report.outcomes] == ["converted"] * 7, [o.error for o in report.outcomes]


def test_savedmodel_with_an_op_tflite_lacks(ws):
    tf = ws.tf

    class AtanNet(tf.Module):
        def __init__(self):
            self.w = tf.Variable(tf.random.stateless_normal([64, 10], seed=[1, 2]))

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32)])
        def __call__(self, x):
            return tf.math.atan(tf.matmul(tf.reshape(x, [-1, 64]), self.w))

    net = AtanNet()
    path = ws.root / "atan_savedmodel"
    tf.saved_model.save(net, str(path), signatures=net.__call__)
    _, report = _convert(ws, path, ["tflite-fp32", "tflite-int8", "openvino-fp32"])
    fp32, int8, ov = (report.outcome(v) for v in ("tflite-fp32", "tflite-int8", "openvino-fp32"))
    assert fp32.status == "failed" and "op Atan cannot be converted to TFLite builtins" in fp32.error
    assert int8.status == "failed" and "op Atan" in int8.error and "TFLITE_BUILTINS_INT8" in int8.error
    assert ov.status == "converted"


def test_tflite_source(ws, tiny_model):
    data = ws.root / "tiny_data.npz"
    np.savez(data, x=tiny_model["x"], y=tiny_model["y"])
    p, report = _convert(ws, tiny_model["path"], ["tflite-fp32", "tflite-int8", "tflite-dynamic-int8", *OPENVINO],
                         dataset_path=data, preprocessing=Preprocessing(), n_calibration=4)  # fmt: skip
    assert p.source_variant == "tflite-fp32"
    fp32 = report.outcome("tflite-fp32")
    assert fp32.status == "converted" and fp32.from_source
    assert fp32.artifact.sha256 == p.model_id  # passed through unchanged
    # int8 from the TFLite file itself, through ai-edge-quantizer: int8 weights, a smaller file
    from controller.convert.tflite_tools import inspect

    for v in ("tflite-int8", "tflite-dynamic-int8"):
        o = report.outcome(v)
        assert o.status == "converted" and not o.from_source, o.error
        assert inspect(ws.arts.path_for(o.artifact.sha256).read_bytes()).variant == v
        assert o.size_bytes < fp32.size_bytes
    for v in OPENVINO:
        assert report.outcome(v).status == "converted", report.outcome(v).error
    # converting again, now without the data set, converts nothing that needs none
    p2 = _plan(ws, tiny_model["path"], ["tflite-fp32", "tflite-dynamic-int8", "openvino-fp32", "openvino-fp16"],
               dataset_path=None)
    assert {v.variant: v.status for v in p2.variants} == {"tflite-fp32": "cached", "tflite-dynamic-int8": "cached",
                                                          "openvino-fp32": "cached", "openvino-fp16": "cached"}


def test_openvino_ir_source(ws):
    from protocol.packing import unpack

    _, first = _convert(ws, ws.root / "cnn.keras", ["openvino-fp32"])
    ir = unpack(ws.arts.path_for(first.outcome("openvino-fp32").artifact.sha256), ws.root / "ir")
    p, report = _convert(ws, ir / "model.xml", ["tflite-fp32", *OPENVINO])
    assert report.outcome("tflite-fp32").status == "refused"
    assert "no TFLite variant from an OpenVINO IR" in report.outcome("tflite-fp32").error
    for v in OPENVINO:
        assert report.outcome(v).status == "converted", report.outcome(v).error
    # the IR is an fp32 one, and goes to OpenVINO as it is
    assert p.source_variant == "openvino-fp32" and report.outcome("openvino-fp32").from_source
    assert report.outcome("openvino-fp32").artifact.sha256 == p.model_id
    # an int8 IR is openvino-int8 as it is; no float variant comes from it
    int8 = unpack(ws.arts.path_for(report.outcome("openvino-int8").artifact.sha256), ws.root / "ir8")
    p8, report8 = _convert(ws, int8 / "model.xml", OPENVINO)
    assert p8.source_variant == "openvino-int8" and report8.outcome("openvino-int8").from_source
    assert "already openvino-int8" in report8.outcome("openvino-fp32").error


def test_reference_outputs_belong_to_the_data_set(ws, tmp_path):
    """Variants cached on one split of the data get reference outputs on another, computed without converting."""
    p, first = _convert(ws, ws.root / "cnn.keras", ["tflite-fp32", "openvino-fp32"])
    other = _plan(ws, ws.root / "cnn.keras", ["tflite-fp32", "openvino-fp32"], seed=7)
    assert [v.status for v in other.variants] == ["cached", "cached"] and other.needs_reference
    report = service.execute(other, ws.store, lambda job, ev: run_conversion(job, ws.arts, ev, Limits()))
    ref = report.reference
    assert ref is not None and ref != first.reference
    assert all(o.status == "cached" and o.reference == ref for o in report.outcomes)
    assert ws.store.get_reference(p.model_id, other.dataset.dataset_id) == ref.to_dict()
    x, _ = _val(ws, other)
    with np.load(ws.arts.path_for(ref.sha256)) as d:
        assert len(d["out_0"]) == len(x) and list(d["names"]) == ["output_0"]
    again = _plan(ws, ws.root / "cnn.keras", ["tflite-fp32"], seed=7)
    assert not again.needs_reference and again.reference == ref


def test_onnx_source_in_nchw(ws):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.standard_normal((4, 10)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"]),
    ]
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])], [w, fc],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    path = ws.root / "net.onnx"
    onnx.save(model, path)
    pre = Preprocessing(scale=1 / 16, layout="NCHW")
    _, report = _convert(ws, path, ["tflite-fp16", *OPENVINO], preprocessing=pre)
    assert report.outcome("tflite-fp16").status == "refused"
    for v in OPENVINO:
        assert report.outcome(v).status == "converted", report.outcome(v).error
    assert report.input_shape == (1, 1, 8, 8)


def test_malicious_lambda_never_runs(ws, tmp_path):
    tf = ws.tf
    canary = tmp_path / "canary.txt"
    path_str = str(canary)

    inp = tf.keras.Input((8, 8, 1))
    out = tf.keras.layers.Lambda(lambda t: (open(path_str, "w").write("pwned"), t)[1])(inp)
    tf.keras.Model(inp, out).save(tmp_path / "evil.keras")
    canary.unlink(missing_ok=True)  # building the model ran the lambda once, here; loading must not
    _, report = _convert(ws, tmp_path / "evil.keras", ALL)
    assert {o.status for o in report.outcomes} == {"failed"}
    err = report.outcome("tflite-fp32").error
    assert "evil.keras: refused" in err and "Lambda" in err and "safe_mode=True" in err
    assert not canary.exists()


def test_truncated_files_fail_cleanly_and_leave_the_store_intact(ws, tmp_path):
    h5 = tmp_path / "cut.h5"
    h5.write_bytes((ws.root / "cnn.h5").read_bytes()[:3000])
    _, report = _convert(ws, h5, ["tflite-fp32", "openvino-fp32"])
    assert {o.status for o in report.outcomes} == {"failed"}
    assert "cut.h5" in report.outcome("tflite-fp32").error
    tfl = tmp_path / "cut.tflite"
    tfl.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 200)
    models_before = len(ws.store.models())
    with pytest.raises(service.ConvertError, match="cut.tflite: not a readable TFLite flatbuffer .*corrupt or truncated"):
        _plan(ws, tfl, ["tflite-fp32"], dataset_path=None)
    assert len(ws.store.models()) == models_before  # refused before anything was stored
    keras = tmp_path / "cut.keras"
    keras.write_bytes((ws.root / "cnn.keras").read_bytes()[:500])
    with pytest.raises(service.ConvertError, match="cut.keras: a truncated or corrupt .keras archive"):
        _plan(ws, keras, ["tflite-fp32"])
    assert ws.arts.verify() == []


def test_dynamic_shapes_get_the_static_shape_of_the_data(ws, tmp_path):
    tf = ws.tf
    inp = tf.keras.Input((None, None, 1))
    x = tf.keras.layers.Conv2D(4, 3, padding="same")(inp)
    out = tf.keras.layers.GlobalAveragePooling2D()(x)
    tf.keras.Model(inp, out).save(tmp_path / "dyn.keras")
    _, report = _convert(ws, tmp_path / "dyn.keras", ["tflite-fp32", "openvino-fp32"])
    assert [o.status for o in report.outcomes] == ["converted", "converted"]
    assert report.input_shape == (1, 8, 8, 1)
    backend = create("litert")
    backend.load(str(ws.arts.path_for(report.outcome("tflite-fp32").artifact.sha256)), "cpu", BenchmarkSettings())
    assert backend.input_specs()[0].shape == (1, 8, 8, 1)
    # no data set and no --input-shape: a clear error before benchmark time
    _, report = _convert(ws, tmp_path / "dyn.keras", ["tflite-fp32"], dataset_path=None)
    assert "dynamic dimensions (1,?,?,1)" in report.outcomes[0].error and "--input-shape" in report.outcomes[0].error
    # an explicit shape works without data
    _, report = _convert(ws, tmp_path / "dyn.keras", ["openvino-fp32"], dataset_path=None, input_shape=(1, 16, 16, 1))
    assert report.outcomes[0].status == "converted" and report.input_shape == (1, 16, 16, 1)


def test_calibrated_variants_need_data(ws):
    p = _plan(ws, ws.root / "cnn.keras", ["tflite-int8", "openvino-int8"], dataset_path=None)
    assert {v.status for v in p.variants} == {"refused"}
    assert "needs calibration data: pass --data" in p.variants[0].reason


def _fresh(ws, tmp_path):
    """The same inputs with an empty store, so nothing is cached."""
    store = Store(f"sqlite:///{tmp_path / 'fresh.db'}")
    store.migrate()
    return SimpleNamespace(root=ws.root, store=store, arts=ArtifactStore(tmp_path / "arts"), npz=ws.npz, tf=ws.tf)


def test_memory_limit_fails_the_conversion_not_the_caller(ws, tmp_path):
    fresh = _fresh(ws, tmp_path)
    _, report = _convert(fresh, ws.root / "cnn.h5", ["tflite-fp16"], limits=Limits(memory_bytes=256 * 2**20))
    (o,) = report.outcomes
    assert o.status == "failed" and "ran out of memory (address-space limit 0.2 GiB)" in o.error
    assert "--memory-limit-gb" in o.error


def test_step_timeout_kills_the_conversion(ws, tmp_path):
    fresh = _fresh(ws, tmp_path)
    _, report = _convert(fresh, ws.root / "cnn.h5", ["tflite-fp32"], limits=Limits(step_timeout_s=0.5))
    (o,) = report.outcomes
    assert o.status == "failed" and "timed out while loading the source model" in o.error


def _cli(*args, data_dir):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip


def test_cli_convert_through_a_converter_worker(ws, tmp_path):
    data = tmp_path / "fb"
    args = ["convert", str(ws.root / "cnn.keras"), "--variants", "tflite-fp32,openvino-fp16,tflite-int8",
            "--data", str(ws.npz), "--scale", "0.0625"]  # fmt: skip
    first = _cli(*args, data_dir=data)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "3 to convert" in first.stdout and first.stdout.count("│ no ") == 3
    second = _cli(*args, data_dir=data)
    assert second.returncode == 0 and "0 to convert, 3 cached" in second.stdout and second.stdout.count("│ yes ") == 3
    listing = _cli("models", data_dir=data)
    assert "cnn" in listing.stdout and "keras" in listing.stdout
    shown = _cli("variants", "cnn", data_dir=data)
    assert all(v in shown.stdout for v in ("tflite-fp32", "openvino-fp16", "tflite-int8")), shown.stdout
    assert _cli("artifacts", "verify", data_dir=data).returncode == 0


def test_cli_bad_model_is_one_line(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"")
    r = _cli("convert", str(bad), data_dir=tmp_path / "fb")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"error: {bad}: the file is empty (0 bytes)"]

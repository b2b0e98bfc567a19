"""Models that post-training int8 breaks, made honestly, for the accuracy-keeping variants' tests (issue 18).

:func:`hard_to_quantize` trains a small digits classifier whose first Dense layer, ``hard``, gets one
extra weight per unit: 10,000, on an input pixel that is 0 in every digits image (the top-left corner).
The fp32 model computes exactly what it did before (the weight multiplies 0), but per-channel int8 weight
quantization sets each unit's scale from that weight (10,000 / 127 ≈ 79), and every real weight (|w| < 1)
rounds to 0: post-training int8 loses the layer, and the accuracy with it. It is the layer a per-layer
report must rank first, and the one accuracy control and mixed precision must keep in float.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OUTLIER = 10_000.0


def digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits (raw pixels 0..16, NHWC) and their labels, in a seeded order."""
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(seed).permutation(len(d.target))
    return d.images[order, ..., None].astype(np.float32), d.target[order].astype(np.int64)


#: The model trains on the first TRAINED digits of :func:`digits`' order; tests evaluate on the rest.
TRAINED = 1000


def hard_to_quantize(path: Path, epochs: int = 12) -> Path:
    """Write the model as ``path`` (.keras); its inputs are raw pixels scaled by 1/16 (as the demo's)."""
    from controller.demo_model import import_tf

    tf = import_tf()
    keras = tf.keras
    keras.utils.set_random_seed(0)
    x, y = digits()
    x, y = x[:TRAINED] / 16.0, y[:TRAINED]
    assert np.all(x[:, 0, 0, 0] == 0), "the corner pixel must be 0 in every image for the outlier to be harmless"
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="hard"),
            keras.layers.Dense(32, activation="relu", name="mid"),
            keras.layers.Dense(10, activation="softmax", name="head"),
        ],
        name="hard_to_quantize",
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    w, b = model.get_layer("hard").get_weights()
    w[0, :] = OUTLIER  # input 0 is the corner pixel: always 0
    model.get_layer("hard").set_weights([w, b])
    model.save(path)
    return path


_USER_QAT = r'''
import sys, numpy as np
import tensorflow as tf, tf_keras, tensorflow_model_optimization as tfmot
from tests.quant_models import digits, TRAINED
out = sys.argv[1]
tf_keras.utils.set_random_seed(0)
x, y = digits()
x, y = x[:TRAINED] / 16.0, y[:TRAINED]
model = tf_keras.Sequential([
    tf_keras.Input((8, 8, 1)),
    tf_keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
    tf_keras.layers.Flatten(),
    tf_keras.layers.Dense(10, activation="softmax"),
])
model.compile("adam", "sparse_categorical_crossentropy")
model.fit(x, y, epochs=5, verbose=0)
qat = tfmot.quantization.keras.quantize_model(model)
qat.compile("adam", "sparse_categorical_crossentropy")
qat.fit(x, y, epochs=2, verbose=0)
qat.save(out + "/user_qat.h5")
tf.saved_model.save(qat, out + "/user_qat_savedmodel")
'''


def user_qat_models(root: Path) -> tuple[Path, Path]:
    """A tf_keras model a user trained with tfmot's QAT, as a ``.h5`` and as a SavedModel (FakeQuant ops).

    Built in a process of its own: tfmot needs ``TF_USE_LEGACY_KERAS=1``, which is process-wide."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(repo))
    r = subprocess.run([sys.executable, "-c", _USER_QAT, str(root)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return root / "user_qat.h5", root / "user_qat_savedmodel"


def onnx_qdq(path: Path) -> Path:
    """An ONNX QDQ model as quantization tools export it: a conv net on 1×1×8×8 (NCHW) whose weights are int8
    initializers behind DequantizeLinear, and whose activations pass QuantizeLinear/DequantizeLinear pairs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = rng.integers(-127, 128, (8, 1, 3, 3)).astype(np.int8)
    w2 = rng.integers(-127, 128, (10, 8 * 8 * 8)).astype(np.int8)
    inits = [
        numpy_helper.from_array(w1, "w1_q"), numpy_helper.from_array(np.array(0.01, np.float32), "w1_s"),
        numpy_helper.from_array(np.array(0, np.int8), "zp"), numpy_helper.from_array(w2, "w2_q"),
        numpy_helper.from_array(np.array(0.002, np.float32), "w2_s"), numpy_helper.from_array(np.array(0.02, np.float32), "a_s"),
        numpy_helper.from_array(np.zeros(8, np.float32), "b1"), numpy_helper.from_array(np.zeros(10, np.float32), "b2"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "flat"),
    ]  # fmt: skip
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "a_s", "zp"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "a_s", "zp"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w1_q", "w1_s", "zp"], ["w1"]),
        helper.make_node("Conv", ["x_dq", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("QuantizeLinear", ["r1", "a_s", "zp"], ["r1_q"]),
        helper.make_node("DequantizeLinear", ["r1_q", "a_s", "zp"], ["r1_dq"]),
        helper.make_node("Reshape", ["r1_dq", "flat"], ["f"]),
        helper.make_node("DequantizeLinear", ["w2_q", "w2_s", "zp"], ["w2"]),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


_LAMBDA_QAT = r'''
import json, sys
import h5py, tf_keras, tensorflow_model_optimization as tfmot
out, canary, name = sys.argv[1], sys.argv[2], sys.argv[3]
from tf_keras.src.saving.serialization_lib import enable_unsafe_deserialization
enable_unsafe_deserialization()  # quantize_apply clones the model through its config (this script trusts itself)
annotate = tfmot.quantization.keras.quantize_annotate_layer
inp = tf_keras.Input((8, 8, 1))
x = tf_keras.layers.Flatten()(inp)
# the code writes the canary whenever it runs, except while this script builds the model
fn = eval(f"lambda t: (__import__('os').environ.get('FLEETBENCH_BUILDING') or open({canary!r}, 'w').write('ran'), t)[1]")
x = tf_keras.layers.Lambda(fn, name="shady")(x)
x = annotate(tf_keras.layers.Dense(10, activation="softmax"))(x)
model = tfmot.quantization.keras.quantize_apply(tf_keras.Model(inp, x))
model.save(out)
with h5py.File(out, "r+") as f:  # (if asked) no name on the Lambda
    text = f.attrs["model_config"]
    config = json.loads(text.decode() if isinstance(text, bytes) else text)
    def walk(node):
        if isinstance(node, dict):
            if node.get("class_name") == "Lambda" and name == "-":
                node["config"]["name"] = None
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(config)
    f.attrs["model_config"] = json.dumps(config)
'''


def qat_h5_with_lambda(path: Path, canary: Path, name: str | None) -> Path:
    """A tf_keras QAT .h5 (a QuantizeWrapper'd Dense) with a Lambda layer whose code would write ``canary`` if it
    ever ran; ``name`` None removes the Lambda's name from the config."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(repo), FLEETBENCH_BUILDING="1")
    r = subprocess.run([sys.executable, "-c", _LAMBDA_QAT, str(path), str(canary), name or "-"], capture_output=True,
                       text=True, env=env, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    return path

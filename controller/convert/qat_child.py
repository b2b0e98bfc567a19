"""Quantization-aware training, in a process of its own: ``python -m controller.convert.qat_child REQUEST.json``.

tensorflow-model-optimization (tfmot) works on tf_keras (Keras 2) models only, and TensorFlow picks Keras 2
or 3 once per process from ``TF_USE_LEGACY_KERAS``. So the conversion child (Keras 3) starts this process
with ``TF_USE_LEGACY_KERAS=1``; it inherits the child's resource limits (RLIMIT_AS, RLIMIT_FSIZE) and dies
with it. It reports JSON lines on stdout (everything else goes to stderr), like the conversion child:

- ``{"event": "epoch", "epoch": 1, "epochs": 3, "loss": ..., "accuracy": ...}`` after each epoch;
- ``{"event": "refused", "error": "..."}`` when the model cannot be trained so (the layer that blocks it);
- ``{"event": "done", ...}`` with the files it wrote.

Two modes, by the request's ``mode``:

- ``fine-tune``: rebuild a Keras 3 model (its config and weights, written by the conversion child) as
  tf_keras, wrap it with ``quantize_model``, fine-tune it on the training split, and write a full-integer
  TFLite file and a SavedModel whose FakeQuantWithMinMaxVars ops OpenVINO reads;
- ``export``: load a user's tf_keras QAT ``.h5`` (inside ``quantize_scope``) and write it as a SavedModel.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

_KEY = re.compile(r"(?:unexpected|[Uu]nrecognized) keyword argument|Keyword argument not understood")
_UNSUPPORTED = re.compile(r"Layer (\S+?):<class '[\w.]*?\.(\w+)'> is not supported")


class Refused(Exception):
    """The model cannot be quantization-aware trained; the message names what blocks it."""


def _legacy():
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise RuntimeError("qat_child must run with TF_USE_LEGACY_KERAS=1 (tfmot needs tf_keras)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    return tf, tf_keras, tfmot


def _plain(value):
    """A Keras 3 config value as tf_keras reads it: dtype policies become their name."""
    if isinstance(value, dict) and value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
        return value.get("config", {}).get("name", "float32")
    return value


_DROP = ("kernel_initializer", "bias_initializer", "gamma_initializer", "beta_initializer",
         "moving_mean_initializer", "moving_variance_initializer", "depthwise_initializer", "pointwise_initializer",
         "kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint",
         "quantization_config", "optional")  # fmt: skip


def _layer(tf_keras, spec: dict):
    """One tf_keras layer from a Keras 3 layer's serialized form; refuses a layer tf_keras lacks."""
    cls_name, cfg = spec["class_name"], {k: _plain(v) for k, v in spec["config"].items() if k not in _DROP}
    name = cfg.get("name", "?")
    cls = getattr(tf_keras.layers, cls_name, None)
    if cls is None:
        raise Refused(f"layer '{name}' ({cls_name}) has no tf_keras counterpart, so the model cannot be rebuilt for "
                      "tfmot; QAT needs built-in Keras layers")  # fmt: skip
    for _ in range(12):  # drop what Keras 3 added and tf_keras does not know, one key at a time
        try:
            return cls.from_config(cfg)
        except (TypeError, ValueError) as exc:
            text = str(exc)
            m = _KEY.search(text)
            key = next((k for k in re.findall(r"'(\w+)'", text[m.end():]) if k in cfg), None) if m else None
            if not key:
                raise Refused(f"layer '{name}' ({cls_name}) cannot be rebuilt as tf_keras: {_cause(text)}") from None
            cfg.pop(key)
    raise Refused(f"layer '{name}' ({cls_name}) cannot be rebuilt as tf_keras")


def _cause(text: str) -> str:
    """The reason in a Keras deserialization error, without the config it dumps."""
    if "Exception encountered:" in text:
        text = text.split("Exception encountered:", 1)[1]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "unknown error")
    return line[:200]


def _history(arg) -> list:
    """The (layer, node, tensor) each Keras-tensor argument of a Keras 3 inbound node comes from."""
    if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
        return [tuple(arg["config"]["keras_history"])]
    if isinstance(arg, (list, tuple)):
        return [h for a in arg for h in _history(a)]
    return []


# size: a functional graph rebuilt layer by layer from Keras 3's config format
def rebuild(tf_keras, config: dict, class_name: str):
    """A tf_keras model with the same layers, names and wiring as the Keras 3 model whose config this is."""
    if class_name == "Sequential":
        model = tf_keras.Sequential(name=config.get("name"))
        for spec in config["layers"]:
            if spec["class_name"] == "InputLayer":
                c = spec["config"]
                model.add(tf_keras.Input(batch_shape=c.get("batch_shape") or c.get("batch_input_shape"),
                                         name=c.get("name"), dtype=_plain(c.get("dtype", "float32"))))  # fmt: skip
            else:
                model.add(_layer(tf_keras, spec))
        return model
    if class_name not in ("Functional", "Model"):
        raise Refused(f"a {class_name} (a subclassed model) has no config to rebuild; QAT needs a Sequential or "
                      "functional Keras model")  # fmt: skip
    tensors: dict[str, list] = {}
    for spec in config["layers"]:
        name = spec.get("name") or spec["config"]["name"]
        if spec["class_name"] == "InputLayer":
            c = spec["config"]
            tensors[name] = [tf_keras.Input(batch_shape=c.get("batch_shape") or c.get("batch_input_shape"), name=name,
                                            dtype=_plain(c.get("dtype", "float32")))]  # fmt: skip
            continue
        nodes = spec.get("inbound_nodes") or []
        if len(nodes) != 1:
            raise Refused(f"layer '{name}' ({spec['class_name']}) is called {len(nodes)} times; QAT rebuilds layers "
                          "called once")  # fmt: skip
        node = nodes[0]
        if _history(node.get("kwargs", {})):
            raise Refused(f"layer '{name}' ({spec['class_name']}) takes tensors as keyword arguments, which the "
                          "rebuild for QAT does not follow")  # fmt: skip
        args = node["args"][0] if node.get("args") else []
        srcs = [tensors[h[0]][h[2]] for h in _history(args)]
        layer = _layer(tf_keras, spec)
        out = layer(srcs if isinstance(args, (list, tuple)) else srcs[0], **node.get("kwargs", {}))
        tensors[name] = list(out) if isinstance(out, (list, tuple)) else [out]
    pick = lambda refs: [tensors[r[0]][r[2]] for r in refs]  # noqa: E731
    return tf_keras.Model(pick(config["input_layers"]), pick(config["output_layers"]), name=config.get("name"))


def load_weights(model, weights_path: Path) -> None:
    with np.load(weights_path, allow_pickle=False) as d:
        names = json.loads(str(d["__layers__"]))
        for layer_name, count in names:
            arrays = [d[f"{layer_name}/{i}"] for i in range(count)]
            layer = model.get_layer(layer_name)
            if len(layer.weights) != len(arrays):
                raise Refused(f"layer '{layer_name}' has {len(arrays)} weights in the Keras 3 model and "
                              f"{len(layer.weights)} as tf_keras; it cannot be rebuilt for QAT")  # fmt: skip
            layer.set_weights(arrays)


def _quantize(tfmot, model):
    try:
        return tfmot.quantization.keras.quantize_model(model)
    except (RuntimeError, ValueError) as exc:
        m = _UNSUPPORTED.search(str(exc))
        if m:
            raise Refused(f"layer '{m.group(1)}' ({m.group(2)}) is not supported by tfmot's default 8-bit QAT scheme; "
                          "replace it, or use openvino-int8-ac or tflite-int8-mixed instead") from None
        raise Refused(f"tfmot cannot quantize this model: {str(exc).splitlines()[0][:300]}") from None


def _finite(value) -> float | None:
    """A metric as JSON can hold it: NaN and infinity (a diverging fine-tune) become None."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _loss(tf_keras, model):
    last = model.layers[-1]
    act = getattr(last, "activation", None)
    probs = act is not None and getattr(act, "__name__", "") == "softmax" or type(last).__name__ == "Softmax"
    return tf_keras.losses.SparseCategoricalCrossentropy(from_logits=not probs)


# size: the fine-tune, with one progress event per epoch, and both outputs written
def fine_tune(req: dict, emit) -> dict:
    tf, tf_keras, tfmot = _legacy()
    q = req["qat"]
    tf_keras.utils.set_random_seed(int(q["seed"]))
    tf.config.experimental.enable_op_determinism()  # the same request trains the same weights
    config = json.loads(Path(req["config"]).read_text(encoding="utf-8"))
    model = rebuild(tf_keras, config["config"], config["class_name"])
    load_weights(model, Path(req["weights"]))
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise Refused(f"QAT fine-tunes classifiers (sparse categorical cross-entropy on the data set's labels); this "
                      f"model's output is {[tuple(o.shape) for o in model.outputs]}")  # fmt: skip
    qmodel = _quantize(tfmot, model)
    with np.load(req["train"], allow_pickle=False) as d:
        x, labels = d["x"].astype(np.float32), d["y"]
    if labels.ndim != 1 or (labels.dtype.kind == "f" and not np.all(labels == np.round(labels))):
        raise Refused(f"QAT fine-tunes classifiers, and the training labels are not one class id per sample "
                      f"(shape {labels.shape}, {labels.dtype}); segmentation and regression labels are not supported")  # fmt: skip
    y = labels.astype(np.int64)
    n_classes = int(model.outputs[0].shape[-1])
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise Refused(f"the training labels run {int(y.min())}..{int(y.max())} but the model has {n_classes} classes")
    qmodel.compile(optimizer=tf_keras.optimizers.Adam(float(q["learning_rate"])), loss=_loss(tf_keras, model),
                   metrics=["accuracy"])  # fmt: skip
    epochs = int(q["epochs"])
    history: list[dict] = []

    class Progress(tf_keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            row = {"epoch": epoch + 1, "loss": _finite(logs.get("loss")), "accuracy": _finite(logs.get("accuracy"))}
            history.append(row)
            emit(event="epoch", epochs=epochs, **row)

    t0 = time.perf_counter()
    qmodel.fit(x, y, epochs=epochs, batch_size=int(q["batch_size"]), shuffle=True, verbose=0, callbacks=[Progress()])
    fine_tune_s = time.perf_counter() - t0
    if not history or history[-1]["loss"] is None:
        raise Refused(f"the fine-tune diverged (loss {history[-1]['loss'] if history else 'none'} after {epochs} "
                      f"epoch(s) at learning rate {float(q['learning_rate']):g}); lower --qat-lr")  # fmt: skip
    out = Path(req["outdir"])
    shape = [int(d) for d in req["input_shape"]]
    tflite_error = write_outputs(tf, qmodel, shape, out, req.get("calibration"))
    return {"history": history, "fine_tune_s": fine_tune_s, "n_train": int(len(x)), "epochs": epochs,
            "learning_rate": float(q["learning_rate"]), "batch_size": int(q["batch_size"]), "seed": int(q["seed"]),
            "tflite_error": tflite_error}  # fmt: skip


def write_outputs(tf, qmodel, shape: list[int], out: Path, calibration: str | None) -> str | None:
    """``savedmodel/`` (static input shape), then ``model.tflite`` (full integer, int8 input and output); the
    TFLite converter's error, if it failed (the SavedModel still serves openvino-int8-qat), else None."""
    fn = tf.function(lambda x: qmodel(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32))
    tf.saved_model.save(qmodel, str(out / "savedmodel"), signatures=concrete)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], qmodel)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if calibration:  # ranges for any tensor the fake-quant ops leave uncovered
        with np.load(calibration, allow_pickle=False) as d:
            cal = d["x"].astype(np.float32)
        conv.representative_dataset = lambda: ([cal[i : i + 1]] for i in range(min(len(cal), 100)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    try:
        (out / "model.tflite").write_bytes(conv.convert())
    except Exception as exc:  # noqa: BLE001 - the converter raises many types
        return f"the TFLite converter failed on the QAT model: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__}"
    return None


def export(req: dict) -> dict:
    """A user's tf_keras QAT .h5 as a SavedModel (the conversion child reads that)."""
    tf, tf_keras, tfmot = _legacy()
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    # tf_keras's .h5 loader does not pass safe_mode on; the scope makes a Lambda's deserialization refuse anyway
    # (the conversion child has already refused any Lambda it found in the config)
    with tfmot.quantization.keras.quantize_scope(), SafeModeScope(True):
        try:
            model = tf_keras.models.load_model(req["path"], compile=False, safe_mode=True)
        except Exception as exc:  # noqa: BLE001 - h5py and Keras raise many types
            raise Refused(f"not a loadable tf_keras QAT model: {str(exc).splitlines()[0][:300]}") from None
    if len(model.inputs) != 1:
        raise Refused(f"{len(model.inputs)} inputs; fleetbench converts single-input models")
    dims = [None if d is None else int(d) for d in model.inputs[0].shape]
    given = req.get("input_shape")
    shape = list(given) if given else [1 if d is None else d for d in dims]
    if any(d is None for d in shape[1:]):
        raise Refused(f"input has dynamic dimensions {dims}; give a static shape with --input-shape")
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32))
    tf.saved_model.save(model, str(Path(req["outdir"]) / "savedmodel"), signatures=concrete)
    return {"input_shape": shape}


def main(argv: list[str]) -> int:
    from controller.convert.common import event_stream

    emit = event_stream()
    req = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        result = fine_tune(req, emit) if req["mode"] == "fine-tune" else export(req)
    except Refused as exc:
        emit(event="refused", error=str(exc))
        return 0
    except Exception as exc:  # noqa: BLE001 - one line for the variant; the traceback goes to the log
        import traceback

        traceback.print_exc()
        text = str(exc).strip().splitlines()
        emit(event="refused", error=f"QAT failed: {type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": "))
        return 0
    emit(event="done", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

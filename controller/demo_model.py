"""The bundled demo model: a small Keras CNN trained on scikit-learn's digits.

The digits set ships inside scikit-learn, so nothing downloads. The split is
fixed by a seed: 80% train, 20% held out for accuracy. The trained model, its
TFLite fp32 variant and the held-out set are kept in the artifact store, and
``demo/manifest.json`` names them, so a second demo reuses them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controller.artifacts import ArtifactStore
from controller.config import Paths
from protocol import ArtifactRef

MODEL_NAME = "digits-cnn"
SEED = 0
HOLDOUT_FRACTION = 0.2
EPOCHS = 15


@dataclass(frozen=True)
class DemoModel:
    name: str
    keras: ArtifactRef
    tflite_fp32: ArtifactRef
    validation: ArtifactRef
    keras_accuracy: float
    train_s: float
    convert_s: float

    @property
    def model_id(self) -> str:
        return self.keras.sha256


def digits_split(seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as NHWC float32 in [0, 1]: (x_train, y_train, x_holdout, y_holdout)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_hold = int(round(len(x) * HOLDOUT_FRACTION))
    hold, train = order[:n_hold], order[n_hold:]
    return x[train], y[train], x[hold], y[hold]


def _import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def train_model(x_train: np.ndarray, y_train: np.ndarray, epochs: int = EPOCHS):
    tf = _import_tf()
    keras = tf.keras
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1), name="image"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="digits_cnn",
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    return model


def to_tflite_fp32(model) -> bytes:
    """Convert a Keras model to a TFLite fp32 flatbuffer with the TFLite converter."""
    tf = _import_tf()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its temp SavedModel path
        return converter.convert()


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _manifest_path(paths: Paths) -> Path:
    return paths.demo / "manifest.json"


def load_cached(paths: Paths, store: ArtifactStore) -> DemoModel | None:
    """The demo model from an earlier run, if every artifact is still intact."""
    try:
        data = json.loads(_manifest_path(paths).read_text(encoding="utf-8"))
        refs = {k: ArtifactRef.from_dict(data[k]) for k in ("keras", "tflite_fp32", "validation")}
    except (OSError, ValueError, KeyError):
        return None
    for ref in refs.values():
        if store.get(ref.sha256) is None:
            return None
    return DemoModel(
        name=data.get("name", MODEL_NAME),
        keras_accuracy=float(data["keras_accuracy"]),
        train_s=float(data["train_s"]),
        convert_s=float(data["convert_s"]),
        **refs,
    )


def build(paths: Paths, store: ArtifactStore, on_step=lambda msg: None) -> DemoModel:
    """Train, convert and store the demo model; write the manifest."""
    on_step("loading the digits data set (bundled with scikit-learn)")
    x_train, y_train, x_hold, y_hold = digits_split()
    on_step("importing TensorFlow")
    _import_tf()
    on_step(f"training the digits CNN ({len(x_train)} images, {EPOCHS} epochs)")
    t0 = time.perf_counter()
    model = train_model(x_train, y_train)
    train_s = time.perf_counter() - t0
    _, keras_acc = model.evaluate(x_hold, y_hold, verbose=0)

    on_step("saving the Keras model")
    with tempfile.TemporaryDirectory() as tmp:
        keras_path = Path(tmp) / f"{MODEL_NAME}.keras"
        model.save(keras_path)
        keras_ref = store.put_file(keras_path)

    on_step("converting to TFLite fp32")
    t0 = time.perf_counter()
    tflite = to_tflite_fp32(model)
    convert_s = time.perf_counter() - t0
    tflite_ref = store.put_bytes(tflite, f"{MODEL_NAME}.fp32.tflite")
    val_ref = store.put_bytes(_npz_bytes(x=x_hold, y=y_hold), f"{MODEL_NAME}.holdout.npz")

    demo = DemoModel(
        name=MODEL_NAME,
        keras=keras_ref,
        tflite_fp32=tflite_ref,
        validation=val_ref,
        keras_accuracy=float(keras_acc),
        train_s=train_s,
        convert_s=convert_s,
    )
    manifest = {
        "name": demo.name,
        "keras": keras_ref.to_dict(),
        "tflite_fp32": tflite_ref.to_dict(),
        "validation": val_ref.to_dict(),
        "keras_accuracy": demo.keras_accuracy,
        "train_s": train_s,
        "convert_s": convert_s,
    }
    tmp_manifest = _manifest_path(paths).with_suffix(".tmp")
    tmp_manifest.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    os.replace(tmp_manifest, _manifest_path(paths))
    return demo

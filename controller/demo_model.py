"""The bundled demo model: a small Keras CNN trained on scikit-learn's digits.

The digits set ships inside scikit-learn, so nothing downloads. The split is
fixed by a seed: 80% train, 20% held out. The held-out images are written raw
(pixel values 0..16) with their labels; the demo declares the preprocessing
(scale 1/16) on the data set, as a user would. Both files live in
``<data dir>/demo/`` and a second demo reuses them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controller.config import Paths

MODEL_NAME = "digits-cnn"
SEED = 0
HOLDOUT_FRACTION = 0.2
EPOCHS = 15
#: The digits' pixel values run 0..16; the model sees them scaled to 0..1.
SCALE = 1.0 / 16.0


@dataclass(frozen=True)
class DemoFiles:
    keras: Path
    holdout: Path
    keras_accuracy: float
    train_s: float
    reused: bool


def digits_split(seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw digits as NHWC float32 in [0, 16]: (x_train, y_train, x_holdout, y_holdout)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_hold = int(round(len(x) * HOLDOUT_FRACTION))
    hold, train = order[:n_hold], order[n_hold:]
    return x[train], y[train], x[hold], y[hold]


def import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def train_model(x_train: np.ndarray, y_train: np.ndarray, epochs: int = EPOCHS):
    tf = import_tf()
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
    model.fit(x_train * SCALE, y_train, epochs=epochs, batch_size=32, verbose=0)
    return model


def ensure(paths: Paths, rebuild: bool = False, on_step=lambda msg: None) -> DemoFiles:
    """The demo's model and held-out set, trained now or reused from an earlier run."""
    keras_path = paths.demo / f"{MODEL_NAME}.keras"
    holdout_path = paths.demo / f"{MODEL_NAME}.holdout.npz"
    manifest_path = paths.demo / "manifest.json"
    if not rebuild and keras_path.is_file() and holdout_path.is_file():
        try:
            meta = json.loads(manifest_path.read_text(encoding="utf-8"))
            return DemoFiles(keras_path, holdout_path, float(meta["keras_accuracy"]), float(meta["train_s"]), True)
        except (OSError, ValueError, KeyError):
            pass  # an earlier run died half-way: train again
    on_step("loading the digits data set (bundled with scikit-learn)")
    x_train, y_train, x_hold, y_hold = digits_split()
    on_step("importing TensorFlow")
    import_tf()
    on_step(f"training the digits CNN ({len(x_train)} images, {EPOCHS} epochs)")
    t0 = time.perf_counter()
    model = train_model(x_train, y_train)
    train_s = time.perf_counter() - t0
    _, acc = model.evaluate(x_hold * SCALE, y_hold, verbose=0)
    tmp_model = keras_path.with_name(".incoming.keras")
    model.save(tmp_model)
    os.replace(tmp_model, keras_path)
    tmp_hold = holdout_path.with_name(".incoming.npz")
    np.savez(tmp_hold, x=x_hold, y=y_hold)
    os.replace(tmp_hold, holdout_path)
    manifest_path.write_text(json.dumps({"keras_accuracy": float(acc), "train_s": train_s}), encoding="utf-8")
    return DemoFiles(keras_path, holdout_path, float(acc), train_s, False)

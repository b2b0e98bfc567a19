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

"""The variants: stable names, recipes, which sources they make sense for.

Seven are made by default (:data:`STANDARD`). Four more keep accuracy that post-training int8 loses and are
made when asked for by name (issue 18): ``tflite-int8-qat`` and ``openvino-int8-qat`` (quantization-aware
training, or a model a user trained so), ``openvino-int8-ac`` (NNCF's accuracy control) and
``tflite-int8-mixed`` (the layers that lose the most kept in float).

A variant's cache key is the sha256 of everything that decides its bytes:
source id, variant name, recipe, calibration data, input shape and tool
versions. The same inputs give the same key, and a second ``convert`` finds
the stored result instead of converting again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from controller.convert.sources import H5, KERAS, ONNX, OPENVINO_IR, SAVEDMODEL, TFLITE

#: Bump when a recipe's code changes in a way that changes its output.
RECIPE_REVISION = 1

#: Quantization-aware training unless the convert request says otherwise (``--qat-epochs``, ``--qat-lr``).
QAT_DEFAULTS = {"epochs": 3, "learning_rate": 1e-4, "batch_size": 32, "seed": 0}


@dataclass(frozen=True)
class Recipe:
    name: str
    family: str  # "tflite" or "openvino": the runtime that runs it
    how: str  # one line for docs and records
    params: dict
    needs_calibration: bool = False

    def to_dict(self) -> dict:
        return {"variant": self.name, "family": self.family, "how": self.how, "params": self.params,
                "revision": RECIPE_REVISION}  # fmt: skip


VARIANTS: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe("tflite-fp32", "tflite", "TFLite converter, no optimization", {}),
        Recipe(
            "tflite-dynamic-int8", "tflite",
            "TFLite converter, Optimize.DEFAULT without representative data (int8 weights, float activations)",
            {"optimizations": ["DEFAULT"]},
        ),
        Recipe(
            "tflite-fp16", "tflite", "TFLite converter, Optimize.DEFAULT with supported_types=[float16]",
            {"optimizations": ["DEFAULT"], "supported_types": ["float16"]},
        ),
        Recipe(
            "tflite-int8", "tflite",
            "full integer: representative data from the calibration split, TFLITE_BUILTINS_INT8, int8 input and output",
            {"optimizations": ["DEFAULT"], "supported_ops": ["TFLITE_BUILTINS_INT8"], "io_type": "int8"},
            needs_calibration=True,
        ),
        Recipe("openvino-fp32", "openvino", "openvino.convert_model + save_model(compress_to_fp16=False)",
               {"compress_to_fp16": False}),
        Recipe("openvino-fp16", "openvino", "openvino.convert_model + save_model(compress_to_fp16=True)",
               {"compress_to_fp16": True}),
        Recipe(
            "openvino-int8", "openvino", "NNCF post-training quantization (nncf.quantize) on the calibration split",
            {"nncf": "quantize", "preset": "PERFORMANCE"}, needs_calibration=True,
        ),
        Recipe(
            "tflite-int8-qat", "tflite",
            "quantization-aware training: tfmot quantize_model on a tf_keras rebuild, fine-tuned on the training split, "
            "then the TFLite converter (int8 input and output)",
            {"qat": QAT_DEFAULTS}, needs_calibration=True,
        ),
        Recipe(
            "openvino-int8-qat", "openvino",
            "quantization-aware training as tflite-int8-qat, exported as a SavedModel whose FakeQuantWithMinMaxVars ops "
            "OpenVINO folds into int8",
            {"qat": QAT_DEFAULTS}, needs_calibration=True,
        ),
        Recipe(
            "openvino-int8-ac", "openvino",
            "NNCF quantize_with_accuracy_control: int8 on the calibration split, layers reverted to float until the "
            "top-1 accuracy drop on the labelled training split (else the validation split) is within max_drop",
            {"nncf": "accuracy_control", "max_drop": 0.01, "preset": "PERFORMANCE"}, needs_calibration=True,
        ),
        Recipe(
            "tflite-int8-mixed", "tflite",
            "full integer as tflite-int8, with the layers TFLite's QuantizationDebugger ranks worst (RMSE/scale) kept "
            "in float until the worst output's SNR against fp32 on the calibration split meets fidelity_target_db",
            {"optimizations": ["DEFAULT"], "supported_ops": ["TFLITE_BUILTINS_INT8"], "io_type": "int8",
             "mixed": {"fidelity_target_db": None}},
            needs_calibration=True,
        ),
    ]  # fmt: skip
}

#: What ``--variants all`` (and no --variants) means: the seven made from any float model without options.
STANDARD: tuple[str, ...] = ("tflite-fp32", "tflite-dynamic-int8", "tflite-fp16", "tflite-int8", "openvino-fp32",
                             "openvino-fp16", "openvino-int8")  # fmt: skip
#: Quantization-aware variants; from a float Keras model they fine-tune, from a QAT model they convert it.
QAT_VARIANTS = ("tflite-int8-qat", "openvino-int8-qat")

#: Which runtime serves each family on an agent's CPU.
FAMILY_CAPABILITY = {"tflite": "litert:cpu", "openvino": "openvino:CPU"}
#: Every runtime that runs a family (the part of a capability before its colon).
FAMILY_RUNTIMES = {"tflite": ("litert", "tflite"), "openvino": ("openvino",)}

_TF_SOURCES = {KERAS, H5, SAVEDMODEL}


#: Variants made from a TFLite file (no TensorFlow graph), by what the file is.
_FROM_TFLITE = {
    "tflite-fp32": Recipe("tflite-fp32", "tflite", "fp16 weights dequantized to float32 in the flatbuffer (DEQUANTIZE ops folded)",
                          {"dequantize_fp16": True}),
    "tflite-dynamic-int8": Recipe("tflite-dynamic-int8", "tflite",
                                  "ai-edge-quantizer dynamic_wi8_afp32 on the fp32 flatbuffer (int8 weights, float activations)",
                                  {"ai_edge_quantizer": "dynamic_wi8_afp32"}),
    "tflite-int8": Recipe("tflite-int8", "tflite",
                          "ai-edge-quantizer static_wi8_ai8 on the fp32 flatbuffer, calibrated on the calibration split",
                          {"ai_edge_quantizer": "static_wi8_ai8"}, needs_calibration=True),
    "tflite-fp16": Recipe("tflite-fp16", "tflite", "ai-edge-quantizer float16 weights on the fp32 flatbuffer",
                          {"ai_edge_quantizer": "float16"}),
}  # fmt: skip


@dataclass(frozen=True)
class QuantOptions:
    """The convert request's options for the accuracy-keeping variants; they go into those recipes (and so into
    their cache keys). ``train_sha``, ``validation_sha``: the splits' artifacts, so new data is a new variant."""

    qat_epochs: int = QAT_DEFAULTS["epochs"]
    qat_learning_rate: float = QAT_DEFAULTS["learning_rate"]
    qat_batch_size: int = QAT_DEFAULTS["batch_size"]
    seed: int = 0
    max_accuracy_drop: float = 0.01
    fidelity_target_db: float | None = None
    train_sha: str | None = None
    n_train: int = 0
    validation_sha: str | None = None
    n_validation: int = 0
    n_calibration: int = 0


def _with_options(recipe: Recipe, o: QuantOptions) -> Recipe:
    params = dict(recipe.params)
    if "qat" in params:
        params["qat"] = {"epochs": o.qat_epochs, "learning_rate": o.qat_learning_rate, "batch_size": o.qat_batch_size,
                         "seed": o.seed, "train": o.train_sha, "n_train": o.n_train, "n_calibration": o.n_calibration,
                         "n_validation": o.n_validation}  # fmt: skip
    elif params.get("nncf") == "accuracy_control":  # tuned on the training split when there is one (held-out scores)
        tune_on = "train" if o.train_sha else "validation"
        params.update(max_drop=o.max_accuracy_drop, tune_on=tune_on,
                      tuning_data=o.train_sha if o.train_sha else o.validation_sha,
                      n_tuning=o.n_train if o.train_sha else o.n_validation)  # fmt: skip
    elif "mixed" in params:
        params["mixed"] = {"fidelity_target_db": o.fidelity_target_db}
    return Recipe(recipe.name, recipe.family, recipe.how, params, recipe.needs_calibration)


def _qat_source_recipe(variant: str, evidence: str) -> Recipe:
    family = VARIANTS[variant].family
    how = ("the TFLite converter on the model's own fake-quant ranges (no calibration), int8 input and output"
           if family == "tflite" else "openvino.convert_model: the model's fake-quant ops folded into int8 weights")
    return Recipe(variant, family, f"a model trained with quantization ({evidence}): {how}", {"qat_source": evidence})


def source_recipe(variant: str) -> Recipe:
    """The user's own file as the variant it is: no conversion."""
    return Recipe(variant, VARIANTS[variant].family, "the source file as given, no conversion", {"source": True})


def recipe_for(source_kind: str, variant: str, source_variant: str | None = None,
               options: QuantOptions | None = None, qat_source: str | None = None) -> Recipe:  # fmt: skip
    """How ``variant`` is made from this source. ``source_variant``: the variant the file itself is;
    ``qat_source``: the evidence that the source was trained with fake quantization (None if it was not)."""
    if variant == source_variant:
        return source_recipe(variant)
    if qat_source and variant in QAT_VARIANTS:
        return _qat_source_recipe(variant, qat_source)
    if source_kind == TFLITE and variant in _FROM_TFLITE:
        return _FROM_TFLITE[variant]
    return _with_options(VARIANTS[variant], options or QuantOptions())


_QUANTIZED = {"tflite-dynamic-int8", "tflite-int8"}


def refusal(source_kind: str, variant: str, source_variant: str | None = None, qat_source: str | None = None) -> str | None:
    """Why ``variant`` cannot be made from a ``source_kind`` source, or None if it can.

    ``source_variant``: what a TFLite source file is (see :mod:`controller.convert.tflite_tools`);
    ``qat_source``: the evidence that the source is a quantization-aware trained model.
    """
    if variant not in VARIANTS:
        return f"unknown variant '{variant}'; known: {', '.join(VARIANTS)}"
    recipe = VARIANTS[variant]
    if variant in QAT_VARIANTS and (source_kind in (KERAS, H5) or qat_source and source_kind == H5):
        missing = _qat_missing(variant)
        if missing:
            return missing
    if qat_source:
        if variant in QAT_VARIANTS:
            if source_kind == ONNX and recipe.family == "tflite":
                return ("there is no TFLite variant from ONNX without an ONNX-to-TensorFlow converter; "
                        "openvino-int8-qat reads the QDQ model as it is")  # fmt: skip
            return None
        return (f"this model was trained with quantization ({qat_source}): its variants are "
                f"{' and '.join(QAT_VARIANTS) if source_kind != ONNX else QAT_VARIANTS[1]}, made from its own ranges")
    if variant in QAT_VARIANTS and source_kind not in (KERAS, H5):
        return (f"{variant} fine-tunes a Keras model with quantization-aware training, and a {source_kind} source has "
                "no Keras layers to wrap: convert from the .keras or .h5 file, or give a model trained with QAT")
    if variant == "tflite-int8-mixed" and source_kind == TFLITE:
        return ("tflite-int8-mixed needs TensorFlow's converter and its QuantizationDebugger, which start from a "
                "TensorFlow model, not a .tflite file: convert from the original model, or use tflite-int8")
    if recipe.family == "tflite":
        if source_kind in _TF_SOURCES:
            return None
        if source_kind == TFLITE:
            if variant == source_variant:
                return None  # the file itself
            if source_variant in (None, "tflite-fp32", "tflite-fp16"):
                if variant in _QUANTIZED or variant == "tflite-fp16":  # made by ai-edge-quantizer
                    return _quantizer_missing(variant)
                return None  # tflite-fp32: the file's fp16 weights dequantized
            return (
                f"{variant} cannot be made from this file: it is already {source_variant} (int8 weights), and float "
                "weights cannot be recovered from int8 ones. Convert from the original float model instead"
            )
        if source_kind == OPENVINO_IR:
            return "there is no TFLite variant from an OpenVINO IR: OpenVINO cannot export TFLite"
        if source_kind == ONNX:
            return "there is no TFLite variant from ONNX without an ONNX-to-TensorFlow converter; convert from the original framework"
    if source_kind == OPENVINO_IR and source_variant == "openvino-int8" and variant != source_variant:
        return (f"{variant} cannot be made from this IR: it is already openvino-int8, and float weights cannot be "
                "recovered from int8 ones. Convert from the original float model instead")  # fmt: skip
    return None  # OpenVINO reads every source kind (Keras through a SavedModel export)


def _qat_missing(variant: str) -> str | None:
    from importlib.util import find_spec

    lacking = [d for d, m in (("tf-keras", "tf_keras"), ("tensorflow-model-optimization", "tensorflow_model_optimization"))
               if find_spec(m) is None]  # fmt: skip
    if lacking:
        return (f"{variant} needs {' and '.join(lacking)}, which are not installed: `make venv` installs them "
                "(pip install --no-deps tf-keras==<your TensorFlow's x.y>.* tensorflow-model-optimization==0.8.1)")
    return None


def _quantizer_missing(variant: str) -> str | None:
    from importlib.util import find_spec

    if find_spec("ai_edge_quantizer") is None:
        return (f"{variant} from a TFLite file needs ai-edge-quantizer, which is not installed: "
                "`pip install 'fleetbench[controller]'` installs it")  # fmt: skip
    return None


def cache_key(
    source_sha: str,
    variant: str,
    input_shape: tuple[int, ...] | None,
    calibration_sha: str | None,
    tool_versions: dict[str, str],
    recipe: Recipe | None = None,
) -> str:
    """The variant's identity. A recipe that needs no calibration leaves the data set out, so converting
    with or without ``--data`` finds the same variant."""
    recipe = recipe or VARIANTS[variant]
    payload = {
        "source": source_sha,
        "recipe": recipe.to_dict(),
        "input_shape": list(input_shape) if input_shape else None,
        "calibration": calibration_sha if recipe.needs_calibration else None,
        "tools": {k: tool_versions.get(k, "") for k in sorted(_tools_for(recipe))},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _tools_for(recipe: Recipe) -> set[str]:
    if recipe.params.get("source"):
        return set()
    if "qat" in recipe.params:
        return {"tensorflow", "tf-keras", "tensorflow-model-optimization"} | ({"openvino"} if recipe.family == "openvino" else set())
    if recipe.params.get("qat_source"):  # a tf_keras .h5 is exported by tf_keras; the rest by the family's converter
        return {"tensorflow", "tf-keras", "tensorflow-model-optimization"} | ({"openvino"} if recipe.family == "openvino" else set())
    if "mixed" in recipe.params:  # LiteRT runs each try of the search
        return {"tensorflow", "ai-edge-litert"}
    if recipe.params.get("ai_edge_quantizer") or recipe.params.get("dequantize_fp16"):
        return {"ai-edge-quantizer", "ai-edge-litert"}
    return {"tensorflow"} if recipe.family == "tflite" else {"openvino", "nncf", "tensorflow"}


def tool_versions() -> dict[str, str]:
    """Installed converter versions, without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for key, dist in [("tensorflow", "tensorflow-cpu"), ("tensorflow", "tensorflow"), ("openvino", "openvino"),
                      ("nncf", "nncf"), ("ai-edge-quantizer", "ai-edge-quantizer"), ("ai-edge-litert", "ai-edge-litert"),
                      ("tf-keras", "tf-keras"), ("tensorflow-model-optimization", "tensorflow-model-optimization")]:  # fmt: skip
        if key in out:
            continue
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            pass
    return out

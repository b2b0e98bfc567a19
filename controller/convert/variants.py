"""The seven variants: stable names, recipes, which sources they make sense for.

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
    ]  # fmt: skip
}

#: Which runtime serves each family on an agent's CPU.
FAMILY_CAPABILITY = {"tflite": "litert:cpu", "openvino": "openvino:CPU"}

_TF_SOURCES = {KERAS, H5, SAVEDMODEL}


def refusal(source_kind: str, variant: str) -> str | None:
    """Why ``variant`` cannot be made from a ``source_kind`` source, or None if it can."""
    if variant not in VARIANTS:
        return f"unknown variant '{variant}'; known: {', '.join(VARIANTS)}"
    recipe = VARIANTS[variant]
    if recipe.family == "tflite":
        if source_kind in _TF_SOURCES:
            return None
        if source_kind == TFLITE:
            if variant == "tflite-fp32":
                return None
            return (
                f"{variant} needs the TensorFlow graph; a TFLite file cannot be re-quantized by the TFLite converter. "
                "Convert from the Keras model or SavedModel instead"
            )
        if source_kind == OPENVINO_IR:
            return "there is no TFLite variant from an OpenVINO IR: OpenVINO cannot export TFLite"
        if source_kind == ONNX:
            return "there is no TFLite variant from ONNX without an ONNX-to-TensorFlow converter; convert from the original framework"
    return None  # OpenVINO reads every source kind (Keras through a SavedModel export)


def cache_key(
    source_sha: str,
    variant: str,
    input_shape: tuple[int, ...] | None,
    calibration_sha: str | None,
    tool_versions: dict[str, str],
) -> str:
    recipe = VARIANTS[variant]
    payload = {
        "source": source_sha,
        "recipe": recipe.to_dict(),
        "input_shape": list(input_shape) if input_shape else None,
        "calibration": calibration_sha if recipe.needs_calibration else None,
        "tools": {k: tool_versions.get(k, "") for k in sorted(_tools_for(recipe.family))},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _tools_for(family: str) -> set[str]:
    return {"tensorflow"} if family == "tflite" else {"openvino", "nncf", "tensorflow"}


def tool_versions() -> dict[str, str]:
    """Installed converter versions, without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for key, dist in [("tensorflow", "tensorflow-cpu"), ("tensorflow", "tensorflow"), ("openvino", "openvino"),
                      ("nncf", "nncf")]:  # fmt: skip
        if key in out:
            continue
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            pass
    return out

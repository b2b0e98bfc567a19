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


def source_recipe(variant: str) -> Recipe:
    """The user's own file as the variant it is: no conversion."""
    return Recipe(variant, VARIANTS[variant].family, "the source file as given, no conversion", {"source": True})


def recipe_for(source_kind: str, variant: str, source_variant: str | None = None) -> Recipe:
    """How ``variant`` is made from this source. ``source_variant``: the variant the file itself is."""
    if variant == source_variant:
        return source_recipe(variant)
    if source_kind == TFLITE and variant in _FROM_TFLITE:
        return _FROM_TFLITE[variant]
    return VARIANTS[variant]


_QUANTIZED = {"tflite-dynamic-int8", "tflite-int8"}


def refusal(source_kind: str, variant: str, source_variant: str | None = None) -> str | None:
    """Why ``variant`` cannot be made from a ``source_kind`` source, or None if it can.

    ``source_variant``: what a TFLite source file is (see :mod:`controller.convert.tflite_tools`).
    """
    if variant not in VARIANTS:
        return f"unknown variant '{variant}'; known: {', '.join(VARIANTS)}"
    recipe = VARIANTS[variant]
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
    if recipe.params.get("ai_edge_quantizer") or recipe.params.get("dequantize_fp16"):
        return {"ai-edge-quantizer", "ai-edge-litert"}
    return {"tensorflow"} if recipe.family == "tflite" else {"openvino", "nncf", "tensorflow"}


def tool_versions() -> dict[str, str]:
    """Installed converter versions, without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for key, dist in [("tensorflow", "tensorflow-cpu"), ("tensorflow", "tensorflow"), ("openvino", "openvino"),
                      ("nncf", "nncf"), ("ai-edge-quantizer", "ai-edge-quantizer"), ("ai-edge-litert", "ai-edge-litert")]:  # fmt: skip
        if key in out:
            continue
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            pass
    return out

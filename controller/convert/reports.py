"""``fleetbench quant-report``: where a stored int8 variant loses what it loses, layer by layer (issue 18).

The report is computed by the converter (the sandboxed child: TensorFlow's QuantizationDebugger for
``tflite-int8``, OpenVINO with every layer's output added for ``openvino-int8``) on the calibration split of
the data set the variant was made with, and stored on the variant (``VariantRow.details["layer_errors"]``),
where the dashboard shows it beside the variant's fidelity.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.artifacts import ArtifactStore
from controller.convert.accuracy import REPORTABLE
from controller.convert.service import ConvertError, Runner
from controller.store import Store
from controller.store.models import ModelRow, VariantRow


@dataclass(frozen=True)
class LayerReport:
    model: str
    variant: str
    cache_key: str
    layers: list[dict]
    total: int
    samples: int
    metric: str


def find_variant(store: Store, model: str, variant: str) -> tuple[ModelRow, VariantRow]:
    """The model and its newest stored ``variant`` made with a data set; one clear line when there is none."""
    if variant not in REPORTABLE:
        raise ConvertError(f"no per-layer report for {variant}: --variant is one of {', '.join(REPORTABLE)}")
    m = store.find_model(model)
    if variant == "tflite-int8" and m.kind == "tflite":
        raise ConvertError(f"{m.name} is a .tflite file: the tflite-int8 report runs TensorFlow's QuantizationDebugger, "
                           "which needs the TensorFlow model it came from; report openvino-int8 instead")  # fmt: skip
    rows = [r for r in store.variants(m.model_id) if r.variant == variant and r.dataset_id]
    if not rows:
        raise ConvertError(f"{m.name} has no {variant} made with a data set yet: run `fleetbench convert {m.name} "
                           f"--variants {variant} --data DATASET` first")  # fmt: skip
    return m, rows[-1]


def run(store: Store, artifacts: ArtifactStore, found: tuple[ModelRow, VariantRow], runner: Runner,
        on_event=lambda e: None, limits: dict | None = None) -> LayerReport:  # fmt: skip
    """The report of ``found`` (what :func:`find_variant` returned), computed by ``runner`` and stored."""
    m, row = found
    variant = row.variant
    dataset = store.get_dataset(row.dataset_id)
    source = artifacts.get(m.model_id, m.filename)
    if dataset is None or source is None or artifacts.get(dataset.calibration["sha256"]) is None:
        raise ConvertError(f"{m.name}: its source file or its data set's calibration split is gone from the artifact "
                           "store; convert it again with --data")  # fmt: skip
    job = {"limits": dict(limits or {}), "source": source.to_dict(), "kind": m.kind, "name": m.filename.rsplit(".", 1)[0],
           "variants": [], "input_shape": list(row.input_shape), "calibration": dataset.calibration,
           "validation": None, "recipes": {}, "report": variant}  # fmt: skip
    result = runner(job, on_event)
    report = result.get("report")
    if result.get("fatal"):
        raise ConvertError(result["fatal"])
    if not report:
        raise ConvertError(f"the converter returned no report for {variant}; see its log")
    if report.get("error"):
        raise ConvertError(report["error"])
    layers = report["layers"]
    metric = layers[0]["metric"] if layers else ""
    store.update_variant_details(row.cache_key, {"layer_errors": layers, "layer_errors_total": report["total"],
                                                 "layer_errors_samples": report["samples"]})  # fmt: skip
    return LayerReport(m.name, variant, row.cache_key, layers, report["total"], report["samples"], metric)

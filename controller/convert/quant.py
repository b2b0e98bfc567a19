"""Quantization that keeps accuracy, and where it is lost (issue 18). Runs inside the conversion child.

- :func:`ac_model`: ``openvino-int8-ac``, NNCF's ``quantize_with_accuracy_control`` on labelled data;
- :func:`mixed_tflite`: ``tflite-int8-mixed``, the layers TFLite's QuantizationDebugger ranks worst kept in
  float until a fidelity target is met;
- :func:`tflite_layer_errors`, :func:`openvino_layer_errors`: the per-layer report (int8 against fp32 on the
  calibration split), worst first;
- :func:`tflite_integer_check`, :func:`ir_int8_check`: what a QAT variant must be (integer tensors, int8 weights).

Each layer error is a dict ``{"layer", "op", "error", "metric"}``; ``error`` is larger where more is lost.
"""

# size: four quantization tools and their checks, each a short function over TensorFlow's or OpenVINO's API

from __future__ import annotations

import csv
import io
import math

import numpy as np

from protocol.fidelity import SNR_CAP_DB

#: Op types whose weights NNCF quantizes: a layer of the model in the report's sense.
_WEIGHTED = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData", "GroupConvolutionBackpropData"}
#: The most layers a report lists (a model's worst; the rest are counted).
REPORT_LAYERS = 50


def snr_db(out: np.ndarray, ref: np.ndarray) -> float:
    """The fidelity records' SNR (:mod:`protocol.fidelity`): 10·log10(Σref² / Σ(out-ref)²), capped."""
    err = float(np.sum((out.astype(np.float64) - ref) ** 2))
    energy = float(np.sum(ref.astype(np.float64) ** 2))
    if err == 0:
        return SNR_CAP_DB
    if energy == 0:
        return -SNR_CAP_DB
    return min(SNR_CAP_DB, 10.0 * math.log10(energy / err))


def run_tflite(model: bytes, x: np.ndarray) -> list[np.ndarray]:
    """Every output of a TFLite model on ``x`` (float in, float out: int8 ends are (de)quantized here)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model)
    interp.allocate_tensors()
    (inp,), outs = interp.get_input_details(), interp.get_output_details()
    per: list[list[np.ndarray]] = [[] for _ in outs]
    for i in range(len(x)):
        xi = x[i : i + 1].astype(np.float32)
        scale, zero = inp["quantization"]
        if np.issubdtype(inp["dtype"], np.integer) and scale:
            info = np.iinfo(inp["dtype"])
            xi = np.clip(np.round(xi / scale + zero), info.min, info.max)
        interp.set_tensor(inp["index"], xi.astype(inp["dtype"]))
        interp.invoke()
        for acc, o in zip(per, outs):
            y = interp.get_tensor(o["index"]).astype(np.float32)
            s, z = o["quantization"]
            acc.append((y - z) * s if np.issubdtype(o["dtype"], np.integer) and s else y)
    return [np.concatenate(p) for p in per]


def worst_snr(outs: list[np.ndarray], refs: list[np.ndarray]) -> float:
    return min(snr_db(o.reshape(r.shape), r) for o, r in zip(outs, refs))


# ------------------------------------------------------------------ TFLite


def _debugger(tf, saved_model: str, cal: np.ndarray, denylist=()):
    conv = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rep = lambda: ([cal[i : i + 1].astype(np.float32)] for i in range(len(cal)))  # noqa: E731
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(denylist)) if denylist else None
    return tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=rep, debug_options=opts)


def tflite_layer_errors(tf, saved_model: str, cal: np.ndarray) -> list[dict]:
    """Each quantized op's output error, int8 against float on the calibration split: the debugger's RMSE/scale
    (the error in units of the tensor's quantization step), worst first."""
    return _ranked(_debugger(tf, saved_model, cal))


def _ranked(dbg) -> list[dict]:
    """The layer errors of a debugger (run here), worst first."""
    dbg.run()
    buf = io.StringIO()
    dbg.layer_statistics_dump(buf)
    rows = []
    for r in csv.DictReader(io.StringIO(buf.getvalue())):
        try:
            value = math.sqrt(float(r["mean_squared_error"])) / float(r["scale"])
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            continue
        if math.isfinite(value):
            rows.append({"layer": r["tensor_name"], "op": r["op_name"], "error": value, "metric": "rmse/scale"})
    rows.sort(key=lambda r: -r["error"])
    return rows


def _quantize_denylisted(tf, dbg, denylist: list[str]) -> bytes:
    """The debugger's calibrated model quantized with ``denylist`` in float, int8 input and output as tflite-int8."""
    from tensorflow.lite.python import convert  # the debugger's own call, with int8 ends (pinned TensorFlow)

    return convert.mlir_quantize(dbg.calibrated_model, fully_quantize=True, input_data_type=tf.int8,
                                 output_data_type=tf.int8, denylisted_nodes=denylist)  # fmt: skip


def _steps(n: int) -> list[int]:
    """How many layers to keep in float at each try: one at a time to 8, then half as many again each time."""
    out, k = list(range(1, min(n, 8) + 1)), 8
    while k < n:
        k = min(n, int(math.ceil(k * 1.5)))
        out.append(k)
    return out


# size: the search for the fewest float layers that meet the target, with what each try gave
def mixed_tflite(tf, saved_model: str, cal: np.ndarray, refs: list[np.ndarray], target_db: float, on_try=None) -> tuple[bytes, dict]:
    """``tflite-int8-mixed``: int8, with the worst layers (by RMSE/scale) kept in float, fewest first, until the
    worst output's SNR against ``refs`` (fp32 on ``cal``) reaches ``target_db``."""
    dbg = _debugger(tf, saved_model, cal)  # calibrated once: the ranking and every try quantize its model
    ranked = _ranked(dbg)
    model = _quantize_denylisted(tf, dbg, [])
    start = worst_snr(run_tflite(model, cal), refs)
    tries = [{"float_layers": 0, "snr_db": start}]
    kept: list[str] = []
    snr = start
    if snr < target_db:
        for k in _steps(len(ranked)):
            kept = [r["layer"] for r in ranked[:k]]
            model = _quantize_denylisted(tf, dbg, kept)
            snr = worst_snr(run_tflite(model, cal), refs)
            tries.append({"float_layers": k, "snr_db": snr})
            if on_try:
                on_try(k, snr)
            if snr >= target_db:
                break
    details = {"mixed": {"fidelity_target_db": target_db, "met": snr >= target_db, "snr_db": snr, "int8_snr_db": start,
                         "float_layers": kept, "layers": len(ranked), "tries": tries},
               "layer_errors": ranked[:REPORT_LAYERS]}  # fmt: skip
    return model, details


def tflite_integer_check(model: bytes) -> dict:
    """Tensors of a QAT TFLite file that are not integer, and float QUANTIZE/DEQUANTIZE ops (named)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model)
    tensors = interp.get_tensor_details()
    floats = [t["name"] for t in tensors if np.issubdtype(np.dtype(t["dtype"]), np.floating)]
    qdq = []
    for op in interp._get_ops_details():  # noqa: SLF001 - the only op list the Python API has
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            ends = [tensors_by_index(tensors, i) for i in (*op["inputs"], *op["outputs"])]
            if any(e is not None and np.issubdtype(np.dtype(e["dtype"]), np.floating) for e in ends):
                qdq.append(f"{op['op_name']} #{op['index']}")
    return {"tensors": len(tensors), "float_tensors": floats[:20], "float_tensor_count": len(floats),
            "float_quantize_ops": qdq}  # fmt: skip


def tensors_by_index(tensors: list[dict], index: int) -> dict | None:
    return next((t for t in tensors if t["index"] == index), None)


# ------------------------------------------------------------------ OpenVINO


def _weight_source(node):
    """The node a weighted op's weights come from, through Convert/Reshape/Transpose/Multiply/Subtract."""
    src = node.input_value(1).get_node()
    while src.get_type_name() in ("Convert", "Reshape", "Transpose", "Unsqueeze", "Multiply", "Subtract"):
        src = src.input_value(0).get_node()
    return src


def float_layers(model) -> tuple[list[str], int]:
    """(weighted layers whose weights are not quantized, all weighted layers) of an NNCF-quantized model."""
    weighted = [n for n in model.get_ordered_ops() if n.get_type_name() in _WEIGHTED]
    floats = []
    for n in weighted:
        src = _weight_source(n)
        if src.get_type_name() == "Constant" and src.get_output_element_type(0).get_type_name() in ("f32", "f16"):
            floats.append(n.get_friendly_name())
    return floats, len(weighted)


def ir_int8_check(model) -> dict:
    """Int8 weights and FakeQuantize ops in an IR (as OpenVINO wrote it)."""
    consts = [n for n in model.get_ops() if n.get_type_name() == "Constant"]
    int8 = sum(n.get_output_element_type(0).get_type_name() in ("i8", "u8", "i4", "u4") for n in consts)
    fq = sum(n.get_type_name() == "FakeQuantize" for n in model.get_ops())
    return {"int8_weights": int(int8), "fake_quantize": int(fq)}


def _accuracy(compiled, x: np.ndarray, y: np.ndarray) -> float:
    request = compiled.create_infer_request()
    hits = 0
    for i in range(len(x)):
        request.infer({0: x[i : i + 1]})
        hits += int(np.argmax(request.get_output_tensor(0).data.reshape(-1)) == int(y[i]))
    return hits / max(1, len(x))


# size: NNCF's accuracy control with the data it needs, and what it reverted
def ac_model(model, cal: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, max_drop: float):
    """``openvino-int8-ac``: (model, details). Top-1 accuracy on ``val_x``/``val_y`` (the labelled split it is tuned
    on: the training split when there is one) is the metric."""
    import nncf
    import openvino as ov

    core = ov.Core()
    y = val_y.reshape(-1).astype(np.int64)

    def validate(compiled, items) -> float:
        items = list(items)
        return _accuracy(compiled, np.concatenate([i[0] for i in items]), np.array([i[1] for i in items]))

    val_items = [(val_x[i : i + 1], int(y[i])) for i in range(len(val_x))]
    fp32_acc = _accuracy(core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}), val_x, y)
    quantized = nncf.quantize_with_accuracy_control(
        model, nncf.Dataset([cal[i : i + 1] for i in range(len(cal))]),
        nncf.Dataset(val_items), validate,
        max_drop=max_drop, preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(cal),
    )  # fmt: skip
    reverted, weighted = float_layers(quantized)
    acc = _accuracy(core.compile_model(quantized, "CPU"), val_x, y)
    return quantized, {"accuracy_control": {"max_drop": max_drop, "fp32_accuracy": fp32_acc, "accuracy": acc,
                                            "drop": fp32_acc - acc, "float_layers": reverted, "layers": weighted,
                                            "samples": int(len(val_x))}}  # fmt: skip


def _compare_nodes(fp32_model, int8_model) -> list[tuple[str, str]]:
    """(friendly name, type) of the fp32 model's layer outputs that the int8 model has too."""
    names = {n.get_friendly_name() for n in int8_model.get_ops()}
    keep = []
    for n in fp32_model.get_ordered_ops():
        kind = n.get_type_name()
        if kind in ("Parameter", "Constant", "Result", "Convert", "ShapeOf") or n.get_output_size() != 1:
            continue
        if n.get_friendly_name() in names and n.get_output_element_type(0).get_type_name() in ("f32", "f16"):
            keep.append((n.get_friendly_name(), kind))
    return keep


def _with_outputs(model, names: list[str]):
    """A copy of ``model`` with each named node's output among its outputs, and {name: output index}."""
    model = model.clone()
    by_name = {n.get_friendly_name(): n for n in model.get_ops()}
    producer = lambda o: o.get_node().input_value(0).get_node().get_friendly_name()  # noqa: E731 - outputs are Results
    have = {producer(o) for o in model.outputs}
    model.add_outputs([by_name[n].output(0) for n in names if n not in have])
    index = {}
    for i, o in enumerate(model.outputs):
        index.setdefault(producer(o), i)
    return model, index


# size: both models compiled with every layer's output added, compared on the calibration split
def openvino_layer_errors(fp32_model, int8_model, cal: np.ndarray) -> list[dict]:
    """Each layer's output in the int8 model against the fp32 model on ``cal``: the relative RMS error
    (‖int8-fp32‖ / ‖fp32‖, over all samples), worst first. Both models get every shared layer as an output."""
    import openvino as ov

    nodes = _compare_nodes(fp32_model, int8_model)
    names = [n for n, _ in nodes]
    core = ov.Core()
    (ma, ia), (mb, ib) = _with_outputs(fp32_model, names), _with_outputs(int8_model, names)
    a = core.compile_model(ma, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    b = core.compile_model(mb, "CPU")
    err = np.zeros(len(names))
    energy = np.zeros(len(names))
    ra, rb = a.create_infer_request(), b.create_infer_request()
    for i in range(len(cal)):
        ra.infer({0: cal[i : i + 1]})
        rb.infer({0: cal[i : i + 1]})
        for j in range(len(names)):
            va = ra.get_output_tensor(ia[names[j]]).data.astype(np.float64)
            vb = rb.get_output_tensor(ib[names[j]]).data.astype(np.float64)
            if va.shape != vb.shape:
                continue
            err[j] += float(np.sum((va - vb) ** 2))
            energy[j] += float(np.sum(va**2))
    rel = {n: float(math.sqrt(e / en)) if en > 0 else 0.0 for (n, _), e, en in zip(nodes, err, energy)}
    inherited = _inherited(fp32_model, rel)
    rows = [{"layer": n, "op": kind, "error": rel[n] - inherited[n], "relative_rms": rel[n], "metric": "added relative rms"}
            for n, kind in nodes]  # fmt: skip
    rows.sort(key=lambda r: -r["error"])
    return rows


def _inherited(model, rel: dict[str, float]) -> dict[str, float]:
    """For each compared layer, the largest relative error among the compared layers that feed it (directly or
    through uncompared nodes): what it received, so that ``rel - inherited`` is the error it added."""
    memo: dict[str, float] = {}

    def upstream(node) -> float:
        best = 0.0
        for i in range(node.get_input_size()):
            src = node.input_value(i).get_node()
            name = src.get_friendly_name()
            if name in rel:
                best = max(best, rel[name])
            elif src.get_type_name() != "Constant":
                if name not in memo:
                    memo[name] = upstream(src)
                best = max(best, memo[name])
        return best

    return {n.get_friendly_name(): upstream(n) for n in model.get_ordered_ops() if n.get_friendly_name() in rel}

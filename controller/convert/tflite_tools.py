"""What a TFLite file is, read from its tensors, and the one rewrite fleetbench makes of it.

Parsed with the flatbuffer schema that ``ai-edge-litert`` ships (pure Python: a
hostile file raises, it cannot crash the controller), so planning can name a
user's file by what it is before any sandboxed conversion runs:

- fp16 weights (constant float16 tensors, dequantized at run time) → ``tflite-fp16``;
- int8 weights with float activations (dynamic-range quantization) → ``tflite-dynamic-int8``;
- mostly integer activations (full-integer quantization) → ``tflite-int8``;
- otherwise → ``tflite-fp32``.

:func:`dequantize_fp16` turns an fp16-weight file into a real fp32 one: each
constant float16 tensor that feeds a DEQUANTIZE op becomes the float32 tensor
that op produced, and the op goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FP32, FP16, DYNAMIC_INT8, INT8 = "tflite-fp32", "tflite-fp16", "tflite-dynamic-int8", "tflite-int8"


class TfliteError(ValueError):
    """The file is not a TFLite model fleetbench can read; the message says why."""


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _model(data: bytes):
    schema = _schema()
    try:
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ValueError("no TFL3 identifier")
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
        if not model.subgraphs:
            raise ValueError("no subgraphs")
    except Exception as exc:  # noqa: BLE001 - flatbuffers raises struct/index errors on a corrupt file
        # struct.error is named "error": its text alone, not a second "error:" inside the CLI's error line
        detail = str(exc) if type(exc).__name__ == "error" else f"{type(exc).__name__}: {exc}"
        raise TfliteError(f"not a readable TFLite flatbuffer ({detail})") from None
    return model


def _type_names() -> dict[int, str]:
    schema = _schema()
    return {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


def _op_names(model) -> list[str]:
    schema = _schema()
    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    names = []
    for code in model.operatorCodes:
        b = max(code.builtinCode, code.deprecatedBuiltinCode)
        if b == schema.BuiltinOperator.CUSTOM:
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
            names.append(f"custom:{custom}")
        else:
            names.append(builtin.get(b, str(b)))
    return names


@dataclass(frozen=True)
class TfliteFacts:
    #: The variant this file is: tflite-fp32, tflite-fp16, tflite-dynamic-int8 or tflite-int8.
    variant: str
    #: One line on what gave it away.
    evidence: str
    custom_ops: tuple[str, ...] = ()
    inputs: int = 1
    outputs: int = 1
    #: Constant tensors by type name, e.g. {"float16": 120, "int32": 8}.
    constants: dict[str, int] = field(default_factory=dict)
    #: Every input dimension is fixed (no -1 in the shape signature), batch aside.
    static_input: bool = True


def inspect(data: bytes) -> TfliteFacts:
    """Name a TFLite file by what its tensors hold (see the module docstring)."""
    model = _model(data)
    types = _type_names()
    ops = _op_names(model)
    g = model.subgraphs[0]
    const: dict[str, int] = {}
    activation: dict[str, int] = {}
    for t in g.tensors or []:
        name = types.get(t.type, str(t.type))
        buf = model.buffers[t.buffer] if t.buffer < len(model.buffers or []) else None
        is_const = buf is not None and ((buf.data is not None and len(buf.data) > 0) or (buf.size or 0) > 0)
        if is_const:
            const[name] = const.get(name, 0) + 1
        else:
            activation[name] = activation.get(name, 0) + 1
    custom = tuple(sorted({o.split(":", 1)[1] for o in ops if o.startswith("custom:")}))
    n_in, n_out = len(g.inputs), len(g.outputs)
    static = all(all(int(d) >= 0 for d in list(g.tensors[i].shapeSignature)[1:])
                 for i in g.inputs if g.tensors[i].shapeSignature is not None)  # fmt: skip
    integer = {k: v for k, v in activation.items() if k in ("int8", "uint8", "int16")}
    floats = activation.get("float32", 0) + activation.get("float16", 0)
    if integer and sum(integer.values()) >= floats:  # a float model may cast a uint8 image input: not integer
        shown = ", ".join(f"{v} {k}" for k, v in sorted(integer.items()))
        return TfliteFacts(INT8, f"integer activations ({shown} tensors)", custom, n_in, n_out, const, static)
    if const.get("int8", 0) or const.get("uint8", 0):
        return TfliteFacts(DYNAMIC_INT8, f"{const.get('int8', 0) + const.get('uint8', 0)} int8 weight tensors, "
                           "float activations", custom, n_in, n_out, const, static)  # fmt: skip
    if const.get("float16", 0):
        return TfliteFacts(FP16, f"{const['float16']} float16 weight tensors", custom, n_in, n_out, const, static)
    return TfliteFacts(FP32, "float32 weights and activations", custom, n_in, n_out, const, static)


def constant_bytes(data: bytes) -> dict[str, int]:
    """Bytes of constant data by tensor type (``int8``, ``float32``, ...), over every subgraph."""
    model = _model(data)
    types = _type_names()
    out: dict[str, int] = {}
    seen: set[int] = set()
    for g in model.subgraphs:
        for t in g.tensors or []:
            if t.buffer in seen or t.buffer >= len(model.buffers or []):
                continue
            buf = model.buffers[t.buffer]
            n = len(buf.data) if buf.data is not None else int(buf.size or 0)
            if n:
                seen.add(t.buffer)
                name = types.get(t.type, str(t.type))
                out[name] = out.get(name, 0) + n
    return out


# size: a flatbuffer rewrite that must keep tensors, buffers and operators consistent in one pass
def dequantize_fp16(data: bytes) -> bytes:
    """An fp16-weight TFLite file as a real fp32 one (weights stored in float32, no DEQUANTIZE left).

    Every DEQUANTIZE op whose input is a constant float16 tensor (or a sparse one behind a
    DENSIFY op) is removed; its output tensor gets a float32 buffer with the same values, so
    every consumer reads it as before. Sparse weights are densified by LiteRT's own kernel
    (the interpreter, run once with every tensor kept), so this runs in the conversion sandbox.
    """
    schema = _schema()
    model = _model(data)
    ops = _op_names(model)
    g = model.subgraphs[0]

    def constant(i: int) -> bool:
        b = model.buffers[g.tensors[i].buffer]
        return b.data is not None and len(b.data) > 0

    producer = {int(o): op for op in g.operators or [] for o in op.outputs}
    folded: dict[int, np.ndarray | None] = {}  # DEQUANTIZE output tensor -> its float32 values (None: read them)
    drop: set[int] = set()
    for op in g.operators or []:
        if ops[op.opcodeIndex] != "DEQUANTIZE" or len(op.inputs) != 1:
            continue
        src = int(op.inputs[0])
        if g.tensors[src].type != schema.TensorType.FLOAT16:
            continue
        if constant(src):
            raw = bytes(np.asarray(model.buffers[g.tensors[src].buffer].data, dtype=np.uint8))
            folded[int(op.outputs[0])] = np.frombuffer(raw, dtype="<f2").astype("<f4")
            drop.add(id(op))
        elif src in producer and ops[producer[src].opcodeIndex] == "DENSIFY" and constant(int(producer[src].inputs[0])):
            folded[int(op.outputs[0])] = None
            drop.update({id(op), id(producer[src])})
    if not folded:
        return _finish(model, data)
    if any(v is None for v in folded.values()):
        from ai_edge_litert.interpreter import Interpreter

        from ai_edge_litert.interpreter import OpResolverType

        interp = Interpreter(model_content=data, experimental_preserve_all_tensors=True,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interp.allocate_tensors()
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
        interp.invoke()
        for t, v in folded.items():
            if v is None:
                folded[t] = np.ascontiguousarray(interp.get_tensor(t), dtype="<f4").reshape(-1)
    for t, values in folded.items():
        buf = schema.BufferT()
        buf.data = np.frombuffer(values.tobytes(), dtype=np.uint8)
        model.buffers.append(buf)
        g.tensors[t].buffer = len(model.buffers) - 1
        g.tensors[t].quantization = None
    g.operators = [op for op in g.operators if id(op) not in drop]
    # the fp16 (and sparse) buffers no op reads any more: drop their bytes
    used = {g.tensors[int(i)].buffer for op in g.operators for i in list(op.inputs) + list(op.outputs) if int(i) >= 0}
    for t in g.tensors:
        if t.buffer not in used and t.buffer < len(model.buffers) and t.type == schema.TensorType.FLOAT16:
            model.buffers[t.buffer].data = None
    return _finish(model, data)


def _finish(model, data: bytes) -> bytes:
    """Serialize, with what ai-edge-quantizer needs of a file: current opcodes and a signature.

    Files written with an old schema keep small builtin codes in ``deprecatedBuiltinCode`` only
    (the quantizer would read every op as ADD); a file with no SignatureDef gets ``serving_default``
    over the subgraph's inputs and outputs (the quantizer's calibration runs through it).
    """
    import flatbuffers

    schema = _schema()
    for code in model.operatorCodes:
        code.builtinCode = max(code.builtinCode, code.deprecatedBuiltinCode)
    if not model.signatureDefs:
        g = model.subgraphs[0]

        def tensor_map(i):
            m = schema.TensorMapT()
            name = g.tensors[i].name
            m.name = name.decode() if isinstance(name, bytes) else name
            m.tensorIndex = int(i)
            return m

        sig = schema.SignatureDefT()
        sig.signatureKey, sig.subgraphIndex = "serving_default", 0
        sig.inputs = [tensor_map(i) for i in g.inputs]
        sig.outputs = [tensor_map(i) for i in g.outputs]
        model.signatureDefs = [sig]
    builder = flatbuffers.Builder(max(1024, len(data) * 3))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def quantize(fp32: bytes, recipe: str, calibration: np.ndarray | None = None) -> bytes:
    """An fp32 TFLite file quantized by ai-edge-quantizer (no TensorFlow needed).

    ``recipe``: ``dynamic_wi8_afp32`` (int8 weights, float activations), ``static_wi8_ai8`` (full
    integer, calibrated on ``calibration``, float inputs and outputs kept so that the same data
    feeds every variant) or ``float16`` (fp16 weights of every op that has them).
    """
    import contextlib
    import io

    from ai_edge_quantizer import calibrator, qtyping, quantizer
    from ai_edge_quantizer import recipe as recipes

    fp32 = _finish(_model(fp32), fp32)  # the quantizer needs a signature and current opcodes
    qt = quantizer.Quantizer(bytearray(fp32))
    ops = qtyping.TFLOperationName
    if recipe == "float16":
        for op in (ops.FULLY_CONNECTED, ops.CONV_2D, ops.DEPTHWISE_CONV_2D, ops.CONV_2D_TRANSPOSE, ops.EMBEDDING_LOOKUP):
            qt.add_weight_only_config(regex=".*", operation_name=op, num_bits=16,
                                      algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING)  # fmt: skip
    else:
        qt.load_quantization_recipe(getattr(recipes, recipe)())
    calibration_result = None
    if recipe.startswith("static"):
        if calibration is None:
            raise ValueError(f"{recipe} needs a calibration set")
        for io_op in (ops.INPUT, ops.OUTPUT):
            qt.update_quantization_recipe(regex=".*", operation_name=io_op, algorithm_key=quantizer.AlgorithmName.NO_QUANTIZE)
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_content=fp32)
        key = next(iter(interp.get_signature_list()))
        inputs = interp.get_signature_runner(key).get_input_details()
        if len(inputs) != 1:
            raise ValueError(f"calibration feeds single-input models; this one has {len(inputs)} inputs")
        ((name, detail),) = inputs.items()
        samples = [{name: np.asarray(calibration[i : i + 1], dtype=detail["dtype"]).reshape(detail["shape"])}
                   for i in range(len(calibration))]  # fmt: skip
        with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
            calibration_result = qt.calibrate({key: samples}, num_threads=1,
                                              mode=calibrator.CalibrationMode.CALIBRATION_PROFILER_BASED)  # fmt: skip
    result = qt.quantize(calibration_result, enable_progress_bar=False, enable_progress_report=False)
    return bytes(result.quantized_model)

"""Conversion work. Runs only inside the sandboxed child (:mod:`controller.convert.child`).

One :class:`SourceModel` per request: it loads the source once (Keras with
``safe_mode=True``), settles a static input shape, and produces each variant's
bytes and the fp32 reference outputs. TensorFlow, OpenVINO and NNCF are
imported only when a step needs them.
"""

# size: one class per source kind (Keras, SavedModel, TFLite, ONNX, IR) with its converters; they share the shape checks

from __future__ import annotations

import contextlib
import io
import re
import tempfile
from pathlib import Path

import numpy as np

from controller.convert.accuracy import AccuracyKeeping
from controller.convert.common import ConversionError, _first_line, _tf, openvino_read_error  # noqa: F401 - engine's names
from controller.convert.sources import H5, KERAS, OPENVINO_IR, SAVEDMODEL, TFLITE
from controller.convert.variants import VARIANTS
from protocol.errors import ErrorKind
from protocol.packing import pack_files


def _static(shape, given: tuple[int, ...] | None, what: str) -> tuple[int, ...]:
    """A fully static input shape: the one given, else the model's with batch 1."""
    dims = [None if d is None or (isinstance(d, int) and d < 0) else int(d) for d in shape]
    if given:
        if len(given) != len(dims):
            raise ConversionError(ErrorKind.BAD_SHAPE, f"{what} input has rank {len(dims)} ({_fmt(dims)}) but the shape given is {_fmt(given)}")
        for g, d in zip(given[1:], dims[1:]):
            if d is not None and d != g:
                raise ConversionError(
                    ErrorKind.BAD_SHAPE, f"{what} input is {_fmt(dims)} but the shape given (or implied by the data set) is {_fmt(given)}"
                )
        return tuple(given)
    if dims and dims[0] is None:
        dims[0] = 1
    if any(d is None for d in dims):
        raise ConversionError(
            ErrorKind.BAD_SHAPE,
            f"{what} input has dynamic dimensions {_fmt(dims)}; give a static shape with --input-shape "
            "(e.g. 1,224,224,3) or a data set whose samples imply it",
        )
    return tuple(dims)


def _fmt(dims) -> str:
    return "(" + ",".join("?" if d is None else str(d) for d in dims) + ")"


_OP_PATTERNS = [
    re.compile(r"TF Select ops: ([\w, ]+)"),
    re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op"),
    re.compile(r"[Qq]uantization (?:is )?not (?:yet )?supported for op:? '?([\w.]+)"),
    re.compile(r"op '?([\w.]+)'? (?:is not supported|cannot be quantized)"),
]


def unsupported_ops(message: str) -> list[str]:
    """Op names a converter error complains about, in order, without repeats."""
    found: list[str] = []
    for pat in _OP_PATTERNS:
        for m in pat.finditer(message):
            for op in m.group(1).split(","):
                op = op.strip()
                if op and op not in found:
                    found.append(op)
    return found


def decompress_f16(model) -> int:
    """Replace f16 weight constants (Constant f16 -> Convert f32) by f32 constants; return how many.

    A TFLite or ONNX file with fp16 weights converts to an OpenVINO model that keeps them in f16:
    its ``openvino-fp32`` would store f16 weights, and NNCF would put FakeQuantize on f16 constants,
    so ``openvino-int8`` would store no int8 weight. After this the model is a true f32 model;
    ``openvino-fp16`` compresses it again when it is saved.
    """
    from openvino import opset13 as ops

    n = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Convert" or node.get_output_element_type(0).get_type_name() != "f32":
            continue
        src = node.input_value(0).get_node()
        if src.get_type_name() != "Constant" or src.get_output_element_type(0).get_type_name() != "f16":
            continue
        const = ops.constant(src.get_data().astype(np.float32))
        const.set_friendly_name(src.get_friendly_name())
        node.output(0).replace(const.output(0))
        n += 1
    if n:
        model.validate_nodes_and_infer_types()
    return n


class SourceModel(AccuracyKeeping):
    def __init__(self, kind: str, path: Path, name: str, input_shape: tuple[int, ...] | None, workdir: Path,
                 qat_source: str | None = None):  # fmt: skip
        #: Why the source counts as quantization-aware trained (a tf_keras .h5 of that kind loads as tf_keras).
        self.qat_source = qat_source
        #: What each variant's conversion found out (see :mod:`controller.convert.accuracy`).
        self.details: dict[str, dict] = {}
        self.kind = kind
        self.path = Path(path)
        self.name = name
        self.given_shape = tuple(input_shape) if input_shape else None
        self.workdir = Path(workdir)
        self._tf_fn = None
        self._ov_model = None
        self._fp32_tflite: bytes | None = None  # a TFLite source's fp32 form, made once for every derived variant
        self.input_shape: tuple[int, ...] | None = None
        self.input_dtype = "float32"

    # ------------------------------------------------------------ TensorFlow

    def _load_keras(self):
        import keras

        try:
            return keras.models.load_model(self.path, safe_mode=True, compile=False)
        except ValueError as exc:
            text = str(exc)
            if "safe_mode" in text or "arbitrary code" in text:
                raise ConversionError(
                    ErrorKind.UNSAFE_MODEL,
                    f"{self.path.name}: refused: {_first_line(exc)}. fleetbench loads Keras models with "
                    "safe_mode=True because a Lambda layer or other Python code in the file would run on this "
                    "machine. Replace it with built-in layers, or export a SavedModel, and convert that",
                ) from None
            raise ConversionError(ErrorKind.BAD_MODEL, f"{self.path.name}: not a loadable Keras model: {_first_line(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - h5py/zip errors on corrupt or truncated files
            raise ConversionError(
                ErrorKind.BAD_MODEL, f"{self.path.name}: corrupt or truncated Keras model ({type(exc).__name__}: {_first_line(exc)})"
            ) from None

    def tf_function(self):
        """(concrete function with a static input, object that owns its variables)."""
        if self._tf_fn is not None:
            return self._tf_fn
        if self.kind not in (KERAS, H5, SAVEDMODEL):
            raise ConversionError(ErrorKind.CONVERSION_FAILED, f"no TensorFlow graph in a {self.kind} source")
        tf = _tf()
        saved_dir = self.path
        if self.kind == H5 and self.qat_source:
            saved_dir = self._export_qat_h5()
        elif self.kind in (KERAS, H5):
            model = self._load_keras()
            if len(model.inputs) != 1:
                raise ConversionError(ErrorKind.BAD_MODEL, f"{self.path.name}: {len(model.inputs)} inputs; fleetbench converts single-input models")
            # Keras's own exporter; a tf.function around a Keras 3 model would leave its weights as
            # resource variables that the TFLite converter cannot freeze.
            saved_dir = self.workdir / "keras-export"
            with contextlib.redirect_stdout(io.StringIO()):
                model.export(str(saved_dir))
        try:
            loaded = tf.saved_model.load(str(saved_dir))
        except Exception as exc:  # noqa: BLE001
            raise ConversionError(ErrorKind.BAD_MODEL, f"{self.name}: not a loadable SavedModel: {_first_line(exc)}") from None
        sig = loaded.signatures.get("serving_default")
        if sig is None:
            raise ConversionError(ErrorKind.BAD_MODEL, f"{self.name}: the SavedModel has no 'serving_default' signature")
        _, kwargs = sig.structured_input_signature
        if len(kwargs) != 1:
            raise ConversionError(ErrorKind.BAD_MODEL, f"{self.name}: {len(kwargs)} inputs; fleetbench converts single-input models")
        ((arg, spec),) = kwargs.items()
        out_key = sorted(sig.structured_outputs)[0]
        self.input_shape = _static(spec.shape, self.given_shape, self.name)
        self.input_dtype = tf.as_dtype(spec.dtype).name
        fn = tf.function(lambda x: sig(**{arg: x})[out_key])
        concrete = fn.get_concrete_function(tf.TensorSpec(self.input_shape, spec.dtype))
        self._tf_fn = (concrete, loaded)
        return self._tf_fn

    def _export_qat_h5(self) -> Path:
        """A user's tf_keras QAT .h5 as a SavedModel, written by the tf_keras process (Keras 3 cannot read it)."""
        from controller.convert import qat

        layer = qat.h5_lambda(self.path)
        if layer and layer.startswith("(its config"):
            raise ConversionError(ErrorKind.UNSAFE_MODEL, f"{self.path.name}: refused: its model config could not be read, "
                                  "so nothing shows it holds no Python code (Lambda layers); export it again")  # fmt: skip
        if layer:
            raise ConversionError(ErrorKind.UNSAFE_MODEL, f"{self.path.name}: refused: layer '{layer}' is a Lambda layer, "
                                  "Python code that loading would run on this machine; replace it with built-in layers")  # fmt: skip
        out = self.workdir / "qat-export"
        out.mkdir(exist_ok=True)
        request = {"mode": "export", "path": str(self.path), "outdir": str(out),
                   "input_shape": list(self.given_shape) if self.given_shape else None}  # fmt: skip
        try:
            qat.run_legacy(request, self.workdir, lambda e: None)
        except qat.LegacyRefused as exc:
            raise ConversionError(ErrorKind.BAD_MODEL, f"{self.path.name}: {exc}") from None
        return out / "savedmodel"

    def static_savedmodel(self) -> Path:
        """The source as a SavedModel with one static-shape signature; both converters start here."""
        export_dir = self.workdir / "savedmodel-static"
        if not export_dir.exists():
            tf = _tf()
            concrete, owner = self.tf_function()
            module = tf.Module()
            module.owner = owner  # tracks the variables so they are saved (and frozen by the converters)
            tf.saved_model.save(module, str(export_dir), signatures=concrete)
        return export_dir

    def tflite(self, variant: str, calibration: np.ndarray | None, params: dict | None = None) -> bytes:
        params = VARIANTS[variant].params if params is None else params
        if "qat" in params or params.get("qat_source"):
            return self.qat_tflite(variant, params)
        if "mixed" in params:
            if calibration is None:
                raise ConversionError(ErrorKind.CONVERSION_FAILED, f"{variant} needs a calibration set: pass --data")
            return self.mixed_tflite(variant, params, calibration)
        if self.kind == TFLITE:
            return self._tflite_from_file(variant, params, calibration)
        tf = _tf()
        conv = tf.lite.TFLiteConverter.from_saved_model(str(self.static_savedmodel()))
        if "DEFAULT" in params.get("optimizations", []):
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if params.get("supported_types") == ["float16"]:
            conv.target_spec.supported_types = [tf.float16]
        int8 = params.get("io_type") == "int8"
        if int8:
            if calibration is None:
                raise ConversionError(ErrorKind.CONVERSION_FAILED, f"{variant} needs a calibration set: pass --data")
            cal = calibration.astype(np.float32)
            conv.representative_dataset = lambda: ([cal[i : i + 1]] for i in range(len(cal)))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                return conv.convert()
        except Exception as exc:  # noqa: BLE001 - the converter raises many types
            ops = unsupported_ops(str(exc))
            if ops:
                where = "TFLite int8 builtins (TFLITE_BUILTINS_INT8)" if int8 else "TFLite builtins"
                raise ConversionError(
                    ErrorKind.UNSUPPORTED_OP,
                    f"{variant}: op {', '.join(ops)} cannot be converted to {where}; replace it in the model "
                    "or use another variant",
                ) from None
            raise ConversionError(ErrorKind.CONVERSION_FAILED, f"{variant}: TFLite converter failed: {_first_line(exc, 500)}") from None

    def _tflite_from_file(self, variant: str, params: dict, calibration: np.ndarray | None) -> bytes:
        """A variant of a TFLite source: the file itself, its fp32 form, or that quantized by ai-edge-quantizer."""
        from controller.convert import tflite_tools

        data = self.path.read_bytes()
        if params.get("source"):
            return data
        try:
            if self._fp32_tflite is None:
                self._fp32_tflite = tflite_tools.dequantize_fp16(data)
            fp32 = self._fp32_tflite
        except Exception as exc:  # noqa: BLE001 - flatbuffers and the interpreter raise many types
            raise ConversionError(ErrorKind.CONVERSION_FAILED, f"{variant}: could not dequantize {self.path.name}'s fp16 weights: "
                                  f"{_first_line(exc)}") from None  # fmt: skip
        recipe = params.get("ai_edge_quantizer")
        if not recipe:
            return fp32
        if recipe.startswith("static") and calibration is None:
            raise ConversionError(ErrorKind.CONVERSION_FAILED, f"{variant} needs a calibration set: pass --data")
        try:
            return tflite_tools.quantize(fp32, recipe, calibration)
        except Exception as exc:  # noqa: BLE001
            text = str(exc)
            custom = re.search(r"unresolved custom op: (\w+)", text)
            if custom:
                raise ConversionError(
                    ErrorKind.UNSUPPORTED_OP,
                    f"{variant}: op {custom.group(1)} is a custom op that LiteRT's calibration cannot run, so "
                    "the file cannot be calibrated for full int8; tflite-dynamic-int8 needs no calibration",
                ) from None
            raise ConversionError(ErrorKind.CONVERSION_FAILED, f"{variant}: ai-edge-quantizer ({recipe}) failed: {_first_line(exc, 400)}") from None

    # ------------------------------------------------------------ OpenVINO

    def ov_model(self):
        if self._ov_model is not None:
            return self._ov_model
        import openvino as ov

        try:
            if self.kind in (KERAS, H5, SAVEDMODEL):
                model = ov.convert_model(str(self.static_savedmodel()), input=[list(self.input_shape)])
            elif self.kind == OPENVINO_IR:
                model = ov.Core().read_model(str(self.path))
            else:  # TFLITE, ONNX: OpenVINO reads both directly
                model = ov.convert_model(str(self.path))
        except ConversionError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ConversionError(ErrorKind.BAD_MODEL, f"{self.path.name}: {openvino_read_error(exc)}") from None
        decompress_f16(model)
        if len(model.inputs) != 1:
            raise ConversionError(ErrorKind.BAD_MODEL, f"{self.path.name}: {len(model.inputs)} inputs; fleetbench converts single-input models")
        pshape = model.inputs[0].get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in pshape]
        shape = _static(dims, self.given_shape, self.path.name)
        if pshape.is_dynamic or tuple(dims) != shape:
            model.reshape({model.inputs[0]: ov.PartialShape(list(shape))})
        self.input_shape = shape
        self.input_dtype = model.inputs[0].get_element_type().to_dtype().name
        self._ov_model = model
        return model

    def openvino(self, variant: str, calibration: np.ndarray | None, params: dict | None = None) -> bytes:
        import openvino as ov

        params = VARIANTS[variant].params if params is None else params
        if params.get("source") and self.kind == OPENVINO_IR:
            return pack_files({"model.xml": self.path, "model.bin": self.path.with_suffix(".bin")})
        if "qat" in params or params.get("qat_source"):
            model = self.qat_openvino(variant, params)
        elif params.get("nncf") == "accuracy_control":
            if calibration is None:
                raise ConversionError(ErrorKind.CONVERSION_FAILED, f"{variant} needs a calibration set: pass --data")
            model = self.ac_openvino(variant, params, calibration)
        else:
            model = self.ov_model()
        if params.get("nncf") == "quantize":
            if calibration is None:
                raise ConversionError(ErrorKind.CONVERSION_FAILED, f"{variant} needs a calibration set: pass --data")
            import nncf

            items = [calibration[i : i + 1] for i in range(len(calibration))]
            try:
                model = nncf.quantize(
                    model, nncf.Dataset(items), preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(items)
                )
            except Exception as exc:  # noqa: BLE001
                raise ConversionError(ErrorKind.CONVERSION_FAILED, f"{variant}: NNCF quantization failed: {_first_line(exc, 500)}") from None
        out = Path(tempfile.mkdtemp(dir=self.workdir)) / "model.xml"
        ov.save_model(model, str(out), compress_to_fp16=bool(params.get("compress_to_fp16")))
        if variant in self.details:  # an accuracy-keeping variant: its IR must hold int8 weights
            self._check_ir(variant, ov.Core().read_model(str(out)))
        return pack_files({"model.xml": out, "model.bin": out.with_suffix(".bin")})

    def _check_ir(self, variant: str, model) -> None:
        from controller.convert.quant import ir_int8_check

        check = ir_int8_check(model)
        self.details[variant]["ir_check"] = check
        if not check["int8_weights"]:
            raise ConversionError(ErrorKind.CONVERSION_FAILED, f"{variant}: the IR holds no int8 weight "
                                  f"({check['fake_quantize']} FakeQuantize ops were left unfolded)")  # fmt: skip

    # ------------------------------------------------------------ dispatch

    def convert(self, variant: str, calibration: np.ndarray | None, params: dict | None = None) -> bytes:
        family = VARIANTS[variant].family
        if family == "tflite":
            return self.tflite(variant, calibration, params)
        return self.openvino(variant, calibration, params)

    def settle_shape(self) -> None:
        """Load the source and fix its input shape (fails early on bad files and shapes)."""
        if self.kind in (KERAS, H5, SAVEDMODEL):
            self.tf_function()
        elif self.kind == TFLITE:
            from ai_edge_litert.interpreter import Interpreter

            try:
                interp = Interpreter(model_path=str(self.path))
            except (ValueError, RuntimeError) as exc:
                raise ConversionError(ErrorKind.BAD_MODEL, f"{self.path.name}: not a loadable TFLite model: {_first_line(exc)}") from None
            (inp,) = interp.get_input_details()
            self.input_shape = _static(list(inp["shape"]), self.given_shape, self.path.name)
            self.input_dtype = np.dtype(inp["dtype"]).name
        else:
            self.ov_model()

    def reference_outputs(self, x: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
        """fp32 outputs of the source model on ``x``, one sample at a time: every output's name and array.

        A Keras or SavedModel source runs in TensorFlow, a TFLite source in LiteRT's interpreter
        (fp16 weights are dequantized and computed in f32 on the CPU), anything else in OpenVINO
        with f32 inference precision.
        """
        per: list[list[np.ndarray]] = []
        if self.kind in (KERAS, H5, SAVEDMODEL):
            tf = _tf()
            concrete, _ = self.tf_function()
            names = ["output_0"]
            run = lambda xi: [np.asarray(concrete(tf.constant(xi)))]  # noqa: E731
        elif self.kind == TFLITE:
            from ai_edge_litert.interpreter import Interpreter

            interp = Interpreter(model_path=str(self.path))
            interp.allocate_tensors()
            (inp,), outs = interp.get_input_details(), interp.get_output_details()
            names = [o["name"] for o in outs]

            def run(xi):
                interp.set_tensor(inp["index"], xi.astype(inp["dtype"]))
                interp.invoke()
                return [interp.get_tensor(o["index"]).copy() for o in outs]
        else:
            import openvino as ov

            compiled = ov.Core().compile_model(self.ov_model(), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            request = compiled.create_infer_request()
            names = [p.get_any_name() if p.get_names() else f"output_{i}" for i, p in enumerate(compiled.outputs)]

            def run(xi):
                request.infer({0: xi})
                return [request.get_output_tensor(i).data.copy() for i in range(len(names))]
        for i in range(len(x)):
            outs_i = run(x[i : i + 1])
            if not per:
                per = [[] for _ in outs_i]
            for acc, o in zip(per, outs_i):
                acc.append(np.asarray(o))
        return names, [np.concatenate(p, axis=0).astype(np.float32) for p in per]

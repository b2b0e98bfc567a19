"""The accuracy-keeping variants of a source (issue 18), mixed into :class:`controller.convert.engine.SourceModel`.

- ``tflite-int8-qat`` / ``openvino-int8-qat``: fine-tuned with quantization-aware training in a tf_keras
  process of its own (:mod:`controller.convert.qat_child`), once for both; or, from a model a user trained
  with QAT, converted from its own fake-quant ranges;
- ``openvino-int8-ac``: NNCF's accuracy control; ``tflite-int8-mixed``: the worst layers kept in float.

What each finds out (epochs, layers kept in float, integer checks) goes into ``self.details[variant]``.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

from controller.convert import qat, quant
from protocol.errors import ErrorKind


class AccuracyKeeping:
    #: Set by the conversion child: the splits' files, and where progress events go.
    train_path: str | None = None
    calibration_path: str | None = None
    validation: tuple[np.ndarray, np.ndarray | None] | None = None
    emit = staticmethod(lambda **event: None)

    def _qat_dir(self, variant: str, params: dict) -> tuple[Path, dict]:
        """The fine-tuned model's files (``model.tflite``, ``savedmodel/``) and what the fine-tune reported: trained
        once per set of params for both QAT variants (a refusal is given to both without training again)."""
        from controller.convert.common import ConversionError

        key = json.dumps(params["qat"], sort_keys=True)
        done = self.__dict__.setdefault("_qat_done", {})
        if key in done:
            if isinstance(done[key], ConversionError):
                raise ConversionError(done[key].kind, f"{variant}: {done[key].message.split(': ', 1)[1]}")
            return done[key]
        if not self.train_path:
            raise ConversionError(ErrorKind.CONVERSION_FAILED, f"{variant} needs a labelled training split: pass --train-samples N")
        model = self._load_keras()
        import tempfile

        out = Path(tempfile.mkdtemp(prefix="qat-", dir=self.workdir))
        (out / "config.json").write_text(json.dumps({"class_name": type(model).__name__, "config": model.get_config()},
                                                    default=str), encoding="utf-8")  # fmt: skip
        arrays, names = {}, []
        for layer in model.layers:
            ws = [np.asarray(w) for w in layer.get_weights()]
            if ws:
                names.append([layer.name, len(ws)])
                arrays.update({f"{layer.name}/{i}": w for i, w in enumerate(ws)})
        np.savez(out / "weights.npz", __layers__=np.array(json.dumps(names)), **arrays)
        request = {"mode": "fine-tune", "qat": params["qat"], "config": str(out / "config.json"),
                   "weights": str(out / "weights.npz"), "train": self.train_path, "calibration": self.calibration_path,
                   "input_shape": list(self.input_shape), "outdir": str(out)}  # fmt: skip
        epochs = params["qat"]["epochs"]
        try:
            info = qat.run_legacy(request, out, lambda e: self.emit(
                event="progress", variant=variant, epoch=e["epoch"], epochs=epochs, loss=e["loss"], accuracy=e["accuracy"],
                note=f"epoch {e['epoch']}/{epochs}  loss {_num(e['loss'])}  accuracy {_num(e['accuracy'])}"))  # fmt: skip
        except qat.LegacyRefused as exc:
            done[key] = ConversionError(ErrorKind.UNSUPPORTED_OP, f"{variant}: {exc}")
            raise done[key] from None
        except RuntimeError as exc:  # the process crashed or was killed: one line, its log's last line in it
            done[key] = ConversionError(ErrorKind.CRASHED, f"{variant}: {exc}")
            raise done[key] from None
        done[key] = (out, info)
        return done[key]

    def qat_tflite(self, variant: str, params: dict) -> bytes:
        from controller.convert.common import ConversionError

        if params.get("qat_source"):
            data = self._tflite_from_fake_quant(variant)
        else:
            out, info = self._qat_dir(variant, params)
            if info.get("tflite_error"):
                raise ConversionError(ErrorKind.CONVERSION_FAILED, f"{variant}: {info['tflite_error']}")
            data = (out / "model.tflite").read_bytes()
            self.details[variant] = {"qat": {k: v for k, v in info.items() if k != "tflite_error"}}
        check = quant.tflite_integer_check(data)
        self.details.setdefault(variant, {})["integer_check"] = check
        if check["float_tensor_count"] or check["float_quantize_ops"]:
            named = ", ".join(check["float_quantize_ops"] or check["float_tensors"][:5])
            self.details[variant]["note"] = (f"{check['float_tensor_count']} float tensor(s) left ({named}); integer-only "
                                             "accelerators reject float QUANTIZE/DEQUANTIZE ops")  # fmt: skip
        if not _has_int8_weights(data):
            raise ConversionError(ErrorKind.CONVERSION_FAILED, f"{variant}: the converter kept no int8 weight; the "
                                  "model's fake-quant ranges were not used")  # fmt: skip
        return data

    def _tflite_from_fake_quant(self, variant: str) -> bytes:
        from controller.convert.common import ConversionError, _first_line, _tf

        tf = _tf()
        conv = tf.lite.TFLiteConverter.from_saved_model(str(self.static_savedmodel()))
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                return conv.convert()
        except Exception as exc:  # noqa: BLE001
            raise ConversionError(ErrorKind.CONVERSION_FAILED, f"{variant}: TFLite converter failed on the fake-quant "
                                  f"model: {_first_line(exc, 400)}") from None  # fmt: skip

    def qat_openvino(self, variant: str, params: dict):
        import openvino as ov

        from controller.convert.common import ConversionError, openvino_read_error

        if params.get("qat_source"):
            model = self.ov_model()
            self.details.setdefault(variant, {})
        else:
            out, info = self._qat_dir(variant, params)
            saved = out / "savedmodel"
            self.details[variant] = {"qat": {k: v for k, v in info.items() if k != "tflite_error"}}
            try:
                model = ov.convert_model(str(saved), input=[list(self.input_shape)])
            except Exception as exc:  # noqa: BLE001
                raise ConversionError(ErrorKind.CONVERSION_FAILED, f"{variant}: {openvino_read_error(exc)}") from None
        fq = sum(n.get_type_name() == "FakeQuantize" for n in model.get_ops())
        if not fq:
            raise ConversionError(ErrorKind.CONVERSION_FAILED, f"{variant}: OpenVINO found no fake-quant op in the model, "
                                  "so the IR would hold no int8 weight")  # fmt: skip
        return model

    def ac_openvino(self, variant: str, params: dict, calibration: np.ndarray):
        from controller.convert.common import ConversionError, _first_line

        if params.get("tune_on") == "train":
            if not self.train_path:
                raise ConversionError(ErrorKind.CONVERSION_FAILED, f"{variant} tunes on the training split, which is missing")
            with np.load(self.train_path, allow_pickle=False) as d:
                x, y, split = d["x"], d["y"], "training split"
        else:
            (x, y), split = self.validation or (None, None), "validation split"
        if y is None:
            raise ConversionError(ErrorKind.CONVERSION_FAILED, f"{variant} needs a labelled validation split: pass --data with labels")
        if y.ndim != 1 or (y.dtype.kind == "f" and not np.all(y == np.round(y))):
            raise ConversionError(ErrorKind.CONVERSION_FAILED, f"{variant} controls top-1 accuracy, and the labels are not "
                                  f"one class id per sample (shape {y.shape}, {y.dtype}); use openvino-int8 or "
                                  "tflite-int8-mixed for segmentation and regression models")  # fmt: skip
        try:
            model, details = quant.ac_model(self.ov_model(), calibration, x, y, float(params["max_drop"]))
            details["accuracy_control"]["tuned_on"] = split
        except Exception as exc:  # noqa: BLE001
            raise ConversionError(ErrorKind.CONVERSION_FAILED, f"{variant}: NNCF accuracy control failed: {_first_line(exc, 400)}") from None
        self.details[variant] = details
        return model

    def mixed_tflite(self, variant: str, params: dict, calibration: np.ndarray) -> bytes:
        from controller.convert.common import _tf

        target = params["mixed"]["fidelity_target_db"]
        _, refs = self.reference_outputs(calibration)
        note = lambda k, snr: self.emit(event="progress", variant=variant, note=f"{k} layer(s) in float: {snr:.1f} dB")  # noqa: E731
        model, details = quant.mixed_tflite(_tf(), str(self.static_savedmodel()), calibration, refs, float(target), note)
        self.details[variant] = details
        if not details["mixed"]["met"]:
            details["note"] = (f"the fidelity target {target:g} dB was not met even with {len(details['mixed']['float_layers'])} "
                               f"layer(s) in float ({details['mixed']['snr_db']:.1f} dB)")  # fmt: skip
        return model


REPORTABLE = ("tflite-int8", "openvino-int8")


def layer_report(src, variant: str, calibration: np.ndarray) -> list[dict]:
    """The per-layer quantization report of ``variant`` made from ``src`` (a SourceModel), worst first."""
    from controller.convert.common import ConversionError, _tf
    from controller.convert.sources import TFLITE

    if variant == "tflite-int8":
        if src.kind == TFLITE:
            raise ConversionError(ErrorKind.CONVERSION_FAILED, "the tflite-int8 report runs TensorFlow's "
                                  "QuantizationDebugger, which needs the TensorFlow model this .tflite came from; "
                                  "report openvino-int8 instead, or give the original model")  # fmt: skip
        return quant.tflite_layer_errors(_tf(), str(src.static_savedmodel()), calibration)
    if variant == "openvino-int8":
        import nncf

        fp32 = src.ov_model()
        items = [calibration[i : i + 1] for i in range(len(calibration))]
        int8 = nncf.quantize(fp32.clone(), nncf.Dataset(items), preset=nncf.QuantizationPreset.PERFORMANCE,
                             subset_size=len(items))  # fmt: skip
        return quant.openvino_layer_errors(fp32, int8, calibration)
    raise ConversionError(ErrorKind.CONVERSION_FAILED, f"no per-layer report for {variant}; one of {', '.join(REPORTABLE)}")


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _has_int8_weights(model: bytes) -> bool:
    from controller.convert import tflite_tools

    return any(k.lower() in ("int8", "int4", "uint8") for k in tflite_tools.constant_bytes(model))

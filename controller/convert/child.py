"""The sandboxed conversion process: ``python -m controller.convert.child REQUEST.json OUTDIR``.

It reports progress as JSON lines on a private copy of stdout; everything
else that writes to stdout (TensorFlow, NNCF progress bars) is sent to stderr
so it cannot corrupt the event stream. Resource limits are set by the parent
before exec (see :mod:`controller.convert.runner`).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

from protocol.errors import ErrorKind

_OOM_SIGNS = ("failed to map segment", "Cannot allocate memory", "bad_alloc", "out of memory")


def describe(exc: BaseException) -> tuple[str, str]:
    """(kind, message) for an unexpected error; running out of the memory limit says so."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError) or any(sign in text for sign in _OOM_SIGNS):
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        shown = "unlimited" if limit == resource.RLIM_INFINITY else f"{limit / 2**30:.1f} GiB"
        return ErrorKind.OUT_OF_MEMORY, (
            f"the conversion ran out of memory (address-space limit {shown}): {text.splitlines()[0]}. "
            "Raise the limit with --memory-limit-gb, or convert on a bigger converter worker"
        )
    return ErrorKind.CONVERSION_FAILED, text


# size: the sandboxed child's whole run: limits, the source, each variant, and the events it reports
def main(argv: list[str]) -> int:
    from controller.convert.common import event_stream

    emit = event_stream()
    req = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    outdir = Path(argv[1])
    import numpy as np

    from controller.convert.engine import ConversionError, SourceModel

    def load_x(path):
        if not path:
            return None
        with np.load(path, allow_pickle=False) as d:
            return d["x"]

    calibration = load_x(req.get("calibration"))
    validation = load_x(req.get("validation"))
    src = SourceModel(req["kind"], Path(req["path"]), req["name"], req.get("input_shape"), outdir,
                      qat_source=req.get("qat_source"))  # fmt: skip
    src.train_path, src.calibration_path, src.emit = req.get("train"), req.get("calibration"), emit
    if req.get("validation"):
        with np.load(req["validation"], allow_pickle=False) as d:
            src.validation = (d["x"], d["y"] if "y" in d.files else None)
    try:
        src.settle_shape()
        if validation is not None and tuple(validation.shape[1:]) != tuple(src.input_shape[1:]):
            raise ConversionError(
                ErrorKind.BAD_SHAPE,
                f"the data set's samples are {tuple(validation.shape[1:])} but the model input is "
                f"{tuple(src.input_shape)}; check the data set's layout (NHWC/NCHW) and size",
            )
    except ConversionError as exc:
        emit(event="fatal", kind=exc.kind, error=exc.message)
        return 0
    except Exception as exc:  # noqa: BLE001
        kind, message = describe(exc)
        emit(event="fatal", kind=kind, error=message)
        return 0
    emit(event="source", input_shape=list(src.input_shape), input_dtype=src.input_dtype)

    if validation is not None:
        try:
            names, refs = src.reference_outputs(validation)
            ref_path = outdir / "reference.npz"
            np.savez(ref_path, names=np.array(names, dtype=str), **{f"out_{i}": r for i, r in enumerate(refs)})
            emit(event="reference", file=str(ref_path))
        except Exception as exc:  # noqa: BLE001 - variants can still be made
            emit(event="reference-failed", error=f"{type(exc).__name__}: {exc}")

    if req.get("report"):
        _report(src, req["report"], calibration, emit)
    for variant in req["variants"]:
        emit(event="start", variant=variant)
        t0 = time.perf_counter()
        try:
            recipe = (req.get("recipes") or {}).get(variant)
            data = src.convert(variant, calibration, recipe["params"] if recipe else None)
        except ConversionError as exc:
            emit(event="failed", variant=variant, kind=exc.kind, error=exc.message)
            continue
        except Exception as exc:  # noqa: BLE001
            kind, message = describe(exc)
            tail = "" if kind == ErrorKind.OUT_OF_MEMORY else "\n" + traceback.format_exc(limit=3)
            emit(event="failed", variant=variant, kind=kind, error=f"{variant}: {message}{tail}")
            continue
        seconds = time.perf_counter() - t0
        out = outdir / f"{variant}.bin"
        out.write_bytes(data)
        emit(event="done", variant=variant, file=str(out), seconds=seconds, details=src.details.get(variant))
    emit(event="end")
    return 0


def _report(src, variant: str, calibration, emit) -> None:
    """The per-layer quantization report of ``variant`` (``fleetbench quant-report``), as one event."""
    from controller.convert.accuracy import layer_report
    from controller.convert.engine import ConversionError
    from controller.convert.quant import REPORT_LAYERS

    emit(event="start", variant=variant)
    try:
        rows = layer_report(src, variant, calibration)
    except ConversionError as exc:
        emit(event="report", variant=variant, error=exc.message)
        return
    except Exception as exc:  # noqa: BLE001
        emit(event="report", variant=variant, error=f"{variant}: {describe(exc)[1].splitlines()[0]}")
        return
    emit(event="report", variant=variant, layers=rows[:REPORT_LAYERS], total=len(rows), samples=int(len(calibration)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

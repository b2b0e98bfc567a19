"""Quantization-aware training: which sources were trained so, and the process that trains (issue 18).

:func:`evidence` reads a source without loading it and says whether it holds fake quantization: a tf_keras
QAT ``.h5`` (QuantizeWrapper layers), a SavedModel with FakeQuantWithMinMaxVars ops, an ONNX model with
QuantizeLinear/DequantizeLinear pairs. :func:`run_legacy` runs :mod:`controller.convert.qat_child` (tf_keras,
``TF_USE_LEGACY_KERAS=1``) from the conversion child, which already runs under the conversion's limits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from controller.convert.sources import H5, ONNX, SAVEDMODEL, Source

_FAKE_QUANT = (b"FakeQuantWithMinMaxVarsPerChannel", b"FakeQuantWithMinMaxVars", b"FakeQuantWithMinMaxArgs")


def evidence(source: Source) -> str | None:
    """Why the source counts as quantization-aware trained, or None."""
    path = source.path
    try:
        if source.kind == H5:
            return _h5_evidence(path)
        if source.kind == SAVEDMODEL:
            pb = path / "saved_model.pb"
            data = pb.read_bytes() if pb.is_file() else b""
            found = [op.decode() for op in _FAKE_QUANT if op in data]
            return f"{found[-1]} ops in the SavedModel" if found else None
        if source.kind == ONNX:
            data = path.read_bytes()
            if b"QuantizeLinear" in data and b"DequantizeLinear" in data:
                return "QuantizeLinear/DequantizeLinear (QDQ) nodes in the ONNX graph"
    except OSError:
        return None
    return None


def _h5_evidence(path: Path) -> str | None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError:
        return None
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    if "QuantizeWrapper" not in text and "QuantizeLayer" not in text:
        return None
    return "a tf_keras model with tfmot QuantizeWrapper layers"


def h5_lambda(path: Path) -> str | None:
    """The name of a Lambda layer in a tf_keras .h5 (Python code that loading would run), or None."""
    import h5py

    with h5py.File(path, "r") as f:
        raw = f.attrs.get("model_config")
    text = raw.decode() if isinstance(raw, bytes) else str(raw or "")

    def walk(node):
        if isinstance(node, dict):
            if node.get("class_name") == "Lambda":
                return (node.get("config") or {}).get("name", "lambda")
            return next((n for n in map(walk, node.values()) if n), None)
        if isinstance(node, list):
            return next((n for n in map(walk, node) if n), None)
        return None

    try:
        return walk(json.loads(text))
    except ValueError:
        return None


class LegacyRefused(Exception):
    """The QAT process refused the model; the message says which layer or what blocks it."""


def run_legacy(request: dict, workdir: Path, on_event: Callable[[dict], None]) -> dict:
    """Run :mod:`controller.convert.qat_child` on ``request``; forward its epoch events; return its result.

    The process inherits this one's resource limits; a crash or an exit without a result raises RuntimeError
    with its last output.
    """
    req_path = workdir / f"qat-{request['mode']}.json"
    req_path.write_text(json.dumps(request), encoding="utf-8")
    err_path = workdir / f"qat-{request['mode']}.stderr"
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    result = None
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "controller.convert.qat_child", str(req_path)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=env)  # fmt: skip
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "refused":
                proc.wait()
                raise LegacyRefused(event["error"])
            if event.get("event") == "done":
                result = {k: v for k, v in event.items() if k != "event"}
            else:
                on_event(event)
        code = proc.wait()
    if result is None:
        tail = err_path.read_bytes()[-800:].decode("utf-8", "replace").strip().splitlines()
        from protocol.proc import signal_name

        why = f"killed by {signal_name(code)}" if code < 0 else f"exited with code {code}"
        raise RuntimeError(f"the QAT process {why} before finishing: {tail[-1] if tail else 'no output'}")
    return result

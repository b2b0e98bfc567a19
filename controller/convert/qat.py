"""Quantization-aware training: which sources were trained so, and the process that trains (issue 18).

:func:`evidence` reads a source without loading it and says whether it holds fake quantization: a tf_keras
QAT ``.h5`` (QuantizeWrapper layers), a SavedModel with FakeQuantWithMinMaxVars ops, an ONNX model with
QuantizeLinear/DequantizeLinear nodes. :func:`run_legacy` runs :mod:`controller.convert.qat_child` (tf_keras,
``TF_USE_LEGACY_KERAS=1``) from the conversion child; it inherits the child's resource limits (each process
its own address-space limit).
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


#: ONNX ``op_type`` fields as protobuf writes them (field 4, its length, the name): exact names, so
#: ``DynamicQuantizeLinear`` is not taken for ``QuantizeLinear``.
_QDQ = (b'"\x0eQuantizeLinear', b'"\x10DequantizeLinear')
#: The most of a SavedModel's graph or an ONNX file read to look for fake-quant ops.
_SCAN_BYTES = 512 * 2**20


def evidence(source: Source) -> str | None:
    """Why the source counts as quantization-aware trained, or None. Reads bytes only; an ``.h5``'s config is
    read by h5py in a short-lived child with resource limits (:func:`_h5_facts`), never in this process."""
    path = source.path
    try:
        if source.kind == H5:
            facts = _h5_facts(path)
            return "a tf_keras model with tfmot QuantizeWrapper layers" if facts.get("qat") else None
        if source.kind == SAVEDMODEL:
            pb = path / "saved_model.pb"
            data = _head(pb) if pb.is_file() else b""
            found = [op.decode() for op in _FAKE_QUANT if op in data]
            return f"{found[-1]} ops in the SavedModel" if found else None
        if source.kind == ONNX:
            data = _head(path)
            if all(op in data for op in _QDQ):
                return "QuantizeLinear/DequantizeLinear (QDQ) nodes in the ONNX graph (quantized before: QAT or PTQ)"
    except OSError:
        return None
    return None


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(_SCAN_BYTES)


_H5_PROBE = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
import h5py
try:
    with h5py.File(sys.argv[1], "r") as f:
        raw = f.attrs.get("model_config")
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
except Exception:
    text = ""
def walk(node):
    if isinstance(node, dict):
        if node.get("class_name") == "Lambda" or node.get("function_type") == "lambda":
            return (node.get("config") or {}).get("name") or "(unnamed)"
        return next((n for n in map(walk, node.values()) if n), None)
    if isinstance(node, list):
        return next((n for n in map(walk, node) if n), None)
    return None
try:
    lam = walk(json.loads(text)) if text else None
except ValueError:
    lam = None
print(json.dumps({"qat": "QuantizeWrapper" in text or "QuantizeLayer" in text, "lambda": lam}))
"""


def _h5_facts(path: Path) -> dict:
    """``{"qat": bool, "lambda": name or None}`` of a Keras ``.h5``, read in a child (2 GiB, 60 s): an untrusted
    HDF5 file never reaches h5py in the controller. A child that fails says nothing (``{}``)."""
    try:
        r = subprocess.run([sys.executable, "-c", _H5_PROBE, str(path)], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)  # fmt: skip
        return json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout.strip() else {}
    except (subprocess.TimeoutExpired, ValueError, IndexError, OSError):
        return {}


def h5_lambda(path: Path) -> str | None:
    """A Lambda layer in a tf_keras .h5 (Python code that loading would run): its name, ``(unnamed)``, or None.
    A file whose config cannot be read counts as one: nothing proves it holds no code."""
    facts = _h5_facts(path)
    return facts.get("lambda") if facts else "(its config could not be read)"


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

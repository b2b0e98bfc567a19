"""TFLite external delegates, given by path in the agent config.

An external delegate is a shared library with the entry points
``tflite_plugin_create_delegate`` / ``tflite_plugin_destroy_delegate``: the
Edge TPU (``libedgetpu.so.1``), a vendor NPU or FPGA delegate, or the TFLite
GPU delegate (``libtensorflowlite_gpu_delegate.so``). Both LiteRT and
tflite-runtime load them with ``load_delegate(path, options)``.

The agent config's ``delegates`` key names them::

    "delegates": {
      "edgetpu": {"path": "libedgetpu.so.1", "options": {"device": "usb"},
                  "device_name": "Coral USB Accelerator"},
      "gpu": {"path": "/opt/tflite/libtensorflowlite_gpu_delegate.so"}
    }

Each entry becomes the capability ``litert:<name>`` and ``tflite:<name>``
(restrict with ``"runtimes": ["tflite"]``), offered only when the probe
really loads the library and applies it to the bundled probe model, in a
child process so a crashing vendor library cannot take the agent down.
``gpu`` is special: on LiteRT, ``litert:gpu`` is the CompiledModel GPU
accelerator, so a ``gpu`` delegate applies to tflite-runtime only, and
tflite-runtime looks for ``libtensorflowlite_gpu_delegate.so`` on the library
path when the config names none. The agent passes the config to its
benchmark children in ``$FLEETBENCH_DELEGATES`` (JSON).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from agent.errors import JobError
from protocol.errors import ErrorKind

ENV = "FLEETBENCH_DELEGATES"
PROBE_TIMEOUT_S = 60.0
#: tflite-runtime's ``tflite:gpu`` when the config names no ``gpu`` delegate.
DEFAULT_GPU_DELEGATE = "libtensorflowlite_gpu_delegate.so"
RUNTIMES = ("litert", "tflite")


def check_config(delegates: object) -> dict[str, dict]:
    """Validate the config's ``delegates`` value; raise ValueError naming the bad entry."""
    if not isinstance(delegates, dict):
        raise ValueError("'delegates' must be an object mapping a name to {\"path\": ..., \"options\": {...}}")
    out: dict[str, dict] = {}
    for name, entry in delegates.items():
        where = f"delegates.{name}"
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum() or name != name.lower():
            raise ValueError(f"{where}: a delegate name must be lower-case letters, digits, '-' or '_'")
        if name == "cpu":
            raise ValueError(f"{where}: 'cpu' is the plain interpreter; pick another name")
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"]:
            raise ValueError(f"{where}: needs \"path\", the delegate library (e.g. /usr/lib/libedgetpu.so.1)")
        unknown = set(entry) - {"path", "options", "device_name", "runtimes"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        options = entry.get("options", {})
        if not isinstance(options, dict):
            raise ValueError(f"{where}.options must be an object of strings")
        runtimes = entry.get("runtimes", list(RUNTIMES))
        if not isinstance(runtimes, list) or not set(runtimes) <= set(RUNTIMES):
            raise ValueError(f"{where}.runtimes must be a list out of {', '.join(RUNTIMES)}")
        out[name] = {
            "path": entry["path"],
            "options": {str(k): str(v) for k, v in options.items()},
            "device_name": str(entry.get("device_name") or f"{name} delegate ({Path(entry['path']).name})"),
            "runtimes": list(runtimes),
        }
    return out


def configured(runtime: str) -> dict[str, dict]:
    """The delegates this runtime should offer, from ``$FLEETBENCH_DELEGATES``."""
    raw = os.environ.get(ENV, "").strip()
    try:
        entries = check_config(json.loads(raw)) if raw else {}
    except (ValueError, json.JSONDecodeError) as exc:
        raise JobError(ErrorKind.BAD_CONFIG, f"${ENV} is not a valid delegates config: {exc}") from None
    mine = {n: e for n, e in entries.items() if runtime in e["runtimes"]}
    if runtime == "litert":
        mine.pop("gpu", None)  # litert:gpu is the CompiledModel GPU accelerator
    if runtime == "tflite" and "gpu" not in mine:
        mine["gpu"] = check_config({"gpu": {"path": DEFAULT_GPU_DELEGATE, "device_name": "GPU (TFLite GPU delegate)"}})["gpu"]
    return mine


def one_line(exc: BaseException) -> str:
    """A runtime's (often multi-line) error as one line without a trailing period."""
    return " ".join(str(exc).split()).rstrip(".") or type(exc).__name__


def load(load_delegate, name: str, entry: dict):
    """``load_delegate`` for one configured delegate, with an error that says what to do."""
    try:
        return load_delegate(entry["path"], entry["options"])
    except (ValueError, OSError, RuntimeError) as exc:
        raise JobError(
            ErrorKind.UNSUPPORTED_DEVICE,
            f"the '{name}' delegate could not be loaded from {entry['path']}: {one_line(exc)}. "
            "Check that the library is installed and on the library path (LD_LIBRARY_PATH), that its device is "
            "attached, and that its options are right",
        ) from None


def probe(runtime: str, name: str, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """(True, device name) if the delegate loads and runs the probe model, else (False, reason); in a child."""
    from agent.backends import probe_in_child

    result, problem, stderr = probe_in_child("agent.backends.delegates", [runtime, name], f"the '{name}' delegate probe", timeout_s)
    if result is None:
        tail = (stderr.strip().splitlines() or [""])[-1][:300] if stderr is not None else ""
        return False, f"{problem} {tail}".strip()
    return bool(result["ok"]), str(result["detail"])


def _probe_here(runtime: str, name: str) -> dict:
    import numpy as np

    from agent import backends
    from agent.backends.base import PROBE_MODEL

    try:
        backend = backends.create(runtime)
        backend.load(str(PROBE_MODEL), name, None)
        backend.prepare([np.ones(backend.input_specs()[0].shape, dtype=np.float32)])
        backend.run()
        if not np.all(np.isfinite(backend.outputs()[0])):
            return {"ok": False, "detail": f"the '{name}' delegate returned non-finite outputs on the probe model"}
        return {"ok": True, "detail": backend.device_name(name)}
    except JobError as exc:
        return {"ok": False, "detail": exc.message}
    except Exception as exc:  # noqa: BLE001 - any failure means the capability is not offered
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}


if __name__ == "__main__":
    print(json.dumps(_probe_here(sys.argv[1], sys.argv[2])), flush=True)

"""Runtime backends: one module each, registered in one table, imported lazily.

A backend module exposes ``Backend``, a class that satisfies :class:`agent.backends.base.Backend`
(probe, load, input_specs, prepare, run, outputs, output_names, precision, throughput_pool).
Backends never time themselves: :mod:`agent.measure` does.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import json
import subprocess
import sys
from agent.backends.base import PROBE_MODEL, Backend, Capability, TensorSpec, Unavailable  # noqa: F401 (the package's names)

#: runtime name -> module. Importing a module must not import its runtime;
#: that happens in ``probe``/``load`` so an agent without it still starts.
REGISTRY: dict[str, str] = {
    "litert": "agent.backends.litert",
    "openvino": "agent.backends.openvino",
    "tflite": "agent.backends.tflite",
}


@functools.lru_cache(maxsize=None)
def dist_version(*dists: str) -> str:
    """The version of the first of these installed distributions, or "unknown" (read once per process:
    the fork server reads it, every benchmark child inherits it)."""
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def probe_in_child(module: str, args: list[str], what: str, timeout_s: float) -> tuple[dict | None, str, str | None]:
    """Run a probe (``python -m module *args``, printing one JSON object) in a child process,
    so a crashing driver or vendor library cannot take the agent down.

    Returns ``(result, problem, stderr)``: the probe's JSON and its stderr; or ``result`` None with
    ``problem`` saying that ``what`` did not finish (``stderr`` None) or crashed (with its stderr).
    """
    try:
        r = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, f"{what} did not finish within {timeout_s:g} s", None
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        why = f"killed by signal {-r.returncode}" if r.returncode < 0 else f"exit code {r.returncode}"
        return None, f"{what} crashed ({why})", r.stderr
    return json.loads(lines[-1]), "", r.stderr


def run_in_child(module: str, request: dict, arrays: list, what: str, timeout_s: float) -> tuple[dict | None, str, str | None]:
    """:func:`probe_in_child` for a child that takes its work as files: ``request`` (JSON, with ``"inputs"`` set to
    an .npz of ``arrays`` as ``in_0``, ``in_1``, ...) in a private temporary folder, removed afterwards."""
    import tempfile
    from pathlib import Path

    import numpy as np

    with tempfile.TemporaryDirectory(prefix="fleetbench-child-") as tmp:
        inputs, path = Path(tmp) / "inputs.npz", Path(tmp) / "request.json"
        np.savez(inputs, **{f"in_{i}": a for i, a in enumerate(arrays)})
        path.write_text(json.dumps(dict(request, inputs=str(inputs))), encoding="utf-8")
        return probe_in_child(module, [str(path)], what, timeout_s)


def create(runtime: str):
    """Instantiate the backend for ``runtime`` (e.g. ``litert``)."""
    try:
        module_name = REGISTRY[runtime]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise Unavailable(f"unknown runtime '{runtime}'; this agent knows: {known}") from None
    return importlib.import_module(module_name).Backend()


def probe_all() -> tuple[list[Capability], dict[str, str]]:
    """Ask every registered runtime what it offers.

    Returns the capabilities found, and what is not offered with the reason:
    keyed by runtime when the runtime is missing, by capability when a runtime
    is there but one of its devices is not (e.g. ``litert:gpu``).
    """
    found: list[Capability] = []
    missing: dict[str, str] = {}
    for runtime in REGISTRY:
        backend = create(runtime)
        try:
            caps = backend.probe()
        except Unavailable as exc:
            missing[runtime] = str(exc)
            continue
        found.extend(caps)
        missing.update(getattr(backend, "unavailable", {}))
    return found, missing

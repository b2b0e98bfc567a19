"""Runtime backends: one module each, registered in one table, imported lazily.

A backend module exposes ``Backend``, a class with:

- ``probe() -> list[Capability]``: what this runtime can run on this host;
  raises :class:`Unavailable` with the reason when the runtime is missing;
- ``load(artifact_path, device, settings)``;
- ``input_specs() -> list[TensorSpec]``;
- ``prepare(inputs)``: bind input arrays once, reused by every ``run``;
- ``run()``: one inference on the prepared inputs;
- ``outputs() -> list[np.ndarray]``.

Backends never time themselves: :mod:`agent.measure` does.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from protocol import CapabilityInfo as Capability

#: runtime name -> module. Importing a module must not import its runtime;
#: that happens in ``probe``/``load`` so an agent without it still starts.
REGISTRY: dict[str, str] = {
    "litert": "agent.backends.litert",
    "openvino": "agent.backends.openvino",
    "tflite": "agent.backends.tflite",
}


class Unavailable(Exception):
    """A runtime or device is not usable here; the message says why and how to enable it."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str


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

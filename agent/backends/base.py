"""What a runtime backend is: the :class:`Backend` protocol, its tensor spec, and the probe model.

Each backend module (``agent/backends/<runtime>.py``) defines a class ``Backend`` that satisfies
:class:`Backend` below; :data:`agent.backends.REGISTRY` names the module. docs/adding-a-backend.md
walks through adding one. tests/test_architecture.py checks every registered backend against this.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from protocol import CapabilityInfo as Capability

#: Inferences a backend's profile runs before it counts (the warm-up of the profile phase).
PROFILE_WARMUP = 10

#: A tiny real TFLite model every backend can load (OpenVINO reads TFLite directly): probes apply a
#: device or delegate to it, so a capability is offered only when it really runs.
PROBE_MODEL = Path(__file__).parent / "data" / "probe.tflite"


class Unavailable(Exception):
    """A runtime or device is not usable here; the message says why and how to enable it."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str


@runtime_checkable
class Backend(Protocol):
    """One runtime. Importing its module must not import the runtime: that happens in ``probe``/``load``,
    so an agent without it still starts. Backends never time themselves: :mod:`agent.measure` does."""

    #: the runtime's name, the part of a capability before the colon (``litert`` in ``litert:cpu``)
    runtime: str
    #: capability -> why it is not offered, filled by :meth:`probe`
    unavailable: dict[str, str]

    @property
    def version(self) -> str:
        """The installed runtime's version ("unknown" when it cannot be read)."""
        ...

    def probe(self) -> list[Capability]:
        """What this runtime can run on this host; raises :class:`Unavailable` when the runtime is missing."""
        ...

    def device_name(self, device: str) -> str:
        """The device's own name for records (e.g. the CPU model, the GPU's name)."""
        ...

    def load(self, artifact_path: str, device: str, settings: Any, *, f32: bool = False) -> None:
        """Load and compile the model for ``device``; a :class:`agent.errors.JobError` when it cannot."""
        ...

    def input_specs(self) -> list[TensorSpec]: ...

    def prepare(self, inputs: list[np.ndarray]) -> None:
        """Bind input arrays once; every :meth:`run` reuses them."""
        ...

    def run(self) -> None:
        """One inference on the prepared inputs."""
        ...

    def outputs(self) -> list[np.ndarray]: ...

    def output_names(self) -> list[str]:
        """The outputs' names, in the order of :meth:`outputs`."""
        ...

    def precision(self) -> tuple[str, dict[str, int]]:
        """The precision that ran (e.g. ``INT8``) and the count of ops or layers per precision."""
        ...

    def throughput_pool(self, n: int, inputs: list[np.ndarray]) -> Any:
        """``n`` requests in flight for the throughput phase: an object with ``run(stop) -> completed``."""
        ...

    def profile(self, runs: int, timeout_s: float) -> Any:
        """The profile phase (a :class:`protocol.Profile`): ``runs`` inferences on the prepared inputs with the
        runtime's own per-node counters, where each node ran, and its precision. The times are the runtime's,
        never the agent's clock; where the runtime gives none, the profile says so. Within ``timeout_s``."""
        ...

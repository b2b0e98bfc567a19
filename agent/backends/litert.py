"""LiteRT (``ai_edge_litert``) backend: the interpreter on the CPU with XNNPACK.

Capability ``litert:cpu``. The GPU accelerator (``litert:gpu``) and external
delegates arrive with the agent issue; they are not offered here yet.
"""

from __future__ import annotations

import importlib.metadata

import numpy as np

from agent.backends import Capability, TensorSpec, Unavailable
from agent.errors import JobError
from agent.host import host_facts


def _version() -> str:
    try:
        return importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Backend:
    runtime = "litert"

    def __init__(self) -> None:
        self._interp = None
        self._inputs: list[dict] = []
        self._outputs: list[dict] = []

    @property
    def version(self) -> str:
        return _version()

    def probe(self) -> list[Capability]:
        try:
            from ai_edge_litert.interpreter import Interpreter  # noqa: F401
        except ImportError as exc:
            raise Unavailable(
                f"ai-edge-litert is not importable ({exc}); install it with "
                "`pip install 'fleetbench[agent]'` or `pip install ai-edge-litert`"
            ) from None
        return [
            Capability(
                name="litert:cpu",
                runtime=self.runtime,
                runtime_version=_version(),
                device="cpu",
                device_name=host_facts().cpu_model,
            )
        ]

    def device_name(self, device: str) -> str:
        return host_facts().cpu_model

    def load(self, artifact_path: str, device: str, settings) -> None:
        if device != "cpu":
            raise JobError(
                "unsupported-device",
                f"litert has no device '{device}' on this agent; it offers litert:cpu",
            )
        from ai_edge_litert.interpreter import Interpreter

        threads = settings.threads if settings.threads > 0 else None
        try:
            interp = Interpreter(model_path=str(artifact_path), num_threads=threads)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise JobError(
                "load-failed",
                f"LiteRT could not load {artifact_path}: {exc}. "
                "The file is not a valid TFLite model, or uses ops this LiteRT build lacks; "
                "re-convert it with `fleetbench convert`",
            ) from None
        self._interp = interp
        self._inputs = interp.get_input_details()
        self._outputs = interp.get_output_details()

    def input_specs(self) -> list[TensorSpec]:
        return [
            TensorSpec(d["name"], tuple(int(v) for v in d["shape"]), np.dtype(d["dtype"]).name)
            for d in self._inputs
        ]

    def prepare(self, inputs: list[np.ndarray]) -> None:
        if len(inputs) != len(self._inputs):
            raise JobError("bad-dataset", f"model has {len(self._inputs)} inputs, got {len(inputs)}")
        for detail, array in zip(self._inputs, inputs):
            array = quantize(array, detail)
            self._interp.set_tensor(detail["index"], np.ascontiguousarray(array.reshape(detail["shape"])))

    def run(self) -> None:
        self._interp.invoke()

    def outputs(self) -> list[np.ndarray]:
        return [dequantize(self._interp.get_tensor(d["index"]), d) for d in self._outputs]


def quantize(array: np.ndarray, detail: dict) -> np.ndarray:
    """Float data into an integer (int8/uint8) input with the model's own scale and zero point."""
    want = np.dtype(detail["dtype"])
    if array.dtype == want:
        return array
    if want.kind in "iu" and array.dtype.kind == "f":
        scale, zero_point = detail.get("quantization", (0.0, 0))
        if not scale:
            raise JobError("bad-dataset", f"input '{detail['name']}' is {want.name} without quantization parameters")
        info = np.iinfo(want)
        q = np.round(array.astype(np.float32) / np.float32(scale)) + zero_point
        return np.clip(q, info.min, info.max).astype(want)
    return array.astype(want)


def dequantize(array: np.ndarray, detail: dict) -> np.ndarray:
    """An integer output back to float with its scale and zero point; float outputs unchanged."""
    if array.dtype.kind not in "iu":
        return array
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if not scale:
        return array
    return (array.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)

"""tflite-runtime (``tflite_runtime.interpreter``) backend.

The fallback on boards where LiteRT has no wheel (older ARM Python builds).
Same interpreter API as LiteRT's, so it reuses :class:`litert.Backend` with
the module swapped:

- ``tflite:cpu``: the interpreter with XNNPACK and a thread count;
- ``tflite:gpu``: the TFLite GPU delegate library through ``load_delegate``
  (``libtensorflowlite_gpu_delegate.so`` on the library path, or the path the
  agent config's ``delegates.gpu`` names), offered only when the probe really
  applies it to the bundled probe model;
- ``tflite:<name>``: any other external delegate in the agent config.

tflite-runtime's last wheels (2.14, and the 2.20 nightlies) are built against
numpy 1.x: install ``numpy<2`` beside them.
"""

from __future__ import annotations

from agent.backends import Capability, dist_version
from agent.backends import litert


def _version() -> str:
    return dist_version("tflite-runtime", "tflite-runtime-nightly")


class Backend(litert.Backend):
    runtime = "tflite"
    interpreter_module = "tflite_runtime.interpreter"
    install_hint = "install it with `pip install tflite-runtime 'numpy<2'` (or tflite-runtime-nightly)"

    @property
    def version(self) -> str:
        return _version()

    def _accelerator_caps(self) -> list[Capability]:
        return []  # tflite:gpu is the GPU delegate, probed with the other delegates

    def _no_op_time(self) -> str:
        return "tflite-runtime's Python API has no profiler (LiteRT's C API profiler is ai-edge-litert's)"

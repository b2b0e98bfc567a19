"""Sweeps: models x variants x capability selectors x settings, expanded into
jobs whose states live in the SQL store, and the scheduler that moves them.

A spec (YAML or JSON)::

    name: nightly-digits
    models:
      - path: digits.keras          # converted first (cached by content)
        data: digits.npz            # optional: validation data for accuracy
      - id: digits-cnn              # or a stored model: its stored variants
    variants: [tflite-fp32, tflite-int8, openvino-fp32]   # default: all
    devices: ["litert:*", "openvino:CPU", "agent:pi-07"]  # default: ["*"]
    settings:                        # a value, or a list to sweep over
      threads: [1, 2]
      scenario: [single-stream, Server]
      target_qps: 200
      min_duration_s: 1.0
    expire_after: 10m               # how long a job waits for a device
    max_attempts: 3                 # crashes, time-outs, lost agents

A selector is a capability (``openvino:MYRIAD``: its jobs wait for such a
device), a glob over the capabilities the fleet has shown (``openvino:*``,
``*:cpu``), or ``agent:<id>`` (every capability of that agent, pinned to it).

The package: ``spec.py`` parses a spec, ``targets.py`` expands its selectors, ``prepare.py`` makes its
models' variants ready, ``scheduler.py`` runs it.
"""

from controller.sweeps.prepare import prepare_models
from controller.sweeps.scheduler import CONFIRM_ABOVE, ModelVariants, Scheduler, finished, http_artifact_ref, summary
from controller.sweeps.spec import (
    BASE_DIR_KEY,
    DATA_SHA256,
    DEFAULT_EXPIRE_S,
    SCENARIOS,
    SETTING_ALIASES,
    ModelEntry,
    SweepError,
    SweepSpec,
    parse_duration,
    parse_spec,
    spec_from_dict,
    spec_of_sweep,
)
from controller.sweeps.targets import FAMILY_RUNTIMES, expand_targets

__all__ = [
    "BASE_DIR_KEY",
    "CONFIRM_ABOVE",
    "DATA_SHA256",
    "DEFAULT_EXPIRE_S",
    "FAMILY_RUNTIMES",
    "ModelEntry",
    "ModelVariants",
    "SCENARIOS",
    "SETTING_ALIASES",
    "Scheduler",
    "SweepError",
    "SweepSpec",
    "expand_targets",
    "finished",
    "http_artifact_ref",
    "parse_duration",
    "parse_spec",
    "prepare_models",
    "spec_from_dict",
    "spec_of_sweep",
    "summary",
]

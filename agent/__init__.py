"""The fleetbench agent: runs benchmark jobs on an edge device.

Imports nothing from ``controller`` or ``dashboard``. Needs numpy, a runtime
(LiteRT, tflite-runtime or OpenVINO) and, to serve a broker, Celery.
"""

import sys as _sys

# OpenVINO sends a telemetry event over HTTP on import (openvino_telemetry, from a thread pool)
# unless that package cannot be imported. Agents run in air-gapped labs, and a fork server that
# forks beside that thread can leave a job's child deadlocked before it runs. The stub OpenVINO
# and NNCF fall back to sends nothing.
_sys.modules.setdefault("openvino_telemetry", None)

"""The fleetbench agent: runs benchmark jobs on an edge device.

Imports nothing from ``controller`` or ``dashboard``. Needs numpy, a runtime
(LiteRT, tflite-runtime or OpenVINO) and, to serve a broker, Celery.
"""

from protocol.proc import telemetry_off as _telemetry_off

# No OpenVINO/NNCF telemetry from an agent: they run in air-gapped labs (see protocol/proc.py).
_telemetry_off()

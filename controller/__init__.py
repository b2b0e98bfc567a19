"""The fleetbench controller: converts models, dispatches jobs, stores records."""

from protocol.proc import telemetry_off as _telemetry_off

# No OpenVINO/NNCF telemetry from the controller either (see protocol/proc.py).
_telemetry_off()

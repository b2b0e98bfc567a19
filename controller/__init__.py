"""The fleetbench controller: converts models, dispatches jobs, stores records."""

import sys as _sys

# No OpenVINO/NNCF telemetry: nothing calls home (see agent/__init__.py).
_sys.modules.setdefault("openvino_telemetry", None)

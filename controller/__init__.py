"""The fleetbench controller: converts models, dispatches jobs, stores records."""

# No OpenVINO/NNCF telemetry: importing the agent package turns it off (see agent/__init__.py).
import agent  # noqa: E402,F401

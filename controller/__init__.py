"""The fleetbench controller: converts models, dispatches jobs, stores records."""

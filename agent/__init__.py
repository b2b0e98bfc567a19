"""The fleetbench agent: runs benchmark jobs on an edge device.

Imports nothing from ``controller`` or ``dashboard``. Needs numpy, a runtime
(LiteRT, tflite-runtime or OpenVINO) and, to serve a broker, Celery.
"""

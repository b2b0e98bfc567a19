"""Conversion and quantization of a source model into deployable variants."""

"""Where a variant's bytes go: why an int8 file is not a quarter of the fp32 one.

An int8 variant stores int8 weights, but also float scales and biases, the layers a quantizer left in
float, and (OpenVINO) the IR's XML. Past :data:`INT8_RATIO_TARGET` of the fp32 file the conversion table
and bench/zoo.py say which of these weighs what.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

#: An int8 file above this share of the fp32 file gets a reason.
INT8_RATIO_TARGET = 0.35

_IR_CONST = re.compile(r'<data element_type="(\w+)" shape="[^"]*" offset="\d+" size="(\d+)"')


def breakdown(path: Path) -> dict[str, int]:
    """Bytes by what holds them: constant element types (``i8``, ``f32``, ...) and ``xml`` for an IR."""
    data = Path(path).read_bytes()
    if data[4:8] == b"TFL3":
        from controller.convert.tflite_tools import constant_bytes

        return constant_bytes(data)
    with tarfile.open(path) as tar:
        xml = tar.extractfile("model.xml").read().decode("utf-8", "replace")
    out: dict[str, int] = {}
    for kind, size in _IR_CONST.findall(xml):
        out[kind] = out.get(kind, 0) + int(size)
    out["xml"] = len(xml.encode())
    return out


def int8_reason(variant: str, size: int, fp32_size: int | None, path: Path) -> str | None:
    """Why an int8 variant is over the target share of the fp32 file, or None when it is not (or not int8)."""
    if not variant.endswith("int8") or not fp32_size or size / fp32_size <= INT8_RATIO_TARGET:
        return None
    try:
        parts = breakdown(path)
    except Exception:  # noqa: BLE001 - a file that cannot be read back gets no reason, never an error
        return None
    kib = lambda n: f"{n / 1024:,.0f} KiB"  # noqa: E731
    int8 = sum(v for k, v in parts.items() if k in ("i8", "u8", "int8", "uint8", "i4", "u4"))
    floats = sum(v for k, v in parts.items() if k in ("f32", "f16", "float32", "float16"))
    text = f"{size / fp32_size:.2f}x fp32: {kib(int8)} of int8 weights, {kib(floats)} of float constants " \
           "(scales, biases, layers left in float)"
    if parts.get("xml"):
        text += f", {kib(parts['xml'])} of IR XML"
    return text

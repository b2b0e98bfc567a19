"""What the conversion child's modules share: the error they raise, TensorFlow imported quietly, and one line
on why OpenVINO cannot read a model."""

from __future__ import annotations

import json
import os
import re
from typing import Callable

from protocol.errors import ErrorKind


def event_stream() -> Callable[..., None]:
    """``emit(**event)``: JSON lines on a private copy of stdout. Everything else that writes to stdout
    (TensorFlow, NNCF's progress bars) goes to stderr from here on, so it cannot corrupt the events."""
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)

    def emit(**event) -> None:
        events.write(json.dumps(event) + "\n")
        events.flush()

    return emit


class ConversionError(Exception):
    """``kind`` is an :class:`~protocol.errors.ErrorKind`: unsafe-model, bad-model, bad-shape, unsupported-op,
    conversion-failed (kept as its string value, which is what the conversion's events carry)."""

    def __init__(self, kind: ErrorKind | str, message: str):
        super().__init__(message)
        self.kind = ErrorKind.parse(kind).value
        self.message = message


def _tf():
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


def openvino_read_error(exc: BaseException) -> str:
    """One line on why OpenVINO cannot read a model, naming the op where it says which.

    OpenVINO's messages start with ``Exception from src/...cpp:221:`` lines; the cause follows.
    """
    from protocol.errors import ov_error_line

    text = str(exc)
    ops = re.findall(r"(?:operation|[Oo]p(?:eration)? type|[Cc]ustom op(?:eration)?)[^\n]*?['\"]?(\w{3,})['\"]?\s*(?:is not supported|not supported|cannot be)", text)
    ops += re.findall(r"No conversion rule found for operations?:?\s*([\w, ]+)", text)
    ops += re.findall(r"CUSTOM \(([\w]+)\)", text)
    ops += re.findall(r"No translator found for (\w+) node", text)
    line = ov_error_line(exc)
    if line.startswith("Check ") and " failed at " in line:  # the check's own text; the cause is on a later line
        rest = [ln.strip() for ln in text.splitlines()[1:] if ln.strip() and not ln.strip().startswith("FrontEnd API failed")]
        line = rest[-1] if rest else line
    named = sorted({o.strip() for group in ops for o in group.split(",") if o.strip()})
    if named:
        return f"op {', '.join(named)}: a custom or unsupported op OpenVINO cannot read; LiteRT may still run this model"
    return f"OpenVINO cannot read it: {line[:500]}"

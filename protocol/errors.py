"""The only list of error kinds: what a failed job or conversion can end with.

A kind is machine-readable and travels as its string value (``JobOutcome.error_kind``,
the jobs table's ``error_kind`` column, a conversion's events). ``retryable`` says
whether the controller sends the job again (up to its ``max_attempts``) or stops at
once: a retry helps only when the failure was the machine's, not the job's.
docs/architecture.md lists these kinds; tests/test_architecture.py checks the list.
"""

from __future__ import annotations

import enum


class ErrorKind(str, enum.Enum):
    """An error kind, with ``retryable`` and a one-line ``meaning``."""

    def __new__(cls, value: str, retryable: bool, meaning: str):
        member = str.__new__(cls, value)
        member._value_ = value
        member.retryable = retryable
        member.meaning = meaning
        return member

    def __str__(self) -> str:
        return self.value

    # The job and its inputs: sending it again gives the same answer.
    BAD_SPEC = ("bad-spec", False, "the job message is malformed or its settings are out of range")
    BAD_ARTIFACT = (
        "bad-artifact",
        False,
        "the model file is missing, outside the file roots, or not what its sha256 says",
    )
    BAD_CONFIG = ("bad-config", False, "the agent's configuration is wrong for this job")
    BAD_DATASET = ("bad-dataset", False, "the data set does not fit the model or is not a valid data set")
    UNSUPPORTED_DEVICE = ("unsupported-device", False, "the agent has no such device or runtime")
    UNSUPPORTED_SETTING = ("unsupported-setting", False, "the runtime cannot run the job's settings")
    LOAD_FAILED = ("load-failed", False, "the runtime could not load or compile the model")
    INFERENCE_FAILED = ("inference-failed", False, "the runtime loaded the model but an inference failed")
    SUPERSEDED = ("superseded", False, "a newer attempt of the job was sent; this one was not run")
    # The machine: another attempt (on another agent) may well succeed.
    FETCH_FAILED = ("fetch-failed", True, "the agent could not download the model file")
    CRASHED = ("crashed", True, "the benchmark process died (a signal, or it exited without a result)")
    TIMEOUT = ("timeout", True, "the job ran past its time limit")
    INTERNAL = ("internal", True, "an unexpected error in fleetbench itself")
    AGENT_LOST = ("agent-lost", True, "the agent running the job stopped sending heartbeats")
    BAD_RESULT = ("bad-result", True, "the agent's result broke the record contract; it was set aside")
    DEVICE_BUSY = ("device-busy", True, "other work was using the device's CPU and the agent refuses busy devices")
    # Conversion, before any job runs.
    UNSAFE_MODEL = ("unsafe-model", False, "the Keras file needs code to load (a Lambda or custom layer); refused")
    BAD_MODEL = ("bad-model", False, "the model file is corrupt, truncated or of a shape fleetbench cannot convert")
    BAD_SHAPE = ("bad-shape", False, "the input shape given does not fit the model's input")
    UNSUPPORTED_OP = ("unsupported-op", False, "the converter has no kernel for one of the model's ops")
    OUT_OF_MEMORY = ("out-of-memory", False, "the conversion ran past its memory limit")
    CONVERSION_FAILED = ("conversion-failed", False, "the variant could not be converted or quantized")

    @classmethod
    def parse(cls, kind: "str | ErrorKind") -> "ErrorKind":
        """The member for ``kind``; ValueError naming the known kinds for an unknown one."""
        try:
            return cls(kind)
        except ValueError:
            raise ValueError(f"unknown error kind {kind!r}; known: {', '.join(k.value for k in cls)}") from None


def is_retryable(kind: "str | ErrorKind | None") -> bool:
    """Whether a job that failed with ``kind`` is sent again; an unknown kind (a newer agent's) is not."""
    try:
        return kind is not None and ErrorKind(kind).retryable
    except ValueError:
        return False


def ov_error_line(exc: BaseException) -> str:
    """The informative line of an OpenVINO error (they start with 'Exception from <file>:<line>:' lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith("Exception from ")]
    return lines[0] if lines else type(exc).__name__

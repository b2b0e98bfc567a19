"""Errors a benchmark job can end with. Each says what happened and what to do."""

from __future__ import annotations


class JobError(Exception):
    """A job failed for a reason the user can act on.

    ``kind`` is machine-readable: bad-spec, bad-artifact, unsupported-device,
    load-failed, inference-failed, bad-dataset, crashed, timeout, internal.
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message

"""Errors a benchmark job can end with. Each says what happened and what to do."""

from __future__ import annotations

from protocol.errors import ErrorKind


class JobError(Exception):
    """A job failed for a reason the user can act on.

    ``kind`` is an :class:`~protocol.errors.ErrorKind` (kept as its string value, which is
    what travels); an unknown kind is a ValueError, so a typo cannot reach a record.
    """

    def __init__(self, kind: ErrorKind | str, message: str):
        super().__init__(message)
        self.kind = ErrorKind.parse(kind).value
        self.message = message

"""The API's one shape of error (``Problem``), and messages scrubbed of this machine's paths."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import HTTPException
from pydantic import BaseModel

#: on an answer given before the request's body was read to its end: the connection cannot carry another request
CLOSE = {"Connection": "close"}


class Problem(BaseModel):
    detail: str


def _err(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


#: an absolute path of two parts or more (``/srv/fb/run/tmpab12/x.npz``): only its last part is shown (not a
#: URL's path, nor one of this API's routes)
_ABS_PATH = re.compile(r"(?<![\w.:/])(?!/api/)(?:/[^\s/'\"`(),;]+)+/([^\s/'\"`(),;]+)")
_UNDER = re.compile(r"(?:/[^\s/'\"`(),;]+)*/([^\s/'\"`(),;]+)")


def _scrub(text: str, *paths) -> str:
    """``text`` (an exception's message, for a client) without this machine's paths: each of ``paths``, and
    any other absolute path, becomes its file's base name."""
    for p in sorted((str(p) for p in paths if p), key=len, reverse=True):
        text = re.sub(re.escape(p) + _UNDER.pattern, r"\1", text)  # a file under it (its parts may hold spaces)
        text = text.replace(p, Path(p).name)
    return _ABS_PATH.sub(r"\1", text)

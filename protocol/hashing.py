"""Content hashing shared by the controller's store and the agent's verifier."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_CHUNK = 1 << 20
#: a sha256 as fleetbench writes it: 64 lower-case hex digits (artifact names, model ids, data sets)
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

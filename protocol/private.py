"""Files that hold records or tokens: created readable by their owner only."""

from __future__ import annotations

import os
from pathlib import Path


def create_private(path: str | Path) -> None:
    """Create ``path`` empty with mode 0600 if it is not there (an existing file is left as it is)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass

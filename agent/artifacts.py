"""Fetching artifacts named in a job spec, verified by sha256 before use."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from agent.errors import JobError
from protocol import ArtifactRef
from protocol.hashing import sha256_file


def local_path(ref: ArtifactRef) -> Path:
    """Resolve ``ref`` to a local file and verify its sha256; never return an unverified file."""
    parsed = urlparse(ref.uri)
    if parsed.scheme != "file":
        raise JobError(
            "bad-artifact",
            f"artifact {ref.sha256[:12]} has URI scheme '{parsed.scheme}'; "
            "this agent fetches file:// artifacts only (embedded mode)",
        )
    path = Path(unquote(parsed.path))
    if not path.is_file():
        raise JobError(
            "bad-artifact",
            f"artifact {ref.filename or ref.sha256[:12]} is missing at {path}; "
            "the controller's artifact store was moved or cleaned: run the conversion again",
        )
    actual = sha256_file(path)
    if actual != ref.sha256:
        raise JobError(
            "bad-artifact",
            f"artifact {path} has sha256 {actual[:12]}…, the job expects {ref.sha256[:12]}…; "
            "the file was changed or corrupted after conversion, so it was not run. "
            "Run the conversion again (or `fleetbench demo --rebuild` for the demo)",
        )
    return path

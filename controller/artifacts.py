"""Content-addressed artifact store: files named by their sha256, written atomically.

A file is written to a temporary name in the same directory, fsynced, then
renamed into place, so a crash never leaves a half-written file under a valid
name.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from protocol import ArtifactRef
from protocol.hashing import SHA256_HEX, sha256_bytes, sha256_file


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    path: Path
    size_bytes: int


class ArtifactStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def _ref(self, sha256: str, filename: str) -> ArtifactRef:
        path = self.path_for(sha256)
        return ArtifactRef(sha256=sha256, uri=path.as_uri(), size_bytes=path.stat().st_size, filename=filename)

    def put_bytes(self, data: bytes, filename: str) -> ArtifactRef:
        sha = sha256_bytes(data)
        target = self.path_for(sha)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return self._ref(sha, filename)

    def put_file(self, path: Path, filename: str | None = None) -> ArtifactRef:
        return self.put_bytes(Path(path).read_bytes(), filename or Path(path).name)

    def get(self, sha256: str, filename: str = "") -> ArtifactRef | None:
        """The artifact if present and intact, else None."""
        path = self.path_for(sha256)
        if not path.is_file() or sha256_file(path) != sha256:
            return None
        return self._ref(sha256, filename)

    def iter_files(self) -> Iterator[StoredFile]:
        for sub in sorted(self.root.iterdir()):
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for f in sorted(sub.iterdir()):
                if f.is_file() and not f.name.startswith(".incoming-"):
                    yield StoredFile(f.name, f, f.stat().st_size)

    def verify(self) -> list[tuple[StoredFile, str]]:
        """Files whose content no longer matches their name: (file, actual sha256)."""
        bad = []
        for f in self.iter_files():
            actual = sha256_file(f.path)
            if actual != f.sha256:
                bad.append((f, actual))
        return bad

    def pin(self, sha256: str, why: str) -> None:
        """Keep this artifact through :meth:`gc` though no stored row points at it (an uploaded data set)."""
        pins = self.root / "pinned"
        pins.mkdir(exist_ok=True)
        (pins / sha256).write_text(why + "\n", encoding="utf-8")

    def pin_reason(self, sha256: str) -> str | None:
        """Why ``sha256`` is pinned (what :meth:`pin` was told), or None when it is not."""
        try:
            return (self.root / "pinned" / sha256).read_text(encoding="utf-8").strip()
        except (OSError, ValueError):
            return None

    def pinned(self) -> set[str]:
        pins = self.root / "pinned"
        return {p.name for p in pins.iterdir() if SHA256_HEX.fullmatch(p.name)} if pins.is_dir() else set()

    def gc(self, keep: set[str], dry_run: bool = False, stale_incoming_s: float = 3600.0) -> list[StoredFile]:
        """Delete artifacts neither in ``keep`` nor pinned (and temp files of crashed writes); return what went."""
        keep = keep | self.pinned()
        removed = [f for f in self.iter_files() if f.sha256 not in keep]
        if not dry_run:
            for f in removed:
                f.path.unlink(missing_ok=True)
            cutoff = time.time() - stale_incoming_s
            for tmp in self.root.glob("*/.incoming-*"):
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink(missing_ok=True)
        return removed

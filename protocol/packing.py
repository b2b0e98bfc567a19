"""Multi-file artifacts (an OpenVINO IR, a SavedModel) travel as one deterministic tar.

Same files, same bytes, same sha256: members sorted, mtime 0, mode 0644.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def _add(tar: tarfile.TarFile, arcname: str, data: bytes) -> None:
    info = tarfile.TarInfo(arcname)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def pack_files(files: dict[str, Path | bytes]) -> bytes:
    """A deterministic tar of ``{arcname: path or bytes}``: same content, same bytes.

    The padding tar adds after the end-of-archive blocks (up to 10 KiB) is cut,
    so an artifact's size reflects its content.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for arcname in sorted(files):
            src = files[arcname]
            _add(tar, arcname, src if isinstance(src, bytes) else Path(src).read_bytes())
    return buf.getvalue()[: tar.offset]


def unpack(data_path: Path, dest: Path) -> Path:
    """Extract a tar made by :func:`pack_files` safely (no absolute paths, links or devices)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(data_path) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # Python without extraction filters (older 3.10 patch releases on NCS2 hosts)
            root = dest.resolve()
            for member in tar.getmembers():
                target = (dest / member.name).resolve()
                if not member.isfile() or (target != root and root not in target.parents):
                    raise ValueError(f"refusing unsafe tar member {member.name!r}")
            tar.extractall(dest)
    return dest

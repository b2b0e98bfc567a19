"""Opening a user's .npz with bounds: the sizes it declares are checked before anything is decompressed.

An .npz is a zip of .npy files. A small compressed file can declare gigabytes
(2 GB of zeros compress to 2 MB), so :func:`check_npz` reads only the zip
directory and each member's .npy header (shape and dtype), refuses a total
over ``max_bytes``, object arrays (pickles), and members that are not .npy,
and only then is ``np.load`` allowed to run. Standard library and numpy only,
so agents use it too.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np

#: Default bound on what one .npz may decompress to (``FLEETBENCH_MAX_ARRAY_BYTES`` overrides it).
DEFAULT_MAX_BYTES = 8 * 2**30
#: Room for a member's .npy header beside its array's bytes.
HEADER_ALLOWANCE = 2**16


class NpzError(ValueError):
    """The .npz is unreadable or declares too much; the message says which and what to do."""


def max_bytes_default() -> int:
    raw = os.environ.get("FLEETBENCH_MAX_ARRAY_BYTES", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_MAX_BYTES


def check_npz(path: str | Path, max_bytes: int | None = None) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{array name: (shape, dtype)} as the file declares them, or NpzError if over ``max_bytes`` in all."""
    limit = max_bytes_default() if max_bytes is None else max_bytes
    arrays: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    total = 0
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    raise NpzError(f"{info.filename!r} inside is not an .npy array; save the data set with numpy.savez")
                if info.file_size > limit + HEADER_ALLOWANCE:  # what the zip says it inflates to
                    raise NpzError(_too_big(info.filename, info.file_size, limit))
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version in ((2, 0), (3, 0)):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    else:
                        raise NpzError(f"{info.filename!r} has .npy format {version}, which numpy does not write")
                if dtype.hasobject:
                    raise NpzError(f"{info.filename!r} holds Python objects (a pickle); save plain numeric arrays")
                total += math.prod(int(d) for d in shape) * dtype.itemsize  # Python ints: no overflow
                if total > limit:
                    raise NpzError(_too_big(info.filename, total, limit))
                arrays[info.filename[: -len(".npy")]] = (tuple(shape), dtype)
    except NpzError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise NpzError(f"not a readable .npz file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return arrays


def _size(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n:,} bytes"


def _too_big(name: str, n: int, limit: int) -> str:
    return (f"declares {_size(n)} of arrays (at {name!r}), over the limit of {_size(limit)}; "
            "use a smaller data set, or raise FLEETBENCH_MAX_ARRAY_BYTES")  # fmt: skip


def load_npz(path: str | Path, max_bytes: int | None = None):
    """``np.load(path, allow_pickle=False)`` once :func:`check_npz` passed (use it as a context manager)."""
    check_npz(path, max_bytes)
    return np.load(path, allow_pickle=False)

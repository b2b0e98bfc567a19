"""Raw latency samples, stored and sent compactly: :class:`Samples` and its binary form.

A record's ``samples_ns`` are integer nanoseconds, thousands to hundreds of thousands of them. As JSON
they take 6-7 bytes each and cost a Python object per sample to parse and check. The binary form
("FBS1") takes 1.4-3.1 bytes per sample on real latencies (docs/benchmarks.md):

    b"FBS1" | width: u8 (1, 2, 4 or 8 bytes per sample) | count: u32 little-endian | zlib(shuffled)

where ``shuffled`` is the samples as little-endian unsigned integers of ``width`` bytes, byte-shuffled
(every sample's lowest byte, then every sample's next byte, ...), so that the high bytes, nearly
constant in latencies, compress to almost nothing. On the wire (JSON) it is ``"fbs1:" + base64``.

:class:`Samples` is an immutable sequence of ints that holds either the numbers or their binary form
and turns one into the other only when asked (a reader that wants the statistics columns never
decodes). Every check is done with numpy on the whole array: integers, none negative.
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from typing import Any, Iterator, Sequence

import numpy as np

MAGIC = b"FBS1"
TEXT_PREFIX = "fbs1:"
_HEADER = struct.Struct("<4sBI")
_WIDTHS = (1, 2, 4, 8)
#: The most samples a record may hold (80 MB as int64): a bound on what a hostile blob can make us allocate.
MAX_SAMPLES = 10_000_000


class SamplesError(ValueError):
    """Samples that are not a list of non-negative integers, or a blob that is not FBS1."""


def _width(values: np.ndarray) -> int:
    top = int(values.max()) if values.size else 0
    return next(w for w in _WIDTHS if top < 1 << (8 * w))


def encode(values: np.ndarray) -> bytes:
    """The FBS1 blob of non-negative int64 ``values``."""
    w = _width(values)
    shuffled = values.astype(f"<u{w}").view(np.uint8).reshape(-1, w).T.tobytes()
    return _HEADER.pack(MAGIC, w, values.size) + zlib.compress(shuffled, 1)  # level 6 is 2.5x slower for 1% less


def decode(blob: bytes) -> np.ndarray:
    """The int64 samples of an FBS1 blob (read-only); SamplesError if it is not one."""
    if len(blob) < _HEADER.size:
        raise SamplesError("samples blob is too short to be FBS1")
    magic, w, n = _HEADER.unpack_from(blob)
    if magic != MAGIC or w not in _WIDTHS:
        raise SamplesError("samples blob is not FBS1 (bad magic or width)")
    if n > MAX_SAMPLES:
        raise SamplesError(f"samples blob claims {n:,} samples, more than the {MAX_SAMPLES:,} a record may hold")
    want = n * w
    z = zlib.decompressobj()
    try:
        raw = z.decompress(blob[_HEADER.size :], max(want, 1))  # never more than promised (a zlib bomb); 0 means no limit
    except zlib.error as exc:
        raise SamplesError(f"samples blob does not decompress ({exc})") from None
    if len(raw) != want or z.unconsumed_tail or not z.eof or z.unused_data:
        raise SamplesError(f"samples blob holds other than the {n:,} samples its header says")
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(w, n)
    packed = np.empty((n, w), dtype=np.uint8)
    for k in range(w):  # a plane at a time: 4-5x faster than copying the transpose
        packed[:, k] = planes[k]
    values = packed.view(f"<u{w}").reshape(n).astype(np.int64)
    if w == 8 and n and int(values.min()) < 0:  # above 2**63: not a latency
        raise SamplesError("samples blob holds a value at or above 2**63 ns")
    values.flags.writeable = False
    return values


def _as_array(values: Any) -> np.ndarray:
    """Checked int64 array of a list/tuple/array of ints. The types are checked in C (``map(type, ...)``),
    the range with numpy on the whole: no per-sample Python code."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1 or values.dtype.kind not in "iu":
            raise SamplesError("expected a flat array of integers")
        if values.dtype == np.uint64 and values.size and int(values.max()) >= 1 << 63:
            raise SamplesError("a sample is at or above 2**63 ns")
        arr = values.astype(np.int64, copy=False)
    else:
        if not isinstance(values, (list, tuple)):
            raise SamplesError(f"expected a list, got {type(values).__name__}")
        kinds = set(map(type, values))
        if kinds - {int}:
            bad = next(i for i, v in enumerate(values) if type(v) is not int)  # only to name it
            what = "expected a flat list of integers" if isinstance(values[bad], (list, tuple)) else (
                f"expected an integer, got {type(values[bad]).__name__}")  # fmt: skip
            raise SamplesError(f"[{bad}]: {what}")
        try:
            arr = np.fromiter(values, dtype=np.int64, count=len(values))
        except OverflowError:
            bad = next(i for i, v in enumerate(values) if not -(1 << 63) <= v < 1 << 63)
            raise SamplesError(f"[{bad}]: {values[bad]} is out of range for a latency in ns") from None
    if arr.size and int(arr.min()) < 0:
        raise SamplesError(f"[{int(np.argmax(arr < 0))}]: a latency cannot be negative")
    return arr


class Samples(Sequence[int]):
    """An immutable sequence of int nanoseconds, kept as numbers, as an FBS1 blob, or both."""

    __slots__ = ("_arr", "_blob")

    def __init__(self, values: Any = ()):
        if isinstance(values, Samples):
            self._arr, self._blob = values._arr, values._blob
            return
        arr = _as_array(values)
        if arr.size > MAX_SAMPLES:
            raise SamplesError(f"{arr.size:,} samples, more than the {MAX_SAMPLES:,} a record may hold")
        if arr.flags.writeable:
            arr = arr.copy()
            arr.flags.writeable = False
        self._arr: np.ndarray | None = arr
        self._blob: bytes | None = None

    @classmethod
    def from_blob(cls, blob: bytes) -> "Samples":
        """Samples of an FBS1 blob; its header is checked now, the rest when the numbers are first read."""
        blob = bytes(blob)
        if len(blob) < _HEADER.size or blob[:4] != MAGIC:
            raise SamplesError("samples blob is not FBS1 (bad magic)")
        out = cls.__new__(cls)
        out._arr, out._blob = None, blob
        return out

    @classmethod
    def from_text(cls, text: str) -> "Samples":
        """Samples of their wire form, ``"fbs1:" + base64``, checked whole (it comes from elsewhere)."""
        if not text.startswith(TEXT_PREFIX):
            raise SamplesError(f"expected a list of integers or \"{TEXT_PREFIX}...\", got a string")
        try:
            blob = base64.b64decode(text[len(TEXT_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise SamplesError("the fbs1 samples are not valid base64") from None
        out = cls.from_blob(blob)
        out._arr = decode(blob)
        return out

    @classmethod
    def coerce(cls, value: Any) -> "Samples":
        """Samples of a record's field as given: Samples, a list of ints, or the fbs1 text."""
        if isinstance(value, Samples):
            return value
        if isinstance(value, str):
            return cls.from_text(value)
        return cls(value)

    @property
    def array(self) -> np.ndarray:
        """The samples as a read-only int64 array (decoded on first use)."""
        if self._arr is None:
            self._arr = decode(self._blob)
        return self._arr

    def to_blob(self) -> bytes:
        if self._blob is None:
            self._blob = encode(self.array)
        return self._blob

    def to_text(self) -> str:
        return TEXT_PREFIX + base64.b64encode(self.to_blob()).decode("ascii")

    def tolist(self) -> list[int]:
        return self.array.tolist()

    def __len__(self) -> int:
        if self._arr is not None:
            return int(self._arr.size)
        return _HEADER.unpack_from(self._blob)[2]

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(self.array[i].tolist())
        return int(self.array[i])

    def __iter__(self) -> Iterator[int]:
        return iter(self.array.tolist())

    def __array__(self, dtype=None, copy=None):
        arr = self.array
        return arr if dtype is None else arr.astype(dtype)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Samples):
            if self._blob is not None and self._blob == other._blob:
                return True
            return np.array_equal(self.array, other.array)
        if isinstance(other, (list, tuple)):
            return len(other) == len(self) and self.tolist() == list(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.array.tobytes())  # the values, as __eq__ compares them (two encoders may differ)

    def __repr__(self) -> str:
        return f"Samples({len(self)} samples)"

    def __reduce__(self):
        return (Samples.from_blob, (self.to_blob(),))


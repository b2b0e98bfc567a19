"""Data sets: an ``.npz`` (``x``, optional ``y``) or a folder of images, one
sub-folder per class; preprocessing declared and stored with the set; a
calibration split and a validation split fixed by a seed, and on request a
labelled training split between them (for quantization-aware training).

A prepared data set is two artifacts: ``calibration.npz`` (``x``) and
``validation.npz`` (``x``, and ``y`` when labelled), already preprocessed to
the model's input layout and dtype. Its id is the sha256 of the source
content, the preprocessing and the split, so preparing it again is a no-op.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controller.artifacts import ArtifactStore
from protocol import ArtifactRef
from protocol.hashing import sha256_file
from protocol.npz import NpzError, load_npz

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm"}


class DatasetError(ValueError):
    """A data set cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class Preprocessing:
    #: (height, width) for image folders; every image is resized to it.
    resize: tuple[int, int] | None = None
    #: Multiply raw values by this first (e.g. 1/255).
    scale: float = 1.0
    #: Then subtract ``mean`` and divide by ``std``, per channel (last axis of NHWC).
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    #: Layout of the model input: NHWC (TensorFlow) or NCHW (most ONNX models).
    layout: str = "NHWC"
    dtype: str = "float32"
    #: Image folders only: 3 (RGB) or 1 (grayscale).
    channels: int = 3

    def problems(self) -> list[str]:
        out = []
        num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)  # noqa: E731
        if not num(self.scale) or self.scale == 0:
            out.append(f"scale must be a non-zero number, not {self.scale!r}")
        if not all(num(v) for v in (*self.mean, *self.std)):
            out.append("mean and std must be lists of numbers")
        if self.resize is not None and (len(self.resize) != 2 or not all(isinstance(v, int) and v > 0 for v in self.resize)):
            out.append("resize must be [height, width], two whole numbers above 0")
        if not isinstance(self.channels, int) or isinstance(self.channels, bool):
            out.append("channels must be 1 or 3")
            return out
        if self.layout not in ("NHWC", "NCHW"):
            out.append(f"layout must be NHWC or NCHW, not {self.layout}")
        if len(self.mean) != len(self.std):
            out.append("mean and std need the same number of values")
        if any(s == 0 for s in self.std):
            out.append("std values must be non-zero")
        if self.channels not in (1, 3):
            out.append("channels must be 1 or 3")
        try:
            np.dtype(self.dtype)
        except (TypeError, ValueError):
            out.append(f"unknown dtype {self.dtype}")
        return out

    def to_dict(self) -> dict:
        return {"resize": list(self.resize) if self.resize else None, "scale": self.scale, "mean": list(self.mean),
                "std": list(self.std), "layout": self.layout, "dtype": self.dtype, "channels": self.channels}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(
            resize=tuple(d["resize"]) if d.get("resize") else None,
            scale=float(d.get("scale", 1.0)),
            mean=tuple(d.get("mean", ())),
            std=tuple(d.get("std", ())),
            layout=d.get("layout", "NHWC"),
            dtype=d.get("dtype", "float32"),
            channels=int(d.get("channels", 3)),
        )


@dataclass(frozen=True)
class PreparedDataset:
    dataset_id: str
    name: str
    source_sha256: str
    preprocessing: Preprocessing
    seed: int
    calibration: ArtifactRef
    validation: ArtifactRef
    n_calibration: int
    n_validation: int
    labelled: bool
    #: Shape of one preprocessed sample, without the batch axis.
    sample_shape: tuple[int, ...]
    classes: tuple[str, ...] = ()
    #: The labelled training split (``x``, ``y``) for quantization-aware training; None unless asked for.
    train: ArtifactRef | None = None
    n_train: int = 0


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    try:
        with load_npz(path) as data:
            if "x" not in data:
                raise DatasetError(f"{path}: an .npz data set needs an array named 'x' (found: {', '.join(data.files)})")
            x, y = data["x"], (data["y"] if "y" in data else None)
    except DatasetError:
        raise
    except NpzError as exc:
        raise DatasetError(f"{path}: {exc}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: not a readable .npz file ({exc})") from None
    if y is not None and len(y) != len(x):
        raise DatasetError(f"{path}: 'x' has {len(x)} samples but 'y' has {len(y)} labels")
    return x, y, ()


def _declared_task(path: Path) -> str | None:
    """The task an .npz declares in its ``task`` entry (classification, segmentation, regression), or None."""
    try:
        with load_npz(path) as data:
            return _task_in(data, path)
    except NpzError as exc:
        raise DatasetError(f"{path}: {exc}") from None


def _task_in(data, path: Path) -> str | None:
    """The ``task`` entry of an opened .npz (``np.load``'s mapping), checked, or None."""
    from protocol.accuracy import TASKS

    if "task" not in data:
        return None
    task = str(data["task"])
    if task not in TASKS:
        raise DatasetError(f"{path}: 'task' is '{task}'; it is one of {', '.join(TASKS)} (or leave it out to infer it)")
    return task


def _read_image_folder(root: Path, pre: Preprocessing) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from PIL import Image, UnidentifiedImageError

    classes = tuple(sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")))
    if not classes:
        raise DatasetError(f"{root}: an image folder needs one sub-folder per class; none found")
    xs, ys = [], []
    size = pre.resize
    mode = "RGB" if pre.channels == 3 else "L"
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            if f.suffix.lower() not in IMAGE_EXTS:
                continue
            try:
                with Image.open(f) as img:
                    img = img.convert(mode)
                    if size is None:
                        size = (img.height, img.width)
                    if (img.height, img.width) != size:
                        if pre.resize is None:
                            raise DatasetError(
                                f"{f}: {img.width}x{img.height}, but earlier images are {size[1]}x{size[0]}; "
                                "declare a size to resize to (--resize HxW)"
                            )
                        img = img.resize((size[1], size[0]), Image.BILINEAR)
                    arr = np.asarray(img, dtype=np.float32)
            except (UnidentifiedImageError, OSError) as exc:
                raise DatasetError(f"{f}: not a readable image ({exc})") from None
            xs.append(arr if arr.ndim == 3 else arr[..., None])
            ys.append(label)
    if not xs:
        raise DatasetError(f"{root}: no images ({', '.join(sorted(IMAGE_EXTS))}) in its class folders")
    return np.stack(xs), np.asarray(ys, dtype=np.int64), classes


def apply_preprocessing(x: np.ndarray, pre: Preprocessing) -> np.ndarray:
    out = x.astype(np.float32) * np.float32(pre.scale)
    if pre.mean:
        mean = np.asarray(pre.mean, dtype=np.float32)
        std = np.asarray(pre.std, dtype=np.float32)
        if out.shape[-1] != len(mean):
            raise DatasetError(f"mean/std have {len(mean)} values but the data has {out.shape[-1]} channels (last axis)")
        out = (out - mean) / std
    if pre.layout == "NCHW" and out.ndim == 4:
        out = out.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(out.astype(np.dtype(pre.dtype)))


def split_indices(n: int, seed: int, n_calibration: int) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, validation) indices: a seeded permutation, calibration first.

    At least one sample always stays for validation.
    """
    cal, _, val = split3(n, seed, n_calibration, 0)
    return cal, val


def split3(n: int, seed: int, n_calibration: int, n_train: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(calibration, train, validation) indices of one seeded permutation: calibration first, then the training
    split, then validation. With ``n_train`` 0 the split is :func:`split_indices`'s, so asking for no training
    split changes nothing. The three never overlap; at least one sample stays for validation."""
    if n < 2:
        raise DatasetError(f"a data set needs at least 2 samples to split, got {n}")
    k = max(1, min(n_calibration, n - 1))
    if n_train < 0:
        raise DatasetError(f"the training split must be 0 or more samples, not {n_train}")
    if n_train and k + n_train > n - 1:
        raise DatasetError(f"a training split of {n_train:,} samples leaves none to validate: the data set has {n:,}, "
                           f"{k:,} of them for calibration; ask for at most {max(0, n - 1 - k):,}")  # fmt: skip
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[:k]), np.sort(order[k : k + n_train]), np.sort(order[k + n_train :])


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _source_sha(path: Path) -> str:
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()


def _check_values(p: Path, x: np.ndarray, y: np.ndarray | None, task: str | None, allow_nan: bool | None = None) -> None:
    """Inputs are finite numbers; classification labels are whole numbers from 0 (issue 14, finding 13).

    ``allow_nan``: keep NaN and infinite inputs; None: as ``FLEETBENCH_ALLOW_NAN=1`` says."""
    import os

    if allow_nan is None:
        allow_nan = os.environ.get("FLEETBENCH_ALLOW_NAN") == "1"
    if x.dtype.kind not in "biuf":
        raise DatasetError(f"{p}: 'x' holds {x.dtype} values; a data set's inputs are numbers")
    if x.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad and not allow_nan:
            raise DatasetError(f"{p}: 'x' holds {bad:,} NaN or infinite value(s), which make every accuracy and fidelity "
                               "figure meaningless; clean the data set (or set FLEETBENCH_ALLOW_NAN=1 to keep them)")  # fmt: skip
    if y is None or task != "classification":
        return
    if y.dtype.kind not in "biuf":
        raise DatasetError(f"{p}: 'y' holds {y.dtype} values; classification labels are class indices (0, 1, 2, ...)")
    labels = y.reshape(-1)
    bad = int(np.count_nonzero(~np.isfinite(labels) | (labels < 0) | (labels != np.round(labels)))) if y.dtype.kind == "f" \
        else int(np.count_nonzero(labels < 0))
    if bad:
        raise DatasetError(f"{p}: {bad:,} label(s) in 'y' are not class indices (whole numbers from 0); fix them, "
                           "or declare task=regression in the .npz if they are targets")  # fmt: skip


def _check_train(p: Path, n_train: int, y: np.ndarray | None) -> None:
    if n_train and y is None:
        raise DatasetError(f"{p}: a training split needs labels, and this data set has none ('y' in an .npz, or one "
                           "sub-folder per class)")  # fmt: skip


def prepare(
    path: str | Path,
    store: ArtifactStore,
    preprocessing: Preprocessing = Preprocessing(),
    seed: int = 0,
    n_calibration: int = 100,
    name: str | None = None,
    allow_nan: bool | None = None,
    n_train: int = 0,
) -> PreparedDataset:
    """``allow_nan``: keep NaN and infinite inputs (None: as ``FLEETBENCH_ALLOW_NAN=1`` says). ``n_train``: samples
    set apart, with their labels, to fine-tune on (quantization-aware training); never validated on."""
    p = Path(path).expanduser()
    problems = preprocessing.problems()
    if problems:
        raise DatasetError("; ".join(problems))
    if not p.exists():
        raise DatasetError(f"{p}: no such file or directory")
    if p.is_dir():
        x, y, classes = _read_image_folder(p, preprocessing)
    elif p.suffix.lower() == ".npz":
        x, y, classes = _read_npz(p)
    else:
        raise DatasetError(f"{p}: a data set is an .npz file or a folder of images (one sub-folder per class)")
    task = None if y is None else _declared_task(p) if p.suffix.lower() == ".npz" else "classification"
    _check_values(p, x, y, task, allow_nan=allow_nan)
    x = apply_preprocessing(x, preprocessing)
    _check_train(p, n_train, y)
    cal, train, val = split3(len(x), seed, n_calibration, n_train)
    train_ref = store.put_bytes(_npz_bytes(x=x[train], y=y[train]), "train.npz") if n_train else None
    cal_ref = store.put_bytes(_npz_bytes(x=x[cal]), "calibration.npz")
    val_arrays = {"x": x[val]}
    if y is not None:
        val_arrays["y"] = y[val]
        if task:
            val_arrays["task"] = np.array(task)
    val_ref = store.put_bytes(_npz_bytes(**val_arrays), "validation.npz")
    src_sha = _source_sha(p)
    split = {"source": src_sha, "pre": preprocessing.to_dict(), "seed": seed, "cal": int(len(cal))}
    if n_train:  # a set without a training split keeps the id it always had
        split["train"] = int(len(train))
    ident = json.dumps(split, sort_keys=True)
    ds = PreparedDataset(
        dataset_id=hashlib.sha256(ident.encode()).hexdigest(),
        name=name or p.stem,
        source_sha256=src_sha,
        preprocessing=preprocessing,
        seed=seed,
        calibration=cal_ref,
        validation=val_ref,
        n_calibration=int(len(cal)),
        n_validation=int(len(val)),
        labelled=y is not None,
        sample_shape=tuple(int(v) for v in x.shape[1:]),
        classes=classes,
        train=train_ref,
        n_train=int(len(train)),
    )
    return ds

"""Task accuracy from a data set's labels, on the device: classification, segmentation, regression.

Numpy only. The task is the one the data set declares (an .npz ``task`` entry), else inferred
from the labels (the rule in docs/conversion.md):

- integer labels, one per sample → ``classification``: top-1 and top-5 on the first output with a
  score per class;
- integer labels with a shape per sample (a class id per pixel) → ``segmentation``: mean IoU over the
  classes present, the prediction being the arg-max over the output's class axis (a single-channel
  output is thresholded at 0.5);
- float labels → ``regression`` (landmarks, boxes, depth): MAE and RMSE against the first output with
  as many values per sample as the labels.
"""

from __future__ import annotations

import numpy as np

from protocol.records import TaskAccuracy

TASKS = ("classification", "segmentation", "regression")


class AccuracyError(ValueError):
    """The labels do not fit the model's outputs; the message says how."""


def infer_task(y: np.ndarray) -> str:
    if y.dtype.kind == "f":
        return "regression"
    if y.dtype.kind in "iub":
        return "classification" if y.ndim == 1 else "segmentation"
    raise AccuracyError(f"labels of dtype {y.dtype} are neither class ids nor float targets")


def evaluate(task: str, outputs: list[np.ndarray], y: np.ndarray, names: list[str]) -> TaskAccuracy:
    """``outputs``: one array per output, samples first, in the model's own shape (batch dimension 1 dropped)."""
    if task not in TASKS:
        raise AccuracyError(f"unknown task '{task}'; one of {', '.join(TASKS)}")
    n = len(y)
    if task == "classification":
        n_classes = int(y.max()) + 1 if n else 0
        flat = [o.reshape(n, -1) for o in outputs]
        i = next((k for k, o in enumerate(flat) if o.shape[1] >= max(n_classes, 2)), None)
        if i is None:
            raise AccuracyError(f"labels name {n_classes} classes but no output has that many scores")
        scores, labels = flat[i], y.astype(np.int64)
        top1 = float((scores.argmax(1) == labels).mean())
        top5 = None
        if scores.shape[1] > 5:
            best5 = np.argpartition(-scores, 5, axis=1)[:, :5]
            top5 = float((best5 == labels[:, None]).any(1).mean())
        return TaskAccuracy(task=task, samples=n, output=names[i], top1=top1, top5=top5)
    if task == "segmentation":
        per = y.reshape(n, -1).shape[1]
        for i, o in enumerate(outputs):
            pred = _mask(o, y.shape[1:], per)
            if pred is not None:
                return TaskAccuracy(task=task, samples=n, output=names[i], mean_iou=mean_iou(pred, y.reshape(n, -1)))
        raise AccuracyError(f"labels are {y.shape[1:]} masks but no output is a mask of that size")
    per = y.reshape(n, -1).shape[1]
    for i, o in enumerate(outputs):
        flat = o.reshape(n, -1)
        if flat.shape[1] == per:
            err = flat.astype(np.float64) - y.reshape(n, -1).astype(np.float64)
            return TaskAccuracy(task=task, samples=n, output=names[i], mae=float(np.abs(err).mean()),
                                rmse=float(np.sqrt((err**2).mean())))  # fmt: skip
    raise AccuracyError(f"labels have {per} values per sample but no output has as many")


def _mask(out: np.ndarray, label_shape: tuple[int, ...], per: int) -> np.ndarray | None:
    """Class ids per pixel from one output (samples first), or None if it is not a mask of that size."""
    n = len(out)
    shape = out.shape[1:]
    if int(np.prod(shape)) == per:  # one channel: a foreground probability
        return (out.reshape(n, -1) >= 0.5).astype(np.int64)
    hw = tuple(label_shape[-2:]) if len(label_shape) >= 2 else None
    if hw and len(shape) == 3:
        if shape[:2] == hw:  # channels last
            return out.argmax(-1).reshape(n, -1)
        if shape[1:] == hw:  # channels first
            return out.argmax(1).reshape(n, -1)
    return None


def mean_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over the classes present in either of intersection over union, over all pixels of all samples."""
    ious = []
    for c in np.union1d(np.unique(pred), np.unique(truth)):
        p, t = pred == c, truth == c
        union = np.logical_or(p, t).sum()
        if union:
            ious.append(np.logical_and(p, t).sum() / union)
    return float(np.mean(ious)) if ious else 1.0

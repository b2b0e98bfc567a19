"""Task accuracy from labels (protocol.accuracy), from tables of cases."""

from __future__ import annotations

import numpy as np
import pytest

from protocol import accuracy as A

RNG = np.random.default_rng(1)


@pytest.mark.parametrize("y, task", [
    (np.array([0, 3, 1]), "classification"),
    (np.zeros((3, 8, 8), dtype=np.uint8), "segmentation"),
    (RNG.random((3, 10)).astype(np.float32), "regression"),
])  # fmt: skip
def test_the_task_is_inferred_from_the_labels(y, task):
    assert A.infer_task(y) == task


def test_classification_top1_and_top5():
    scores = np.eye(10)[[1, 2, 3, 4]] + 0.01 * np.arange(10)  # predicts 1, 2, 3, 4
    y = np.array([1, 2, 9, 0])
    acc = A.evaluate("classification", [scores], y, ["probs"])
    assert acc.top1 == 0.5 and acc.output == "probs"
    # the 9 and 0 labels: 9 has the next highest score of each row (0.01*9), 0 the lowest
    assert acc.top5 == 0.75 and acc.headline() == "0.5000"
    assert A.evaluate("classification", [scores[:, :4]], np.array([1, 2, 3, 0]), ["p"]).top5 is None


def test_classification_picks_the_output_with_a_score_per_class():
    boxes, scores = RNG.random((4, 3)), np.eye(6)[[0, 1, 2, 5]]
    acc = A.evaluate("classification", [boxes, scores], np.array([0, 1, 2, 5]), ["boxes", "scores"])
    assert acc.output == "scores" and acc.top1 == 1.0


def test_segmentation_mean_iou_channels_last_first_and_one_channel():
    truth = np.zeros((2, 4, 4), dtype=np.int64)
    truth[:, :2] = 1  # top half is class 1
    pred = truth.copy()
    pred[0, 2, 0] = 1  # one pixel wrong
    onehot_last = np.eye(2)[pred]  # (2, 4, 4, 2)
    expect = np.mean([15 / 16, 16 / 17])  # class 0: 15 of 16 overlap; class 1: 16 of 17
    for out in (onehot_last, onehot_last.transpose(0, 3, 1, 2), pred[..., None].astype(float)):
        acc = A.evaluate("segmentation", [out], truth, ["mask"])
        assert acc.mean_iou == pytest.approx(expect) and acc.headline().startswith("mIoU")


def test_regression_mae_and_rmse():
    y = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    out = y + np.array([[0.5, -0.5], [0.0, 1.0]])
    acc = A.evaluate("regression", [RNG.random((2, 5)), out], y, ["other", "points"])
    assert acc.output == "points" and acc.mae == pytest.approx(0.5) and acc.rmse == pytest.approx(np.sqrt(0.375))


@pytest.mark.parametrize("task, outs, y, message", [
    ("classification", [np.zeros((2, 3))], np.array([0, 7]), "8 classes but no output"),
    ("regression", [np.zeros((2, 3))], np.zeros((2, 4), np.float32), "4 values per sample"),
    ("segmentation", [np.zeros((2, 3))], np.zeros((2, 4, 4), np.int64), "masks but no output"),
    ("detection", [np.zeros((2, 3))], np.zeros(2, np.int64), "unknown task"),
])  # fmt: skip
def test_labels_that_do_not_fit_say_how(task, outs, y, message):
    with pytest.raises(A.AccuracyError, match=message):
        A.evaluate(task, outs, y, ["o"])

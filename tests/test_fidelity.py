"""Fidelity of every output (protocol.fidelity), from tables of cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from protocol import Fidelity, ResultRecord
from protocol import fidelity as F

RNG = np.random.default_rng(0)
SOFTMAX = np.exp(RNG.normal(size=(20, 10)))
SOFTMAX /= SOFTMAX.sum(1, keepdims=True)
BOXES = RNG.normal(size=(20, 16)) * 50  # a detector's box regressions: not class scores
LANDMARKS = RNG.uniform(0, 200, size=(20, 12))


@pytest.mark.parametrize(
    "ref, n_classes, expect",
    [
        (SOFTMAX, None, True),  # rows are probability distributions
        (BOXES, None, False),
        (LANDMARKS, None, False),  # values in [0, 200]: points, not scores
        (LANDMARKS, 10, True),  # labels are class ids that index into it: logits
        (LANDMARKS, 20, False),  # more classes than values: not these scores
        (SOFTMAX[:, :1], None, False),  # one value per sample
    ],
)
def test_class_scores_rule(ref, n_classes, expect):
    assert F.is_class_scores(ref, n_classes) is expect


def test_identical_outputs_read_perfect_with_the_snr_cap():
    f = F.compare([SOFTMAX, BOXES], [SOFTMAX, BOXES], ["scores", "boxes"])
    assert f.snr_db == F.SNR_CAP_DB and f.max_abs_error == 0 and f.mean_cosine == pytest.approx(1.0)
    assert [o.name for o in f.outputs] == ["scores", "boxes"]
    assert f.outputs[0].top1_agreement == 1.0 and f.outputs[1].top1_agreement is None
    assert f.top1_agreement == 1.0 and f.warnings == ()


def test_the_summary_is_the_worst_output_and_snr_follows_the_noise():
    noisy = BOXES + RNG.normal(size=BOXES.shape) * 0.5  # noise 100x below the signal in amplitude
    f = F.compare([SOFTMAX, noisy], [SOFTMAX, BOXES], ["scores", "boxes"])
    boxes = f.outputs[1]
    expect_snr = 10 * np.log10((BOXES**2).sum() / ((noisy - BOXES) ** 2).sum())
    assert boxes.snr_db == pytest.approx(expect_snr) and 35 < boxes.snr_db < 45
    assert f.worst_output == "boxes" and f.snr_db == boxes.snr_db and f.max_abs_error == boxes.max_abs_error
    assert boxes.rel_l2 == pytest.approx(np.linalg.norm(noisy - BOXES) / np.linalg.norm(BOXES))
    assert f.top1_agreement == 1.0  # only the scores output has top-1


def test_a_second_output_that_drifts_is_not_hidden_by_a_perfect_first():
    f = F.compare([SOFTMAX, -BOXES], [SOFTMAX, BOXES], ["scores", "boxes"])
    assert f.outputs[0].cosine == pytest.approx(1.0)
    assert f.mean_cosine == pytest.approx(-1.0) and f.snr_db < 0


def test_a_constant_reference_is_flagged():
    const = np.tile(SOFTMAX[:1], (20, 1))
    f = F.compare([const], [const], ["scores"])
    assert f.outputs[0].constant_reference and len(f.warnings) == 1 and "near-)constant" in f.warnings[0]
    assert not F.constant_reference(SOFTMAX) and not F.constant_reference(SOFTMAX[:1])


def test_an_all_zero_reference_has_no_relative_error():
    zero = np.zeros((4, 3))
    f = F.compare([zero + 1], [zero], ["z"])
    assert f.outputs[0].rel_l2 is None and f.rel_l2 is None and f.snr_db == -F.SNR_CAP_DB


@pytest.mark.parametrize(
    "out_names, ref_names, out_sizes, ref_sizes, expect",
    [
        (["a", "b"], ["b", "a"], [4, 8], [8, 4], [1, 0]),  # by name
        (["Identity:0", "Identity_1:0"], ["Identity_1", "Identity"], [4, 8], [8, 4], [1, 0]),  # renamed: by size
        (["x", "y"], ["p", "q"], [4, 4], [4, 4], [0, 1]),  # same sizes: by order
    ],
)
def test_outputs_are_matched_by_name_then_size_then_order(out_names, ref_names, out_sizes, ref_sizes, expect):
    assert F.match_outputs(out_names, ref_names, out_sizes, ref_sizes) == expect


def test_a_different_number_of_outputs_is_an_error():
    with pytest.raises(ValueError, match="2 output"):
        F.match_outputs(["a", "b"], ["a"], [1, 2], [1])


def test_fidelity_round_trips_through_json_and_old_records_still_read(golden_record):
    f = F.compare([SOFTMAX, BOXES * 1.01], [SOFTMAX, BOXES], ["scores", "boxes"])
    rec = ResultRecord.from_dict({**golden_record.to_dict(), "fidelity": f.to_dict()})
    assert ResultRecord.from_json(rec.to_json()).fidelity == f
    old = {"samples": 5, "top1_agreement": 1.0, "max_abs_error": 0.1, "mean_cosine": 0.99}
    assert Fidelity.from_dict(old).outputs == () and Fidelity.from_dict(old).snr_db is None
    assert json.loads(rec.to_json())["fidelity"]["outputs"][1]["name"] == "boxes"

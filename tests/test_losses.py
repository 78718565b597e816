"""The five losses against values computed by hand on tiny cases."""

import math

import numpy as np
import pytest

from keras_maskrcnn import losses


def _bce(logit, target):
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_smooth_l1_both_regimes():
    beta = 1 / 9
    values = losses.smooth_l1(np.array([0.05, -0.05, 1.0, -2.0], np.float32), beta).numpy()
    expected = [0.5 * 0.05 ** 2 / beta, 0.5 * 0.05 ** 2 / beta, 1.0 - 0.5 * beta, 2.0 - 0.5 * beta]
    np.testing.assert_allclose(values, expected, rtol=1e-5)


def test_rpn_objectness_averages_over_sampled_anchors_only():
    logits = np.array([[2.0, -1.0, 0.5, 3.0]], np.float32)
    sampled_fg = np.array([[True, False, False, False]])
    sampled_bg = np.array([[False, True, True, False]])  # the last anchor is not sampled
    expected = (_bce(2.0, 1) + _bce(-1.0, 0) + _bce(0.5, 0)) / 3
    value = losses.rpn_objectness_loss(logits, sampled_fg, sampled_bg).numpy()
    assert value == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("normalizer, count", [("sampled", 4), ("positives", 2)])
def test_rpn_box_loss_divides_by_sampled_or_positive_anchors(normalizer, count):
    pred = np.zeros((1, 5, 4), np.float32)
    target = np.array([[[1.0, 0, 0, 0], [0, 0.05, 0, 0], [9, 9, 9, 9], [9, 9, 9, 9], [5, 5, 5, 5]]],
                      np.float32)
    fg = np.array([[True, True, False, False, False]])
    bg = np.array([[False, False, True, True, False]])  # the last anchor is not sampled
    beta = 1 / 9
    expected = ((1.0 - 0.5 * beta) + 0.5 * 0.05 ** 2 / beta) / count
    value = losses.rpn_box_loss(pred, target, fg, bg, beta, normalizer).numpy()
    assert value == pytest.approx(expected, rel=1e-5)


def test_an_unknown_box_normalizer_is_refused():
    none = np.zeros((1, 2), bool)
    pred = np.zeros((1, 2, 4), np.float32)
    with pytest.raises(ValueError, match="normalizer 'images'"):
        losses.rpn_box_loss(pred, pred, none, none, 0.1, "images")


def test_roi_class_loss_counts_background_and_skips_padding():
    logits = np.array([[[2.0, 1.0, 0.0], [0.0, 0.0, 3.0], [5.0, -5.0, 0.0]]], np.float32)
    targets = np.array([[0, 2, 1]], np.int32)
    valid = np.array([[True, True, False]])

    def ce(row, k):
        return -(row[k] - math.log(sum(math.exp(v) for v in row)))

    expected = (ce(logits[0, 0], 0) + ce(logits[0, 1], 2)) / 2
    assert losses.roi_class_loss(logits, targets, valid).numpy() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("normalizer, count", [("sampled", 2), ("positives", 1)])
def test_roi_box_loss_uses_ground_truth_class_deltas(normalizer, count):
    pred = np.zeros((1, 3, 3, 4), np.float32)
    pred[0, 0, 2] = [1.0, 0, 0, 0]  # deltas of class 2 for RoI 0
    pred[0, 0, 1] = [7.0, 7, 7, 7]  # another class: must be ignored
    targets = np.zeros((1, 3, 4), np.float32)
    classes = np.array([[2, 0, 0]], np.int32)
    is_fg = np.array([[True, False, False]])
    valid = np.array([[True, True, False]])  # a background RoI, then a padding slot
    beta = 1.0
    expected = (1.0 - 0.5 * beta) / count
    value = losses.roi_box_loss(pred, classes, targets, is_fg, valid, beta, normalizer).numpy()
    assert value == pytest.approx(expected, rel=1e-5)


def test_mask_loss_reads_the_ground_truth_class_channel():
    logits = np.zeros((1, 2, 2, 2, 3), np.float32)
    logits[0, 0, :, :, 1] = [[2.0, -2.0], [0.0, 1.0]]  # class 2 → channel 1
    logits[0, 0, :, :, 0] = 50.0  # class 1's channel: must be ignored
    mask_targets = np.array([[[[1, 0], [1, 0]], [[1, 1], [1, 1]]]], np.float32)
    classes = np.array([[2, 0]], np.int32)
    is_fg = np.array([[True, False]])
    expected = (_bce(2.0, 1) + _bce(-2.0, 0) + _bce(0.0, 1) + _bce(1.0, 0)) / 4
    value = losses.mask_loss(logits, classes, mask_targets, is_fg).numpy()
    assert value == pytest.approx(expected, rel=1e-5)


def test_empty_sets_give_zero_not_nan():
    pred = np.zeros((1, 2, 4), np.float32)
    none = np.zeros((1, 2), bool)
    for normalizer in ("sampled", "positives"):
        assert losses.rpn_box_loss(pred, pred, none, none, 0.1, normalizer).numpy() == 0.0
    assert losses.rpn_objectness_loss(np.zeros((1, 2), np.float32), none, none).numpy() == 0.0

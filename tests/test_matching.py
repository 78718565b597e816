"""IoU matching: thresholds, the ignore band, padded ground truth, low-quality matches."""

import numpy as np

from keras_maskrcnn.ops.matching import BACKGROUND, FOREGROUND, IGNORE, match_boxes


def _match(iou, gt_valid, fg=0.7, bg=0.3, low_quality=False):
    matched, labels = match_boxes(np.asarray(iou, np.float32), np.asarray(gt_valid, bool), fg, bg, low_quality)
    assert matched.dtype == labels.dtype == np.int32
    return matched.numpy(), labels.numpy()


def test_labels_constants_are_distinct():
    assert len({FOREGROUND, BACKGROUND, IGNORE}) == 3


def test_thresholds_and_ignore_band():
    iou = [[[0.8, 0.1],     # ≥ fg → foreground of gt 0
            [0.2, 0.7],     # exactly fg → foreground of gt 1
            [0.69, 0.2],    # between → ignored
            [0.3, 0.1],     # exactly bg is not below it → ignored
            [0.29, 0.0],    # below bg → background
            [0.75, 0.75]]]  # tie → first gt
    matched, labels = _match(iou, [[True, True]])
    assert labels.tolist() == [[FOREGROUND, FOREGROUND, IGNORE, IGNORE, BACKGROUND, FOREGROUND]]
    assert matched[0, [0, 1, 2, 5]].tolist() == [0, 1, 0, 0]


def test_equal_thresholds_have_no_ignore_band():
    iou = [[[0.5, 0.0], [0.4999, 0.1], [0.0, 0.0]]]
    matched, labels = _match(iou, [[True, True]], fg=0.5, bg=0.5)
    assert labels.tolist() == [[FOREGROUND, BACKGROUND, BACKGROUND]]


def test_padded_ground_truth_never_matches():
    iou = [[[0.9, 0.4], [0.95, 0.1]]]
    matched, labels = _match(iou, [[False, True]], low_quality=True)
    assert matched.tolist() == [[1, 1]]
    # Candidate 0 is the best match of gt 1 (0.4) → low-quality foreground; candidate 1's only
    # valid IoU is 0.1 → background; the 0.9/0.95 to the padded gt count for nothing.
    assert labels.tolist() == [[FOREGROUND, BACKGROUND]]


def test_low_quality_matches_include_ties_and_keep_argmax():
    iou = [[[0.40, 0.00, 0.0],
            [0.40, 0.50, 0.0],   # best for gt 0 (tie) and for gt 1; argmax is gt 1
            [0.10, 0.20, 0.0],
            [0.05, 0.00, 0.0]]]  # gt 2 overlaps nothing: no candidate is promoted for it
    matched, labels = _match(iou, [[True, True, True]])
    assert labels.tolist() == [[IGNORE, IGNORE, BACKGROUND, BACKGROUND]]
    matched, labels = _match(iou, [[True, True, True]], low_quality=True)
    assert labels.tolist() == [[FOREGROUND, FOREGROUND, BACKGROUND, BACKGROUND]]
    assert matched.tolist() == [[0, 1, 1, 0]]


def test_image_without_ground_truth_is_all_background():
    iou = np.zeros((2, 3, 2), np.float32)
    iou[0] = [[0.9, 0.0], [0.5, 0.0], [0.1, 0.0]]
    iou[1] = [[0.9, 0.8], [0.5, 0.6], [0.1, 0.2]]   # garbage behind padding
    matched, labels = _match(iou, [[True, False], [False, False]], low_quality=True)
    assert labels[0].tolist() == [FOREGROUND, IGNORE, BACKGROUND]
    assert labels[1].tolist() == [BACKGROUND] * 3
    assert np.all((matched >= 0) & (matched < 2))


def test_random_against_numpy_rule():
    rng = np.random.default_rng(0)
    iou = rng.uniform(size=(2, 40, 5)).astype(np.float32) ** 3
    gt_valid = np.array([[True, True, True, False, False], [True, False, True, True, True]])
    matched, labels = _match(iou, gt_valid, fg=0.5, bg=0.4, low_quality=True)
    for b in range(2):
        masked = np.where(gt_valid[b][None], iou[b], -1.0)
        best = masked.max(1)
        want = np.where(best >= 0.5, FOREGROUND, np.where(best < 0.4, BACKGROUND, IGNORE))
        for g in np.flatnonzero(gt_valid[b]):
            want[masked[:, g] == masked[:, g].max()] = FOREGROUND
        np.testing.assert_array_equal(labels[b], want)
        np.testing.assert_array_equal(matched[b], masked.argmax(1))

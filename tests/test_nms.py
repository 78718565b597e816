"""Padded, batched, grouped NMS against a plain greedy reference.

The reference follows torchvision.ops.nms / batched_nms: visit candidates by decreasing
score, keep one unless it overlaps an already kept box *of the same group* by IoU greater
than the threshold; candidates scored INVALID_SCORE or less (such as -inf) are never kept.
"""

import numpy as np
import pytest

from keras_maskrcnn.ops.nms import INVALID_SCORE, batched_padded_nms


def _iou(a, b):
    inter_h = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    inter_w = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = inter_h * inter_w
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _greedy_nms(boxes, scores, max_output_size, iou_threshold, groups=None):
    boxes = boxes.astype(np.float64)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept = []
    for i in order:
        if len(kept) == max_output_size:
            break
        if scores[i] <= INVALID_SCORE:
            continue
        if all(_iou(boxes[i], boxes[k]) <= iou_threshold
               for k in kept if groups is None or groups[k] == groups[i]):
            kept.append(i)
    return kept


def _check_against_reference(boxes, scores, max_output_size, iou_threshold, groups=None):
    indices, valid = batched_padded_nms(boxes, scores, max_output_size, iou_threshold, groups)
    indices, valid = indices.numpy(), valid.numpy()
    assert indices.shape == valid.shape == (boxes.shape[0], max_output_size)
    for b in range(boxes.shape[0]):
        want = _greedy_nms(boxes[b], scores[b], max_output_size, iou_threshold,
                           None if groups is None else groups[b])
        assert indices[b][valid[b]].tolist() == want, f"image {b}"
        assert valid[b].tolist() == [True] * len(want) + [False] * (max_output_size - len(want))
        assert np.all(indices[b][~valid[b]] == 0)


def _random_boxes(rng, batch, num, canvas=200.0):
    y1x1 = rng.uniform(0, canvas, size=(batch, num, 2))
    hw = rng.uniform(5, 60, size=(batch, num, 2))
    return np.concatenate([y1x1, y1x1 + hw], -1).astype(np.float32)


def test_hand_case_suppression_order_and_padding():
    boxes = np.array([[[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 6, 10, 16]]], np.float32)
    scores = np.array([[0.6, 0.9, 0.7, 0.8]], np.float32)
    indices, valid = batched_padded_nms(boxes, scores, 6, 0.5)
    # 1 (0.9) kept; 3 (0.8) overlaps 1 by 36/164 → kept; 2 kept; 0 overlaps 1 by 90/110 → gone.
    assert indices.numpy().tolist() == [[1, 3, 2, 0, 0, 0]]
    assert valid.numpy().tolist() == [[True, True, True, False, False, False]]


@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_random_against_reference(iou_threshold):
    rng = np.random.default_rng(int(iou_threshold * 10))
    boxes = _random_boxes(rng, 2, 60)
    scores = rng.uniform(size=(2, 60)).astype(np.float32)
    _check_against_reference(boxes, scores, 20, iou_threshold)
    _check_against_reference(boxes, scores, 60, iou_threshold)


def test_more_candidates_than_one_tile():
    # tf.image.non_max_suppression_padded works in tiles of 512 boxes.
    rng = np.random.default_rng(9)
    boxes = _random_boxes(rng, 1, 700, canvas=400.0)
    scores = rng.uniform(size=(1, 700)).astype(np.float32)
    _check_against_reference(boxes, scores, 100, 0.5)


@pytest.mark.parametrize("dropped", [-np.inf, INVALID_SCORE])
def test_dropped_candidates_are_never_kept(dropped):
    rng = np.random.default_rng(10)
    boxes = _random_boxes(rng, 2, 30)
    scores = rng.uniform(size=(2, 30)).astype(np.float32)
    scores[0, ::3] = dropped
    scores[1, :25] = dropped
    _check_against_reference(boxes, scores, 30, 0.5)
    indices, valid = batched_padded_nms(boxes, scores, 30, 0.5)
    assert valid.numpy()[1].sum() <= 5


def test_groups_do_not_suppress_each_other():
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10]]], np.float32)
    scores = np.array([[0.9, 0.8, 0.7, 0.6]], np.float32)
    groups = np.array([[0, 1, 0, 1]], np.int32)
    indices, valid = batched_padded_nms(boxes, scores, 4, 0.5, groups)
    assert indices.numpy()[0][valid.numpy()[0]].tolist() == [0, 1]


def test_random_groups_against_reference():
    rng = np.random.default_rng(12)
    boxes = _random_boxes(rng, 2, 80, canvas=100.0)
    scores = rng.uniform(size=(2, 80)).astype(np.float32)
    groups = rng.integers(0, 4, size=(2, 80)).astype(np.int32)
    _check_against_reference(boxes, scores, 50, 0.5, groups)


def test_iou_equal_to_threshold_is_not_suppressed():
    # The docstring (and torchvision) suppress only IoU *greater* than the threshold.
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 20]]], np.float32)   # IoU exactly 0.5
    scores = np.array([[0.9, 0.8]], np.float32)
    indices, valid = batched_padded_nms(boxes, scores, 2, 0.5)
    assert valid.numpy().tolist() == [[True, True]]


def test_boxes_with_negative_coordinates_are_kept():
    # Unclipped boxes (e.g. decoded anchors near the top-left corner) are ordinary candidates.
    boxes = np.array([[[-20, -20, -5, -5], [0, 0, 10, 10], [-30, -8, -12, 0]]], np.float32)
    scores = np.array([[0.9, 0.8, 0.7]], np.float32)
    indices, valid = batched_padded_nms(boxes, scores, 3, 0.5)
    assert indices.numpy()[0][valid.numpy()[0]].tolist() == [0, 1, 2]


def test_groups_with_negative_coordinates_do_not_interact():
    # Disjoint boxes of different groups must both survive whatever their coordinates.
    boxes = np.array([[[0, 0, 10, 10], [-10, -10, 0, 0]]], np.float32)
    scores = np.array([[0.9, 0.8]], np.float32)
    groups = np.array([[0, 1]], np.int32)
    indices, valid = batched_padded_nms(boxes, scores, 2, 0.5, groups)
    assert indices.numpy()[0][valid.numpy()[0]].tolist() == [0, 1]


@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_single_image_path_against_reference(iou_threshold):
    # A static batch of 1 takes the single-image NMS op (the one TFLite has as a builtin).
    rng = np.random.default_rng(13 + int(iou_threshold * 10))
    boxes = _random_boxes(rng, 1, 120, canvas=100.0)
    scores = rng.uniform(size=(1, 120)).astype(np.float32)
    scores[0, ::5] = -np.inf
    groups = rng.integers(0, 3, size=(1, 120)).astype(np.int32)
    _check_against_reference(boxes, scores, 40, iou_threshold, groups)
    _check_against_reference(boxes, scores, 120, iou_threshold)

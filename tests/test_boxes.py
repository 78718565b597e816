"""Box geometry: area, pairwise IoU, clipping, sizes."""

import numpy as np
import pytest

from keras_maskrcnn.ops.boxes import box_area, box_sizes, clip_boxes, pairwise_iou


def test_box_area_hand_values_and_degenerate():
    boxes = np.array([[0, 0, 10, 20], [5, 5, 5, 9], [4, 4, 2, 8], [1, 2, 3.5, 2.5]], np.float32)
    np.testing.assert_allclose(box_area(boxes).numpy(), [200.0, 0.0, 0.0, 1.25])


def test_iou_hand_values():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([
        [0, 0, 10, 10],     # identical → 1
        [20, 20, 30, 30],   # disjoint → 0
        [0, 5, 10, 15],     # half overlap along x → 50 / 150
        [5, 5, 15, 15],     # quarter overlap → 25 / 175
        [10, 0, 20, 10],    # touching edge → 0
        [2, 2, 4, 4],       # contained → 4 / 100
    ], np.float32)
    iou = pairwise_iou(a, b).numpy()
    assert iou.shape == (1, 6)
    np.testing.assert_allclose(iou[0], [1.0, 0.0, 1 / 3, 1 / 7, 0.0, 0.04], rtol=1e-6, atol=1e-7)


def test_iou_symmetric_and_shapes():
    rng = np.random.default_rng(0)
    y1x1 = rng.uniform(0, 50, size=(2, 5, 2))
    a = np.concatenate([y1x1, y1x1 + rng.uniform(1, 30, size=(2, 5, 2))], -1).astype(np.float32)
    y1x1 = rng.uniform(0, 50, size=(2, 3, 2))
    b = np.concatenate([y1x1, y1x1 + rng.uniform(1, 30, size=(2, 3, 2))], -1).astype(np.float32)
    ab = pairwise_iou(a, b).numpy()
    ba = pairwise_iou(b, a).numpy()
    assert ab.shape == (2, 5, 3)
    np.testing.assert_allclose(ab, np.swapaxes(ba, 1, 2), rtol=1e-6)
    assert np.all((ab >= 0) & (ab <= 1))
    # Batch entries are independent: image 1 against image 1 only.
    np.testing.assert_allclose(ab[1], pairwise_iou(a[1], b[1]).numpy(), rtol=1e-6)


def test_iou_zero_area_boxes_no_nan():
    a = np.array([[5, 5, 5, 5], [0, 0, 10, 10], [3, 3, 3, 8]], np.float32)
    b = np.array([[5, 5, 5, 5], [0, 0, 0, 0], [2, 2, 6, 6]], np.float32)
    iou = pairwise_iou(a, b).numpy()
    assert not np.any(np.isnan(iou))
    assert iou[0, 0] == 0.0          # point against the same point: empty union
    assert iou[1, 1] == 0.0
    assert iou[2, 2] == 0.0          # a line inside a box has no area
    assert iou[1, 2] == pytest.approx(16 / 100)


def test_clip_boxes():
    boxes = np.array([[-5, -3, 20, 40], [2, 3, 4, 5], [50, 60, 70, 80]], np.float32)
    got = clip_boxes(boxes, 30, 32).numpy()
    np.testing.assert_array_equal(got, [[0, 0, 20, 32], [2, 3, 4, 5], [30, 32, 30, 32]])


def test_clip_boxes_per_image_sizes_broadcast():
    boxes = np.array([[[-1, -1, 100, 100]], [[-1, -1, 100, 100]]], np.float32)
    heights = np.array([[40.0], [60.0]], np.float32)
    widths = np.array([[50.0], [70.0]], np.float32)
    got = clip_boxes(boxes, heights, widths).numpy()
    np.testing.assert_array_equal(got, [[[0, 0, 40, 50]], [[0, 0, 60, 70]]])


def test_box_sizes():
    h, w = box_sizes(np.array([[1, 2, 4, 10], [0, 0, 0.5, 0.25]], np.float32))
    np.testing.assert_allclose(np.asarray(h), [3, 0.5])
    np.testing.assert_allclose(np.asarray(w), [8, 0.25])

"""Tests for keras_maskrcnn.postprocess (mask pasting, instance map, unpacking)."""

import numpy as np
import pytest
import reference_paste

from keras_maskrcnn import postprocess
from keras_maskrcnn.config import PASTE_METHODS

M = 28


def _reference_paste(mask, box, image_hw, threshold=0.5):
    """Per-pixel bilinear sampling of the zero-padded grid: slow, written independently."""
    y1, x1, y2, x2 = box
    padded = np.pad(mask.astype(np.float64), 1)
    out = np.zeros(image_hw, bool)
    for r in range(image_hw[0]):
        for c in range(image_hw[1]):
            py, px = r + 0.5, c + 0.5
            if not (y1 <= py < y2 and x1 <= px < x2):
                continue
            # +1 for the padding cell.
            gy = (py - y1) / (y2 - y1) * M - 0.5 + 1
            gx = (px - x1) / (x2 - x1) * M - 0.5 + 1
            i, j = int(np.floor(gy)), int(np.floor(gx))
            fy, fx = gy - i, gx - j
            value = ((1 - fy) * (1 - fx) * padded[i, j] + (1 - fy) * fx * padded[i, j + 1]
                     + fy * (1 - fx) * padded[i + 1, j] + fy * fx * padded[i + 1, j + 1])
            out[r, c] = value >= threshold
    return out


def _expected_rect(image_hw, rows, cols):
    out = np.zeros(image_hw, bool)
    out[rows[0]:rows[1], cols[0]:cols[1]] = True
    return out


def test_full_mask_fills_exactly_the_box_pixels():
    pasted = postprocess.paste_masks(np.ones((1, M, M)), np.array([[10, 20, 30, 60]]), (50, 80))
    assert pasted.shape == (1, 50, 80) and pasted.dtype == bool
    np.testing.assert_array_equal(pasted[0], _expected_rect((50, 80), (10, 30), (20, 60)))
    assert pasted[0, 10, 20] and pasted[0, 29, 59]
    assert not pasted[0, 9, 20] and not pasted[0, 30, 59]
    assert not pasted[0, 10, 19] and not pasted[0, 29, 60]


def test_left_half_mask_gives_left_half_of_box():
    mask = np.zeros((1, M, M), np.float32)
    mask[0, :, :M // 2] = 1.0
    pasted = postprocess.paste_masks(mask, np.array([[10, 20, 30, 60]]), (50, 80))
    # The 0.5 level sits halfway between cells 13 and 14, i.e. at x = 20 + 40 / 2.
    np.testing.assert_array_equal(pasted[0], _expected_rect((50, 80), (10, 30), (20, 40)))


def test_fractional_box_uses_pixel_centres():
    pasted = postprocess.paste_masks(np.ones((1, M, M)), np.array([[10.3, 20.7, 30.6, 40.2]]), (50, 80))
    np.testing.assert_array_equal(pasted[0], _expected_rect((50, 80), (10, 31), (21, 40)))


def test_matches_per_pixel_reference():
    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(2, M, M)).astype(np.float32)
    boxes = np.array([[3.2, 5.7, 30.1, 22.4], [-4.0, 10.5, 12.25, 45.0]])
    pasted = postprocess.paste_masks(masks, boxes, (32, 40))
    for k in range(2):
        np.testing.assert_array_equal(pasted[k], _reference_paste(masks[k], boxes[k], (32, 40)))


@pytest.mark.parametrize("one_call_pixels", [postprocess.ONE_CALL_PIXELS, 0],
                         ids=["one call", "like-sized groups"])
@pytest.mark.parametrize("method", PASTE_METHODS)
def test_boxes_of_all_sizes_paste_as_the_reference(method, one_call_pixels, monkeypatch):
    monkeypatch.setattr(postprocess, "ONE_CALL_PIXELS", one_call_pixels)
    rng = np.random.default_rng(2)
    masks = rng.uniform(size=(6, M, M)).astype(np.float32)
    # From under a pixel to the whole image: pasted in one call into this small image, or in
    # several like-sized groups.
    boxes = np.array([[0, 0, 48, 64], [3.3, 4.1, 9.9, 12.2], [10.2, 30.5, 10.8, 31.1],
                      [20, -5, 60, 30], [1, 1, 3, 40], [30.5, 50.2, 47.7, 63.9]], np.float32)
    groups = postprocess._paste_groups(boxes, 48, 64)
    assert len(groups) == (1 if one_call_pixels else len(postprocess._like_sized(boxes)))
    assert len(postprocess._like_sized(boxes)) >= 4
    np.testing.assert_array_equal(postprocess.paste_masks(masks, boxes, (48, 64), method=method),
                                  reference_paste.paste_masks(masks, boxes, (48, 64), method=method))
    np.testing.assert_allclose(postprocess.paste_mask_probabilities(masks, boxes, (48, 64), method),
                               reference_paste.paste_mask_probabilities(masks, boxes, (48, 64), method),
                               atol=1e-5)


def test_box_partly_outside_image_is_clipped():
    boxes = np.array([[-10, -5, 15, 25], [40, 40, 60, 60]])
    pasted = postprocess.paste_masks(np.ones((2, M, M)), boxes, (20, 20))
    np.testing.assert_array_equal(pasted[0], _expected_rect((20, 20), (0, 15), (0, 20)))
    assert not pasted[1].any()


def test_empty_input():
    masks, boxes = np.zeros((0, M, M)), np.zeros((0, 4))
    assert postprocess.paste_masks(masks, boxes, (7, 9)).shape == (0, 7, 9)
    assert postprocess.paste_mask_probabilities(masks, boxes, (7, 9)).shape == (0, 7, 9)
    ids = postprocess.instance_map(np.zeros((0, 7, 9)), np.zeros((0,)))
    assert ids.shape == (7, 9) and ids.dtype == np.int32 and not ids.any()


def test_paste_masks_thresholds_the_probabilities():
    rng = np.random.default_rng(1)
    masks = rng.uniform(size=(3, M, M)).astype(np.float32)
    boxes = np.array([[0, 0, 10, 10], [2.5, 3.5, 17.0, 19.5], [5, 1, 6, 30]])
    probs = postprocess.paste_mask_probabilities(masks, boxes, (20, 32))
    assert probs.dtype == np.float32 and probs.shape == (3, 20, 32)
    np.testing.assert_array_equal(postprocess.paste_masks(masks, boxes, (20, 32), 0.3), probs >= 0.3)


def _two_squares(prob_a, prob_b):
    probs = np.zeros((2, 10, 10), np.float32)
    probs[0, 0:6, 0:6] = prob_a
    probs[1, 4:10, 4:10] = prob_b
    return probs


def test_instance_map_overlap_goes_to_highest_score_times_probability():
    ids = postprocess.instance_map(_two_squares(0.6, 1.0), np.array([0.9, 0.5]))
    assert ids.dtype == np.int32 and ids.shape == (10, 10)
    assert (ids[4:6, 4:6] == 1).all()
    assert (ids[0:4, 0:4] == 1).all() and (ids[6:, 6:] == 2).all()
    assert ids[0, 9] == 0 and ids[9, 0] == 0
    # A higher score with a low probability loses: 0.9 × 0.55 < 0.6 × 0.9.
    ids = postprocess.instance_map(_two_squares(0.55, 0.9), np.array([0.9, 0.6]))
    assert (ids[4:6, 4:6] == 2).all()


def test_instance_map_ignores_probabilities_below_threshold():
    ids = postprocess.instance_map(_two_squares(0.4, 0.7), np.array([0.9, 0.1]))
    assert not (ids == 1).any()
    assert (ids[4:, 4:] == 2).all() and (ids[:4] == 0).all()


def test_unpack_detections_cuts_to_num_detections():
    outputs = {
        "detection_boxes": np.arange(2 * 5 * 4, dtype=np.float32).reshape(2, 5, 4),
        "detection_scores": np.linspace(0, 1, 10, dtype=np.float32).reshape(2, 5),
        "detection_classes": np.array([[1, 2, 3, 4, 5], [7.0, 8.0, 9.0, 0.0, 0.0]]),
        "num_detections": np.array([5, 3]),
        "detection_masks": np.zeros((2, 5, M, M), np.float32),
    }
    detections = postprocess.unpack_detections(outputs, 1)
    assert detections["boxes"].shape == (3, 4)
    np.testing.assert_array_equal(detections["boxes"], outputs["detection_boxes"][1, :3])
    np.testing.assert_array_equal(detections["scores"], outputs["detection_scores"][1, :3])
    np.testing.assert_array_equal(detections["category_ids"], [7, 8, 9])
    assert detections["category_ids"].dtype == np.int64
    assert detections["masks"].shape == (3, M, M)

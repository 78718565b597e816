"""Mask cropping and RoI mask targets."""

import numpy as np

from keras_maskrcnn.ops.masks import crop_and_resize_masks, roi_mask_targets


def _zero_extended_bilinear(mask, y, x):
    """Bilinear value of a 2-D mask at index (y, x), the plane outside the mask being 0."""
    height, width = mask.shape
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    total = 0.0
    for yy, wy in ((y0, 1.0 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1.0 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < height and 0 <= xx < width:
                total += wy * wx * float(mask[yy, xx])
    return total


def _crop_reference(mask, box, size):
    """Sample `mask` at the centres of a size×size grid over box (pixel r's centre is r + 0.5)."""
    y1, x1, y2, x2 = (float(v) for v in box)
    step_y, step_x = (y2 - y1) / size, (x2 - x1) / size
    out = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            out[i, j] = _zero_extended_bilinear(mask, y1 + (i + 0.5) * step_y - 0.5, x1 + (j + 0.5) * step_x - 0.5)
    return out


def _rect_mask(shape, y1, x1, y2, x2):
    mask = np.zeros(shape, np.float32)
    mask[y1:y2, x1:x2] = 1.0
    return mask


def test_crop_rectangle_with_its_own_box_is_all_ones():
    # Exactly ones needs the grid step ≥ 1 pixel (box side ≥ size): a finer grid puts its outer
    # samples less than half a pixel from the edge, where bilinear reads the zeros outside.
    masks = np.stack([_rect_mask((40, 50), 5, 10, 33, 38), _rect_mask((40, 50), 3, 4, 33, 40)])
    boxes = np.array([[5, 10, 33, 38], [3, 4, 33, 40]], np.float32)
    for size in (28, 14):
        got = crop_and_resize_masks(masks, boxes, size).numpy()
        assert got.shape == (2, size, size)
        np.testing.assert_allclose(got, 1.0, atol=1e-5, err_msg=f"size {size}")


def test_crop_box_twice_the_mask_has_ones_in_the_middle_half():
    mask = _rect_mask((64, 64), 20, 16, 36, 32)[None]   # 16 × 16
    box = np.array([[12, 8, 44, 40]], np.float32)        # 32 × 32, same centre
    for size in (32, 16):
        want = np.zeros((size, size), np.float32)
        want[size // 4:3 * size // 4, size // 4:3 * size // 4] = 1.0
        got = crop_and_resize_masks(mask, box, size).numpy()[0]
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"size {size}")


def test_crop_matches_reference_on_random_masks_and_boxes():
    rng = np.random.default_rng(5)
    masks = rng.uniform(size=(4, 23, 31)).astype(np.float32)
    boxes = np.array([
        [2.3, 4.1, 17.8, 25.2],        # inside
        [-3.7, -5.2, 10.4, 12.9],      # over the top-left corner
        [15.2, 20.6, 30.1, 40.3],      # over the bottom-right corner
        [6.6, 7.1, 7.4, 7.7],          # under one pixel
    ], np.float32)
    got = crop_and_resize_masks(masks, boxes, 12).numpy()
    want = np.stack([_crop_reference(m, b, 12) for m, b in zip(masks, boxes)])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_roi_equal_to_gt_box_reproduces_thresholded_mini_mask():
    rng = np.random.default_rng(6)
    values = rng.uniform(size=(1, 2, 28, 28))
    values = np.where(np.abs(values - 0.5) < 0.02, 0.9, values).astype(np.float32)  # no near-ties
    gt_boxes = np.array([[[10.5, 20.25, 70.5, 55.75], [0, 0, 28, 28]]], np.float32)
    got = roi_mask_targets(values, gt_boxes, gt_boxes, np.array([[0, 1]], np.int32), 28).numpy()
    assert got.shape == (1, 2, 28, 28)
    np.testing.assert_array_equal(got, (values >= 0.5).astype(np.float32))


def test_roi_on_left_half_of_gt_box_upsamples_left_half():
    rng = np.random.default_rng(7)
    mini = (rng.uniform(size=(1, 1, 28, 28)) > 0.5).astype(np.float32)
    gt_boxes = np.array([[[40, 30, 96, 86]]], np.float32)       # 56 × 56
    roi_boxes = np.array([[[40, 30, 96, 58]]], np.float32)      # left half: 56 × 28
    got = roi_mask_targets(mini, gt_boxes, roi_boxes, np.zeros((1, 1), np.int32), 28).numpy()[0, 0]
    # Column j of the target reads mini column j/2 − 1/4: on a binary mask that thresholds to
    # the nearer column, i.e. each of the left 14 columns repeated twice.
    want = np.repeat(mini[0, 0, :, :14], 2, axis=1)
    np.testing.assert_array_equal(got, want)


def test_matched_indices_pick_the_right_instance_per_image():
    size = 14
    # Three distinguishable instances per image: a different filled band each.
    mini = np.zeros((2, 3, size, size), np.float32)
    for b in range(2):
        for g in range(3):
            mini[b, g, :, (b * 3 + g) * 2:(b * 3 + g) * 2 + 2] = 1.0
    gt_boxes = np.array([[[0, 0, 14, 14], [10, 10, 38, 38], [5, 0, 19, 28]],
                         [[1, 1, 15, 15], [20, 0, 48, 14], [0, 30, 56, 58]]], np.float32)
    matched = np.array([[2, 0, 1, 2], [1, 1, 0, 2]], np.int32)
    roi_boxes = np.take_along_axis(gt_boxes, matched[..., None], axis=1)
    got = roi_mask_targets(mini, gt_boxes, roi_boxes, matched, size).numpy()
    assert got.shape == (2, 4, size, size)
    for b in range(2):
        for r in range(4):
            np.testing.assert_array_equal(got[b, r], mini[b, matched[b, r]], err_msg=f"image {b} roi {r}")


def test_roi_mask_targets_match_reference_for_general_rois():
    rng = np.random.default_rng(8)
    mini_size, size = 20, 12
    mini = rng.uniform(size=(2, 2, mini_size, mini_size)).astype(np.float32)
    gt_boxes = np.array([[[10, 12, 50, 44], [30, 5, 62, 70]], [[0, 0, 25, 35], [8, 9, 40, 41]]], np.float32)
    roi_boxes = np.array([[[14.3, 8.2, 47.9, 40.1], [25.5, 20.7, 70.2, 60.3], [12.1, 13.3, 31.7, 28.6]],
                          [[-4.2, 3.3, 20.8, 30.1], [10.6, 11.4, 45.9, 35.2], [2.2, 2.9, 9.7, 12.3]]],
                         np.float32)
    matched = np.array([[0, 1, 0], [0, 1, 1]], np.int32)
    got = roi_mask_targets(mini, gt_boxes, roi_boxes, matched, size).numpy()
    for b in range(2):
        for r in range(3):
            gy1, gx1, gy2, gx2 = gt_boxes[b, matched[b, r]].astype(np.float64)
            # The RoI in the mini-mask's pixel frame, then the same grid sampling as a crop.
            ry1, rx1, ry2, rx2 = roi_boxes[b, r].astype(np.float64)
            sy, sx = mini_size / (gy2 - gy1), mini_size / (gx2 - gx1)
            box_in_mini = [(ry1 - gy1) * sy, (rx1 - gx1) * sx, (ry2 - gy1) * sy, (rx2 - gx1) * sx]
            soft = _crop_reference(mini[b, matched[b, r]], box_in_mini, size)
            near_tie = np.abs(soft - 0.5) < 1e-4
            np.testing.assert_array_equal(got[b, r][~near_tie], (soft >= 0.5)[~near_tie].astype(np.float32))

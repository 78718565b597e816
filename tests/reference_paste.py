"""The numpy paste methods `ops.paste` replaced, kept as the tests' reference.

Box by box in numpy (float64, but torchvision's box growth in float32 as torchvision does it),
written apart from the TensorFlow code they check. `keras_maskrcnn/ops/paste.py` describes the
methods.
Shapes: K detections, M mask resolution, H, W image size.
"""

import numpy as np

from keras_maskrcnn.config import PASTE_METHODS

MASK_THRESHOLD = 0.5  # as ops.paste's


def _interpolation_weights(start, length, num_cells, first_pixel, num_pixels):
    """Bilinear weights from the `num_cells` grid cells to pixel centres → float32 [num_pixels, num_cells].

    Weights that would fall on the zero cells just outside the grid are dropped, which is the
    same as zero-padding the grid by one cell before interpolating.
    """
    centres = np.arange(first_pixel, first_pixel + num_pixels, dtype=np.float64) + 0.5
    grid_coords = (centres - start) * (num_cells / length) - 0.5
    lower = np.floor(grid_coords).astype(np.int64)
    upper_weight = grid_coords - lower
    weights = np.zeros((num_pixels, num_cells), np.float32)
    rows = np.arange(num_pixels)
    for cells, cell_weight in ((lower, 1.0 - upper_weight), (lower + 1, upper_weight)):
        on_grid = (cells >= 0) & (cells < num_cells)
        weights[rows[on_grid], cells[on_grid]] = cell_weight[on_grid]
    return weights


def _pixel_extent(start, end, size):
    """Pixels whose centre lies in [start, end), clipped to [0, size) → (first, stop) ints."""
    first = max(int(np.ceil(start - 0.5)), 0)
    stop = min(int(np.ceil(end - 0.5)), size)
    return first, stop


def _pasted_crops(masks, boxes, image_hw):
    """Yield (k, row slice, col slice, float32 crop) for each detection covering at least one pixel centre."""
    masks = np.asarray(masks, np.float32)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    image_h, image_w = int(image_hw[0]), int(image_hw[1])
    mask_h, mask_w = masks.shape[1:3]
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        row_first, row_stop = _pixel_extent(y1, y2, image_h)
        col_first, col_stop = _pixel_extent(x1, x2, image_w)
        if row_stop <= row_first or col_stop <= col_first:
            continue
        row_weights = _interpolation_weights(y1, y2 - y1, mask_h, row_first, row_stop - row_first)
        col_weights = _interpolation_weights(x1, x2 - x1, mask_w, col_first, col_stop - col_first)
        # Bilinear interpolation is separable: rows then columns, two small matrix products.
        crop = row_weights @ masks[k] @ col_weights.T
        yield k, slice(row_first, row_stop), slice(col_first, col_stop), crop


def _torch_bilinear_weights(in_size, out_size):
    """torch's bilinear resize (align_corners=False, no antialiasing) as weights → float64
    [out_size, in_size]."""
    source = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    lower = np.floor(source).astype(np.int64)
    upper = np.minimum(lower + 1, in_size - 1)
    upper_weight = source - lower
    weights = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    # At the last cell lower == upper: both weights land on it.
    np.add.at(weights, (rows, lower), 1.0 - upper_weight)
    np.add.at(weights, (rows, upper), upper_weight)
    return weights


def _torchvision_crops(masks, boxes, image_hw):
    """`_pasted_crops` as torchvision's `paste_masks_in_image` computes them.

    The mask gets one cell of zero padding and its box grows by (M+2)/M about its centre
    (in float32), is truncated to integers and covers pixels x1..x2 inclusive; the padded
    mask is resized to that many pixels.
    """
    masks = np.pad(np.asarray(masks, np.float32), ((0, 0), (1, 1), (1, 1)))
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    image_h, image_w = int(image_hw[0]), int(image_hw[1])
    num_cells = masks.shape[1]
    growth = np.float32(num_cells / (num_cells - 2))
    centres = (boxes[:, :2] + boxes[:, 2:]) * np.float32(0.5)
    halves = (boxes[:, 2:] - boxes[:, :2]) * np.float32(0.5) * growth
    expanded = np.trunc(np.concatenate([centres - halves, centres + halves], axis=1)).astype(np.int64)
    for k, (y1, x1, y2, x2) in enumerate(expanded):
        row_first, row_stop = max(y1, 0), min(y2 + 1, image_h)
        col_first, col_stop = max(x1, 0), min(x2 + 1, image_w)
        if row_stop <= row_first or col_stop <= col_first:
            continue
        # A box that covers a pixel has y2 >= y1, so these sizes are at least 1.
        row_weights = _torch_bilinear_weights(num_cells, y2 - y1 + 1)[row_first - y1:row_stop - y1]
        col_weights = _torch_bilinear_weights(num_cells, x2 - x1 + 1)[col_first - x1:col_stop - x1]
        crop = (row_weights @ masks[k] @ col_weights.T).astype(np.float32)
        yield k, slice(row_first, row_stop), slice(col_first, col_stop), crop


def _crops(masks, boxes, image_hw, method):
    if method == "centres":
        return _pasted_crops(masks, boxes, image_hw)
    if method == "torchvision":
        return _torchvision_crops(masks, boxes, image_hw)
    raise ValueError(f"unknown paste method {method!r}; choose one of {PASTE_METHODS}")


def paste_mask_probabilities(masks, boxes, image_hw, method="centres"):
    """masks [K, M, M], boxes [K, 4], image_hw (H, W) → float32 [K, H, W]."""
    pasted = np.zeros((len(boxes), int(image_hw[0]), int(image_hw[1])), np.float32)
    for k, rows, cols, crop in _crops(masks, boxes, image_hw, method):
        pasted[k, rows, cols] = crop
    return pasted


def paste_masks(masks, boxes, image_hw, threshold=MASK_THRESHOLD, method="centres"):
    """`paste_mask_probabilities(...) >= threshold`, box by box → bool [K, H, W]."""
    pasted = np.zeros((len(boxes), int(image_hw[0]), int(image_hw[1])), bool)
    for k, rows, cols, crop in _crops(masks, boxes, image_hw, method):
        pasted[k, rows, cols] = crop >= threshold
    return pasted

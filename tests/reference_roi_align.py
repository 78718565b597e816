"""Independent, loop-based numpy references for RoIAlign and FPN level assignment.

Written from the documented semantics of torchvision.ops.roi_align (Mask R-CNN, He et al.
2017; `aligned` from Detectron2), not from the code under test. Slow on purpose: every
sample point is interpolated by its own scalar arithmetic so the reference is easy to audit.
Layout here: features [H, W, C], boxes (y1, x1, y2, x2) in input pixels.
"""

import math

import numpy as np


def bilinear_sample(features, y, x):
    """Value of features [H, W, C] at continuous index (y, x), torchvision's border rules.

    A point more than one cell outside the map (y < -1 or y > H, same for x) reads 0.
    Otherwise the coordinate is clamped to ≥ 0, and a point at or past the last row
    (column) reads that row (column).
    """
    height, width = features.shape[:2]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(features.shape[2], np.float64)
    y = max(y, 0.0)
    x = max(x, 0.0)
    y_low = int(y)
    x_low = int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly = y - y_low
    lx = x - x_low
    hy = 1.0 - ly
    hx = 1.0 - lx
    f = features.astype(np.float64)
    return (hy * hx * f[y_low, x_low] + hy * lx * f[y_low, x_high]
            + ly * hx * f[y_high, x_low] + ly * lx * f[y_high, x_high])


def roi_align_reference(features, boxes, output_size, spatial_scale, sampling_ratio, aligned):
    """RoIAlign of boxes [N, 4] on one map [H, W, C] → float64 [N, P, P, C]."""
    assert sampling_ratio > 0
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    channels = features.shape[2]
    out = np.zeros((len(boxes), output_size, output_size, channels), np.float64)
    offset = 0.5 if aligned else 0.0
    for n, (y1, x1, y2, x2) in enumerate(boxes):
        start_y = y1 * spatial_scale - offset
        start_x = x1 * spatial_scale - offset
        roi_h = y2 * spatial_scale - offset - start_y
        roi_w = x2 * spatial_scale - offset - start_x
        if not aligned:
            roi_h = max(roi_h, 1.0)
            roi_w = max(roi_w, 1.0)
        bin_h = roi_h / output_size
        bin_w = roi_w / output_size
        for py in range(output_size):
            for px in range(output_size):
                total = np.zeros(channels, np.float64)
                for iy in range(sampling_ratio):
                    y = start_y + py * bin_h + (iy + 0.5) * bin_h / sampling_ratio
                    for ix in range(sampling_ratio):
                        x = start_x + px * bin_w + (ix + 0.5) * bin_w / sampling_ratio
                        total += bilinear_sample(features, y, x)
                out[n, py, px] = total / (sampling_ratio * sampling_ratio)
    return out


def assign_level_reference(box, min_level, max_level, canonical_level=4, canonical_size=224.0):
    """FPN level of one box (Lin et al. 2017, eq. 1) with the 1e-6 tie-break, clamped."""
    y1, x1, y2, x2 = (float(v) for v in box)
    area = max(y2 - y1, 0.0) * max(x2 - x1, 0.0)
    if area <= 0.0:
        return min_level
    level = math.floor(canonical_level + math.log2(math.sqrt(area) / canonical_size) + 1e-6)
    return int(min(max(level, min_level), max_level))

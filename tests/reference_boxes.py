"""Box overlap in numpy, written apart from `ops.boxes`, for tests that compare detections.

Shapes: N and M boxes, (y1, x1, y2, x2) in pixels.
"""

import numpy as np


def pairwise_iou(boxes_a, boxes_b):
    """IoU of every box of [N, 4] with every box of [M, 4] → [N, M]."""
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    area_a = np.prod(boxes_a[:, 2:] - boxes_a[:, :2], axis=-1)
    area_b = np.prod(boxes_b[:, 2:] - boxes_b[:, :2], axis=-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)

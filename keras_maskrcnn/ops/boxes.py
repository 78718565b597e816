"""Box geometry.

Boxes are float32 [..., 4] as (y1, x1, y2, x2) in absolute pixels; a box covers the
continuous region y1 ≤ y < y2, x1 ≤ x < x2 (pixel (r, c) covers [r, r+1) × [c, c+1)).
Shapes: N, M box counts; B batch.
"""

import tensorflow as tf


def box_area(boxes):
    """[..., 4] → [...]; empty or inverted boxes have area 0."""
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    return tf.maximum(y2 - y1, 0.0) * tf.maximum(x2 - x1, 0.0)


def pairwise_iou(boxes_a, boxes_b):
    """IoU of every pair: [..., N, 4] × [..., M, 4] → [..., N, M] (0 where the union is empty)."""
    a = boxes_a[..., :, None, :]
    b = boxes_b[..., None, :, :]
    inter_hw = tf.maximum(
        tf.minimum(a[..., 2:], b[..., 2:]) - tf.maximum(a[..., :2], b[..., :2]), 0.0)
    inter = inter_hw[..., 0] * inter_hw[..., 1]
    union = box_area(a) + box_area(b) - inter
    return tf.math.divide_no_nan(inter, union)


def clip_boxes(boxes, height, width):
    """Clip [..., 4] boxes to [0, height] × [0, width]; height/width broadcast against [...]."""
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    height = tf.cast(height, boxes.dtype)
    width = tf.cast(width, boxes.dtype)
    return tf.stack([
        tf.clip_by_value(y1, 0.0, height), tf.clip_by_value(x1, 0.0, width),
        tf.clip_by_value(y2, 0.0, height), tf.clip_by_value(x2, 0.0, width)], axis=-1)


def box_sizes(boxes):
    """Heights and widths: [..., 4] → ([...], [...])."""
    return boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]

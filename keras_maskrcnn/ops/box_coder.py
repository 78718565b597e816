"""Encode boxes as deltas relative to reference boxes (anchors or RoIs), and back.

Deltas are (dy, dx, dh, dw) scaled by per-coordinate weights, as in Faster R-CNN
(Ren et al. 2015, eq. 2): dy = wy·(cy − cy_ref)/h_ref, dh = wh·log(h/h_ref).
Shapes: [..., 4] in, [..., 4] out; the leading dimensions of boxes and references broadcast.
"""

import math

import tensorflow as tf

# Largest log-scale change a delta may decode to, so exp() cannot overflow (Detectron).
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def _centers_and_sizes(boxes):
    h = boxes[..., 2] - boxes[..., 0]
    w = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * h, boxes[..., 1] + 0.5 * w, h, w


def encode_boxes(boxes, reference_boxes, weights):
    """Deltas that turn `reference_boxes` into `boxes`: [..., 4]."""
    wy, wx, wh, ww = weights
    cy, cx, h, w = _centers_and_sizes(boxes)
    ref_cy, ref_cx, ref_h, ref_w = _centers_and_sizes(reference_boxes)
    # Degenerate references only occur on padded entries, whose targets are masked out.
    ref_h = tf.maximum(ref_h, 1e-6)
    ref_w = tf.maximum(ref_w, 1e-6)
    return tf.stack([
        wy * (cy - ref_cy) / ref_h,
        wx * (cx - ref_cx) / ref_w,
        wh * tf.math.log(tf.maximum(h, 1e-6) / ref_h),
        ww * tf.math.log(tf.maximum(w, 1e-6) / ref_w)], axis=-1)


def decode_boxes(deltas, reference_boxes, weights):
    """Boxes that `deltas` describe relative to `reference_boxes`: [..., 4]."""
    wy, wx, wh, ww = weights
    ref_cy, ref_cx, ref_h, ref_w = _centers_and_sizes(reference_boxes)
    dy = deltas[..., 0] / wy
    dx = deltas[..., 1] / wx
    dh = tf.minimum(deltas[..., 2] / wh, BBOX_XFORM_CLIP)
    dw = tf.minimum(deltas[..., 3] / ww, BBOX_XFORM_CLIP)
    cy = dy * ref_h + ref_cy
    cx = dx * ref_w + ref_cx
    h = tf.exp(dh) * ref_h
    w = tf.exp(dw) * ref_w
    return tf.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)

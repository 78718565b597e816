"""Anchor boxes over FPN levels.

Aspect ratio means height / width. At each feature location the anchors are ordered by
aspect ratio, then by size; locations are ordered row-major, and levels from the finest.
Anchor centres sit at (i·stride, j·stride) and the base anchor corners are rounded to
whole pixels, as torchvision's AnchorGenerator does, so converted weights see the anchors
they were trained with. For the same reason a level's stride is torchvision's
canvas side // feature side, per axis: on an 800-px side P6 has 13 rows 61 px apart, not 64.
Shapes: A anchors in total, A_l at level l.

A canvas whose size is known when the graph is built gets numpy anchors (constants in the graph,
as the TFLite export needs); one known only at run time (a canvas per image) gets the same
anchors computed in the graph (`multilevel_anchors_in_graph`).
"""

import numpy as np
import tensorflow as tf


def base_anchors(sizes, aspect_ratios):
    """Anchors centred at the origin: float32 [len(aspect_ratios)·len(sizes), 4]."""
    ratios = np.asarray(aspect_ratios, np.float64)
    sizes = np.asarray(sizes, np.float64)
    h_ratios = np.sqrt(ratios)
    w_ratios = 1.0 / h_ratios
    hs = (h_ratios[:, None] * sizes[None, :]).reshape(-1)
    ws = (w_ratios[:, None] * sizes[None, :]).reshape(-1)
    return np.round(np.stack([-hs, -ws, hs, ws], axis=1) / 2).astype(np.float32)


def level_anchors(feature_hw, stride, sizes, aspect_ratios):
    """Anchors of one level: float32 [H_l·W_l·anchors_per_location, 4].

    `stride` is one number or a (row, column) pair.
    """
    base = base_anchors(sizes, aspect_ratios)
    stride_y, stride_x = np.broadcast_to(stride, (2,)).tolist()
    ys = np.arange(feature_hw[0], dtype=np.float32) * stride_y
    xs = np.arange(feature_hw[1], dtype=np.float32) * stride_x
    cy, cx = np.meshgrid(ys, xs, indexing="ij")
    shifts = np.stack([cy, cx, cy, cx], axis=-1).reshape(-1, 1, 4)
    return (shifts + base[None]).reshape(-1, 4)


def multilevel_anchors(image_size, strides, sizes_per_level, aspect_ratios):
    """Anchors of every level for a padded canvas of `image_size`.

    Returns a list of float32 [A_l, 4] arrays, one per level. A level's feature map has
    ceil(side / stride) cells per side; its anchors are spaced side // cells apart (see the
    module docstring), which is `stride` whenever the stride divides the side.
    """
    anchors = []
    for stride, sizes in zip(strides, sizes_per_level):
        feature_hw = [-(-side // stride) for side in image_size]
        spacing = [side // cells for side, cells in zip(image_size, feature_hw)]
        anchors.append(level_anchors(feature_hw, spacing, sizes, aspect_ratios))
    return anchors


def multilevel_anchors_in_graph(canvas_hw, strides, sizes_per_level, aspect_ratios):
    """`multilevel_anchors` for a canvas size known only at run time.

    canvas_hw: int32 tensor [2] (H, W). Returns a list of float32 [A_l, 4] tensors.
    """
    canvas_hw = tf.cast(canvas_hw, tf.int32)
    anchors = []
    for stride, sizes in zip(strides, sizes_per_level):
        cells = (canvas_hw + stride - 1) // stride
        spacing = tf.cast(canvas_hw // cells, tf.float32)
        ys = tf.range(cells[0], dtype=tf.float32) * spacing[0]
        xs = tf.range(cells[1], dtype=tf.float32) * spacing[1]
        cy, cx = tf.meshgrid(ys, xs, indexing="ij")
        shifts = tf.reshape(tf.stack([cy, cx, cy, cx], axis=-1), [-1, 1, 4])
        base = tf.constant(base_anchors(sizes, aspect_ratios))
        anchors.append(tf.reshape(shifts + base[None], [-1, 4]))
    return anchors

"""RoIAlign (He et al. 2017, §3) through `tf.image.crop_and_resize`, over FPN levels.

Each output bin averages `sampling_ratio`² bilinear samples taken at the centres of a
regular sub-grid of the bin. Feature coordinates follow torchvision's `roi_align`: a box
edge at pixel x maps to x·spatial_scale (minus 0.5 when `aligned`), sample points within
one cell outside the map clamp to its border, and points further out read 0. Replicating
the border once and letting `crop_and_resize` extrapolate zeros reproduces exactly that.
Shapes: B batch, N boxes per image, H×W×C features, P output size, L levels.
"""

import math

import tensorflow as tf

# FPN paper (Lin et al. 2017, eq. 1): a 224² box maps to level k0 = 4.
CANONICAL_BOX_SIZE = 224.0
CANONICAL_LEVEL = 4


def grid_crop_boxes(first, last, map_hw):
    """Normalised crop boxes for `crop_and_resize` on a map padded by one cell on every side.

    Args:
      first: [N, 2] (y, x) of the first sample point in map index coordinates (unpadded).
      last: [N, 2] (y, x) of the last sample point.
      map_hw: (h, w) of the unpadded map.
    Returns: float32 [N, 4] normalised (y1, x1, y2, x2) for the padded (h+2)×(w+2) map.
    """
    padded_extent = tf.cast(tf.stack(map_hw), tf.float32) + 1.0
    return tf.concat([(first + 1.0) / padded_extent, (last + 1.0) / padded_extent], axis=-1)


def replicate_border(features):
    """Pad [B, H, W, C] by one cell on each side, copying the edge values → [B, H+2, W+2, C]."""
    features = tf.concat([features[:, :1], features, features[:, -1:]], axis=1)
    return tf.concat([features[:, :, :1], features, features[:, :, -1:]], axis=2)


def roi_align(features, boxes, output_size, spatial_scale, sampling_ratio, aligned):
    """RoIAlign on one feature map.

    Args:
      features: [B, H, W, C].
      boxes: [B, N, 4] (y1, x1, y2, x2) in input pixels.
      output_size: P.
      spatial_scale: 1 / stride of the map.
      sampling_ratio: samples per bin along each axis (> 0).
      aligned: shift by half a pixel so box edges fall on pixel edges (Detectron2's fix).
    Returns: [B, N, P, P, C].
    """
    if sampling_ratio <= 0:
        raise ValueError(f"sampling_ratio must be positive, got {sampling_ratio}")
    batch = tf.shape(boxes)[0]
    num_boxes = tf.shape(boxes)[1]
    map_hw = tf.shape(features)[1:3]
    offset = 0.5 if aligned else 0.0
    scaled = tf.reshape(boxes, [-1, 4]) * spatial_scale - offset
    start = scaled[:, :2]
    extent = scaled[:, 2:] - start
    if not aligned:
        # torchvision's legacy RoIAlign forces RoIs to be at least one cell wide.
        extent = tf.maximum(extent, 1.0)
    samples = output_size * sampling_ratio
    step = extent / samples
    crop_boxes = grid_crop_boxes(start + 0.5 * step, start + (samples - 0.5) * step, map_hw)
    box_indices = tf.repeat(tf.range(batch), num_boxes)
    crops = tf.image.crop_and_resize(
        replicate_border(features), crop_boxes, box_indices, [samples, samples],
        method="bilinear", extrapolation_value=0.0)
    if sampling_ratio > 1:
        crops = tf.nn.avg_pool2d(crops, sampling_ratio, sampling_ratio, "VALID")
    channels = features.shape[-1]
    return tf.reshape(crops, [batch, num_boxes, output_size, output_size, channels])


def assign_levels(boxes, min_level, max_level,
                  canonical_level=CANONICAL_LEVEL, canonical_size=CANONICAL_BOX_SIZE):
    """FPN level of each box from its size: [..., 4] → int32 [...] in [min_level, max_level]."""
    area = tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    # The epsilon keeps boxes of exactly canonical size on their level despite rounding.
    level = tf.floor(canonical_level + tf.math.log(tf.sqrt(area) / canonical_size) / math.log(2.0) + 1e-6)
    return tf.cast(tf.clip_by_value(level, min_level, max_level), tf.int32)


def multilevel_roi_align(features, boxes, output_size, sampling_ratio, aligned, min_level,
                         canonical_level=CANONICAL_LEVEL, canonical_size=CANONICAL_BOX_SIZE):
    """RoIAlign where each box reads the FPN level its size selects.

    Args:
      features: list of [B, H_l, W_l, C], levels min_level, min_level+1, ... (stride 2^level).
      boxes: [B, N, 4] in input pixels.
    Returns: [B, N, P, P, C].

    Every box is pooled from every level and the right one is kept: static shapes
    (no gather by level) are what TFLite and XLA need, at L× the pooling cost.
    """
    max_level = min_level + len(features) - 1
    levels = assign_levels(boxes, min_level, max_level, canonical_level, canonical_size)
    pooled = None
    for offset, level_features in enumerate(features):
        level = min_level + offset
        level_pooled = roi_align(level_features, boxes, output_size, 1.0 / 2 ** level,
                                 sampling_ratio, aligned)
        if pooled is None:
            pooled = level_pooled
        else:
            selected = tf.equal(levels, level)[:, :, None, None, None]
            pooled = tf.where(selected, level_pooled, pooled)
    return pooled

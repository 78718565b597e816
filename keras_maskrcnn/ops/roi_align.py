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
    batch = tf.shape(boxes)[0]
    num_boxes = tf.shape(boxes)[1]
    crops = _roi_align_indexed(features, tf.reshape(boxes, [-1, 4]),
                               tf.repeat(tf.range(batch), num_boxes), output_size,
                               spatial_scale, sampling_ratio, aligned)
    channels = features.shape[-1]
    return tf.reshape(crops, [batch, num_boxes, output_size, output_size, channels])


def _roi_align_indexed(features, boxes, box_indices, output_size, spatial_scale,
                       sampling_ratio, aligned):
    """`roi_align` of boxes [M, 4] on the maps features[box_indices] (int32 [M]) → [M, P, P, C],
    in the features' dtype (`crop_and_resize` itself samples bfloat16 maps in float32)."""
    if sampling_ratio <= 0:
        raise ValueError(f"sampling_ratio must be positive, got {sampling_ratio}")
    dtype = features.dtype
    if dtype == tf.bfloat16:
        features = tf.cast(features, tf.float32)
    map_hw = tf.shape(features)[1:3]
    offset = 0.5 if aligned else 0.0
    scaled = boxes * spatial_scale - offset
    start = scaled[:, :2]
    extent = scaled[:, 2:] - start
    if not aligned:
        # torchvision's legacy RoIAlign forces RoIs to be at least one cell wide.
        extent = tf.maximum(extent, 1.0)
    samples = output_size * sampling_ratio
    step = extent / samples
    crop_boxes = grid_crop_boxes(start + 0.5 * step, start + (samples - 0.5) * step, map_hw)
    crops = tf.image.crop_and_resize(
        replicate_border(features), crop_boxes, box_indices, [samples, samples],
        method="bilinear", extrapolation_value=0.0)
    if sampling_ratio > 1:
        crops = tf.nn.avg_pool2d(crops, sampling_ratio, sampling_ratio, "VALID")
    return tf.cast(crops, dtype)


def assign_levels(boxes, min_level, max_level,
                  canonical_level=CANONICAL_LEVEL, canonical_size=CANONICAL_BOX_SIZE):
    """FPN level of each box from its size: [..., 4] → int32 [...] in [min_level, max_level]."""
    area = tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    # Empty (padding) boxes would take log(0) = -inf, which int8 calibration cannot quantize.
    # Boxes under 1 px² land on min_level either way, so the floor changes no level.
    area = tf.maximum(area, 1.0)
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


def multilevel_roi_align_by_level(features, boxes, output_size, sampling_ratio, aligned,
                                  min_level, canonical_level=CANONICAL_LEVEL,
                                  canonical_size=CANONICAL_BOX_SIZE):
    """`multilevel_roi_align` with each box pooled from its own level only: the boxes of each
    level are gathered, `roi_align`ed and put back in place.

    L× less pooling than `multilevel_roi_align` and much less memory traffic than
    `multilevel_roi_align_gather` (r50_fpn's 1000 proposals at 800×1344: 74 against 231 ms),
    but the per-level counts are known only at run time, which TFLite's builtin ops and XLA cannot
    take: for inference on the host (`inference.compiled_forward`).
    Args/Returns: as `multilevel_roi_align`.
    """
    batch = tf.shape(boxes)[0]
    num_boxes = tf.shape(boxes)[1]
    channels = features[0].shape[-1]
    levels = tf.reshape(assign_levels(boxes, min_level, min_level + len(features) - 1,
                                      canonical_level, canonical_size), [-1])
    image_of_box = tf.repeat(tf.range(batch), num_boxes)
    flat_boxes = tf.reshape(boxes, [-1, 4])
    pooled, positions = [], []
    for offset, level_features in enumerate(features):
        level = min_level + offset
        position = tf.reshape(tf.where(tf.equal(levels, level)), [-1])
        level_boxes = tf.gather(flat_boxes, position)
        pooled.append(_roi_align_indexed(level_features, level_boxes,
                                         tf.gather(image_of_box, position), output_size,
                                         1.0 / 2 ** level, sampling_ratio, aligned))
        positions.append(tf.cast(position, tf.int32))
    merged = tf.dynamic_stitch(positions, pooled)
    return tf.reshape(merged, [batch, num_boxes, output_size, output_size, channels])


def _bilinear_taps(coords, size):
    """Neighbour indices and weights of sample coordinates along one axis.

    torchvision's rule: a point outside [−1, size] reads 0; otherwise it is clamped to
    ≥ 0 and, past the last cell, snaps to it.
    Args: coords float32 [...]; size float32 broadcastable to coords.
    Returns: (low, high) int32 [...], (low_weight, high_weight) float32 [...].
    """
    inside = (coords >= -1.0) & (coords <= size)
    coords = tf.maximum(coords, 0.0)
    low = tf.floor(coords)
    at_end = low >= size - 1.0
    low = tf.where(at_end, size - 1.0, low)
    high = tf.where(at_end, low, low + 1.0)
    high_weight = tf.where(at_end, 0.0, coords - low)
    low_weight = (1.0 - high_weight) * tf.cast(inside, tf.float32)
    high_weight = high_weight * tf.cast(inside, tf.float32)
    return (tf.cast(low, tf.int32), tf.cast(high, tf.int32)), (low_weight, high_weight)


def _static_or_run_time(tensor, axis):
    """tensor.shape[axis] as an int when known, else as an int32 scalar tensor."""
    size = tensor.shape[axis]
    return size if size is not None else tf.shape(tensor)[axis]


def multilevel_roi_align_gather(features, boxes, output_size, sampling_ratio, aligned, min_level,
                                canonical_level=CANONICAL_LEVEL, canonical_size=CANONICAL_BOX_SIZE):
    """`multilevel_roi_align` made of gathers and arithmetic only (TFLite builtin ops).

    All levels are flattened into one table, each box reads only its own level, and its
    bilinear samples are four gathers weighted and summed: no L× pooling, and a gradient
    that is a scatter-add rather than `crop_and_resize`'s slow image gradient.
    Args/Returns: as `multilevel_roi_align`. Level sizes known when the graph is built become
    constants (as TFLite needs); unknown ones are read at run time.
    """
    if sampling_ratio <= 0:
        raise ValueError(f"sampling_ratio must be positive, got {sampling_ratio}")
    max_level = min_level + len(features) - 1
    level_index = assign_levels(boxes, min_level, max_level, canonical_level, canonical_size) - min_level
    heights = [_static_or_run_time(f, 1) for f in features]
    widths = [_static_or_run_time(f, 2) for f in features]
    offsets, total = [], 0
    for height, width in zip(heights, widths):
        offsets.append(total)
        total = total + height * width
    batch = tf.shape(boxes)[0]
    channels = features[0].shape[-1]
    table = tf.concat([tf.reshape(f, [batch, -1, channels]) for f in features], axis=1)

    def per_box(values, dtype=tf.float32):
        values = tf.stack([tf.cast(value, dtype) for value in values])
        return tf.gather(values, level_index)[..., None]

    scale = per_box([1.0 / 2 ** (min_level + i) for i in range(len(features))])
    height, width = per_box(heights), per_box(widths)
    offset, row_stride = per_box(offsets, tf.int32), per_box(widths, tf.int32)
    shift = 0.5 if aligned else 0.0
    start = boxes * scale[..., None][..., 0] - shift
    extent_y = start[..., 2:3] - start[..., 0:1]
    extent_x = start[..., 3:4] - start[..., 1:2]
    if not aligned:
        extent_y, extent_x = tf.maximum(extent_y, 1.0), tf.maximum(extent_x, 1.0)
    samples = output_size * sampling_ratio
    fractions = (tf.range(samples, dtype=tf.float32) + 0.5) / samples
    (y_low, y_high), (wy_low, wy_high) = _bilinear_taps(start[..., 0:1] + fractions * extent_y, height)
    (x_low, x_high), (wx_low, wx_high) = _bilinear_taps(start[..., 1:2] + fractions * extent_x, width)
    pooled = 0.0
    for rows, row_weights in ((y_low, wy_low), (y_high, wy_high)):
        for cols, col_weights in ((x_low, wx_low), (x_high, wx_high)):
            # [B, N, S, S] flat indices into the table; weights broadcast over channels.
            indices = offset[..., None] + rows[..., :, None] * row_stride[..., None] + cols[..., None, :]
            # Sampling coordinates and weights are float32; only the product takes the features'
            # dtype (bfloat16 or float16 under mixed precision).
            weights = tf.cast(row_weights[..., :, None] * col_weights[..., None, :], table.dtype)
            pooled += tf.gather(table, indices, batch_dims=1) * weights[..., None]
    num_boxes = tf.shape(boxes)[1]
    # A 4-D average pool rather than a 7-D mean: TFLite's XNNPACK delegate cannot run the latter.
    pooled = tf.nn.avg_pool2d(tf.reshape(pooled, [-1, samples, samples, channels]),
                              sampling_ratio, sampling_ratio, "VALID")
    return tf.reshape(pooled, [batch, num_boxes, output_size, output_size, channels])

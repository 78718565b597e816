"""Instance masks as the model sees them.

Ground-truth masks travel as "mini-masks": each instance's mask resampled to S×S over its
own box, so a batch holds [B, G, S, S] whatever the image size. Mask targets of an RoI are
read from the mini-mask of its matched instance.
Shapes: N instances, h×w image, S mini-mask size, B batch, G instances per image,
R RoIs, M mask-target size.
"""

import tensorflow as tf

from keras_maskrcnn.ops.roi_align import grid_crop_boxes

MASK_THRESHOLD = 0.5


def _zero_border(masks):
    """Pad [N, h, w] masks with one zero cell on every side → [N, h+2, w+2, 1]."""
    return tf.pad(masks, [[0, 0], [1, 1], [1, 1]])[..., None]


def crop_and_resize_masks(masks, boxes, size):
    """Sample each mask at the centres of a size×size grid over its box.

    Args:
      masks: float [N, h, w] full-image masks (0..1).
      boxes: float32 [N, 4] (y1, x1, y2, x2) in the masks' pixels.
      size: S.
    Returns: float32 [N, S, S], bilinear, reading 0 outside the mask.
    """
    masks = tf.cast(masks, tf.float32)
    boxes = tf.cast(boxes, tf.float32)
    step = (boxes[:, 2:] - boxes[:, :2]) / size
    # Pixel r's centre is at r + 0.5 in box coordinates, so index = coordinate − 0.5.
    first = boxes[:, :2] + 0.5 * step - 0.5
    last = boxes[:, :2] + (size - 0.5) * step - 0.5
    crop_boxes = grid_crop_boxes(first, last, tf.shape(masks)[1:3])
    crops = tf.image.crop_and_resize(
        _zero_border(masks), crop_boxes, tf.range(tf.shape(masks)[0]), [size, size],
        method="bilinear", extrapolation_value=0.0)
    return crops[..., 0]


def _resample_in_box_frame(flat_masks, mask_indices, from_boxes, to_boxes, size):
    """Read box-frame masks over other boxes, bilinear, 0 outside the mask.

    Args:
      flat_masks: [N, S, S] masks, each over its own box.
      mask_indices: int32 [K] index into N of each box pair.
      from_boxes: [K, 4] the box each read mask covers; to_boxes: [K, 4] the box to read over.
      size: output side M.
    Returns: float32 [K, M, M].
    """
    mini_size = tf.cast(tf.shape(flat_masks)[-1], tf.float32)
    start = from_boxes[:, :2]
    extent = tf.maximum(from_boxes[:, 2:] - start, 1e-6)
    to_start = to_boxes[:, :2]
    to_step = (to_boxes[:, 2:] - to_start) / size

    def to_mini_index(point):
        return (point - start) / extent * mini_size - 0.5

    first = to_mini_index(to_start + 0.5 * to_step)
    last = to_mini_index(to_start + (size - 0.5) * to_step)
    fractions = tf.range(size, dtype=tf.float32) / max(size - 1, 1)
    points = first[:, None, :] + fractions[None, :, None] * (last - first)[:, None, :]
    return _bilinear_read(tf.cast(flat_masks, tf.float32), mask_indices, points[..., 0],
                          points[..., 1])


def _bilinear_read(flat_masks, mask_indices, rows, cols):
    """`tf.image.crop_and_resize`'s bilinear reading of masks bordered by one zero cell, as
    gathers (XLA has no CropAndResize kernel, and the training step runs under XLA with
    `--jit-compile`).

    Args:
      flat_masks: [N, S, S]; mask_indices: int32 [K] the mask each row reads.
      rows: [K, M] row coordinates in mask cells (centre of cell r at r); cols: [K, M].
    Returns: float32 [K, M, M]; 0 beyond the zero border.
    """
    padded = tf.pad(flat_masks, [[0, 0], [1, 1], [1, 1]])
    last = tf.cast(tf.shape(padded)[1] - 1, tf.float32)

    def taps(coords):
        coords = coords + 1.0  # into the bordered mask
        inside = (coords >= 0.0) & (coords <= last)
        low = tf.clip_by_value(tf.floor(coords), 0.0, last)
        weight = coords - tf.floor(coords)
        high = tf.minimum(low + 1.0, last)
        return tf.cast(low, tf.int32), tf.cast(high, tf.int32), weight, inside

    row_low, row_high, row_weight, row_inside = taps(rows)
    col_low, col_high, col_weight, col_inside = taps(cols)
    masks = tf.gather(padded, mask_indices)  # [K, S+2, S+2]

    def read(row_index, col_index):
        picked_rows = tf.gather(masks, row_index, batch_dims=1)  # [K, M, S+2]
        return tf.gather(picked_rows, col_index, batch_dims=1, axis=2)  # [K, M, M]

    top = read(row_low, col_low) * (1.0 - col_weight[:, None, :]) + \
        read(row_low, col_high) * col_weight[:, None, :]
    bottom = read(row_high, col_low) * (1.0 - col_weight[:, None, :]) + \
        read(row_high, col_high) * col_weight[:, None, :]
    values = top * (1.0 - row_weight[:, :, None]) + bottom * row_weight[:, :, None]
    inside = row_inside[:, :, None] & col_inside[:, None, :]
    return tf.where(inside, values, 0.0)


def reframe_mini_masks(mini_masks, boxes, new_boxes):
    """Mini-masks over `boxes` resampled over `new_boxes` (e.g. the boxes after a crop clipped
    them); [N, S, S] → float32 [N, S, S]. Where a new box equals its old one the mask is unchanged.
    """
    count = tf.shape(mini_masks)[0]
    return _resample_in_box_frame(mini_masks, tf.range(count), tf.cast(boxes, tf.float32),
                                  tf.cast(new_boxes, tf.float32), mini_masks.shape[-1])


def roi_mask_targets(gt_mini_masks, gt_boxes, roi_boxes, matched_gt, size):
    """Binary mask targets of each RoI from the mini-mask of its matched instance.

    Args:
      gt_mini_masks: [B, G, S, S] (0..1).
      gt_boxes: [B, G, 4] in canvas pixels.
      roi_boxes: [B, R, 4] in canvas pixels.
      matched_gt: int32 [B, R] index into G.
      size: M.
    Returns: float32 [B, R, M, M] of 0/1 (bilinear value ≥ 0.5).
    """
    batch = tf.shape(roi_boxes)[0]
    num_rois = tf.shape(roi_boxes)[1]
    num_gt = tf.shape(gt_boxes)[1]
    matched_boxes = tf.gather(gt_boxes, matched_gt, batch_dims=1)
    mini_hw = tf.shape(gt_mini_masks)[2:4]
    flat_masks = tf.reshape(gt_mini_masks, [-1, mini_hw[0], mini_hw[1]])
    mask_indices = tf.reshape(tf.range(batch)[:, None] * num_gt + matched_gt, [-1])
    crops = _resample_in_box_frame(flat_masks, mask_indices, tf.reshape(matched_boxes, [-1, 4]),
                                   tf.reshape(roi_boxes, [-1, 4]), size)
    targets = tf.cast(crops >= MASK_THRESHOLD, tf.float32)
    return tf.reshape(targets, [batch, num_rois, size, size])

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
    mini_size = tf.cast(tf.shape(gt_mini_masks)[-1], tf.float32)
    matched_boxes = tf.gather(gt_boxes, matched_gt, batch_dims=1)
    gt_start = matched_boxes[..., :2]
    gt_extent = tf.maximum(matched_boxes[..., 2:] - gt_start, 1e-6)
    roi_start = roi_boxes[..., :2]
    roi_step = (roi_boxes[..., 2:] - roi_start) / size

    def to_mini_index(point):
        return (point - gt_start) / gt_extent * mini_size - 0.5

    first = to_mini_index(roi_start + 0.5 * roi_step)
    last = to_mini_index(roi_start + (size - 0.5) * roi_step)
    mini_hw = tf.shape(gt_mini_masks)[2:4]
    crop_boxes = grid_crop_boxes(tf.reshape(first, [-1, 2]), tf.reshape(last, [-1, 2]), mini_hw)
    flat_masks = tf.reshape(tf.cast(gt_mini_masks, tf.float32), [-1, mini_hw[0], mini_hw[1]])
    box_indices = tf.reshape(tf.range(batch)[:, None] * num_gt + matched_gt, [-1])
    crops = tf.image.crop_and_resize(
        _zero_border(flat_masks), crop_boxes, box_indices, [size, size],
        method="bilinear", extrapolation_value=0.0)
    targets = tf.cast(crops[..., 0] >= MASK_THRESHOLD, tf.float32)
    return tf.reshape(targets, [batch, num_rois, size, size])

"""Non-maximum suppression with static, padded outputs.

Shapes: B batch, N candidates, K kept (padded).
"""

import numpy as np
import tensorflow as tf

# Candidates scored at most this are never kept. Callers mark dropped candidates with it rather
# than -inf: int8 calibration records the range of every tensor and cannot quantize an
# infinite one. Far below any logit or probability.
INVALID_SCORE = -1e4


def batched_padded_nms(boxes, scores, max_output_size, iou_threshold, group_ids=None):
    """Greedy NMS per image (and per group, e.g. class or FPN level) with padded output.

    Boxes of different groups never suppress each other: each group is shifted to its own
    region of the plane before one NMS runs over all of them (torchvision's batched_nms).
    A static batch of 1 runs the single-image NMS op, which TFLite has as a builtin.

    Args:
      boxes: float32 [B, N, 4].
      scores: float32 [B, N]; candidates scored INVALID_SCORE or less (or -inf) are never kept.
      max_output_size: K.
      iou_threshold: suppress boxes overlapping a kept one by more than this.
      group_ids: optional int32 [B, N].
    Returns:
      indices int32 [B, K] into N, sorted by decreasing score; valid bool [B, K].
    """
    # TF's padded NMS treats boxes with no positive coordinate as padding: move every box
    # to coordinates ≥ 1 (IoU is shift-invariant), then give each group its own region.
    boxes = boxes - tf.reduce_min(boxes, axis=[1, 2], keepdims=True) + 1.0
    if group_ids is not None:
        span = tf.reduce_max(boxes, axis=[1, 2], keepdims=True) + 1.0
        boxes = boxes + tf.cast(group_ids, boxes.dtype)[..., None] * span
    # TF suppresses at IoU ≥ threshold; torchvision (and this docstring) only above it.
    strict_threshold = float(np.nextafter(np.float32(iou_threshold), np.float32(np.inf)))
    if boxes.shape[0] == 1:
        # TFLite gets the batched padded NMS as a WHILE loop of dozens of ops over dynamic
        # shapes; the single-image op lowers to the one builtin NON_MAX_SUPPRESSION_V4.
        indices, num_valid = tf.raw_ops.NonMaxSuppressionV4(
            boxes=boxes[0], scores=scores[0], max_output_size=max_output_size,
            iou_threshold=strict_threshold, score_threshold=float("-inf"),
            pad_to_max_output_size=True)
        indices, num_valid = indices[None], num_valid[None]
    else:
        indices, num_valid = tf.image.non_max_suppression_padded(
            boxes, scores, max_output_size, iou_threshold=strict_threshold,
            score_threshold=float("-inf"), pad_to_max_output_size=True)
    valid = tf.range(max_output_size)[None, :] < num_valid[:, None]
    # The padded NMS keeps invalid candidates when nothing better is left; they are not detections.
    valid &= tf.gather(scores, indices, batch_dims=1) > INVALID_SCORE
    return tf.where(valid, indices, 0), valid

"""Match candidate boxes (anchors or RoIs) to ground-truth boxes by IoU.

Shapes: B batch, N candidates, G ground-truth boxes (padded).
"""

import tensorflow as tf

FOREGROUND = 1
BACKGROUND = 0
IGNORE = -1


def match_boxes(iou, gt_valid, fg_threshold, bg_threshold, allow_low_quality_matches):
    """Label each candidate foreground, background or ignored.

    Args:
      iou: float32 [B, N, G].
      gt_valid: bool [B, G]; padded ground truth never matches.
      fg_threshold: IoU ≥ this is foreground.
      bg_threshold: IoU < this is background; between the two is ignored.
      allow_low_quality_matches: also make foreground every candidate that is the best
        match of some ground-truth box (ties included), so that no box goes unmatched
        (Faster R-CNN's RPN rule).
    Returns:
      matched_gt int32 [B, N] (index into G, 0 where unmatched), labels int32 [B, N].
    """
    iou = tf.where(gt_valid[:, None, :], iou, -1.0)
    matched_iou = tf.reduce_max(iou, axis=2)
    matched_gt = tf.argmax(iou, axis=2, output_type=tf.int32)
    labels = tf.where(matched_iou >= fg_threshold, FOREGROUND,
                      tf.where(matched_iou < bg_threshold, BACKGROUND, IGNORE))
    if allow_low_quality_matches:
        best_per_gt = tf.reduce_max(iou, axis=1, keepdims=True)
        is_best = tf.logical_and(tf.equal(iou, best_per_gt), best_per_gt > 0.0)
        labels = tf.where(tf.reduce_any(is_best, axis=2), FOREGROUND, labels)
    has_gt = tf.reduce_any(gt_valid, axis=1, keepdims=True)
    labels = tf.where(has_gt, labels, BACKGROUND)
    return matched_gt, tf.cast(labels, tf.int32)

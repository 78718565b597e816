"""The five Mask R-CNN losses as pure functions.

Shapes: B batch, A anchors, R RoIs, C foreground classes, M mask size.
Every loss sums over the whole batch and divides by a batch-wide count, so images with many
samples weigh more, as in torchvision and Detectron2. Under a tf.distribute strategy the count is
the global batch's (summed over the replicas), so each replica's loss is its share of the global
loss and the replicas' summed gradients are one device's at the same global batch. Classification and mask losses are means
over the sampled anchors, sampled RoIs and foreground RoIs. The two box losses sum over the
positives only, and `normalizer` says what divides that sum: "sampled", every sampled anchor or
RoI (torchvision's `RegionProposalNetwork.compute_loss` and `fastrcnn_loss`, Detectron2's), or
"positives", only the positives (a mean per positive, larger by 1 / positive share).
"""

import tensorflow as tf

from keras_maskrcnn.config import BOX_NORMALIZERS
from keras_maskrcnn.ops.replicas import sum_over_replicas


def _safe_count(mask):
    """Number of True entries over the global batch (all replicas), at least 1 so an empty set
    gives a zero loss, not NaN."""
    return tf.maximum(sum_over_replicas(tf.reduce_sum(tf.cast(mask, tf.float32))), 1.0)


def _box_denominator(positives, sampled, normalizer):
    """Count of `sampled` or of `positives` (bool [B, N]) as `normalizer` says."""
    if normalizer not in BOX_NORMALIZERS:
        raise ValueError(f"unknown box loss normalizer {normalizer!r}; choose one of "
                         f"{BOX_NORMALIZERS}")
    return _safe_count(sampled if normalizer == "sampled" else positives)


def smooth_l1(diff, beta):
    """Huber-like loss: 0.5·d²/β for |d| < β, |d| − 0.5β beyond (Fast R-CNN eq. 3 with β)."""
    abs_diff = tf.abs(diff)
    return tf.where(abs_diff < beta, 0.5 * abs_diff ** 2 / beta, abs_diff - 0.5 * beta)


def rpn_objectness_loss(logits, sampled_fg, sampled_bg):
    """Binary cross-entropy over the sampled anchors, averaged over them.

    logits [B, A]; sampled_fg, sampled_bg bool [B, A].
    """
    sampled = sampled_fg | sampled_bg
    per_anchor = tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(sampled_fg, tf.float32), logits)
    return tf.reduce_sum(tf.where(sampled, per_anchor, 0.0)) / _safe_count(sampled)


def rpn_box_loss(pred_deltas, target_deltas, sampled_fg, sampled_bg, beta, normalizer):
    """Smooth-L1 over the 4 deltas of sampled positive anchors, divided by the number of
    sampled anchors ("sampled") or of the positive ones ("positives").

    pred_deltas, target_deltas [B, A, 4]; sampled_fg, sampled_bg bool [B, A].
    """
    per_anchor = tf.reduce_sum(smooth_l1(pred_deltas - target_deltas, beta), axis=-1)
    total = tf.reduce_sum(tf.where(sampled_fg, per_anchor, 0.0))
    return total / _box_denominator(sampled_fg, sampled_fg | sampled_bg, normalizer)


def roi_class_loss(class_logits, class_targets, valid):
    """Softmax cross-entropy over all sampled RoIs, foreground and background: a classifier
    that never sees background cannot reject it.

    class_logits [B, R, C+1]; class_targets int32 [B, R]; valid bool [B, R].
    """
    per_roi = tf.nn.sparse_softmax_cross_entropy_with_logits(class_targets, class_logits)
    return tf.reduce_sum(tf.where(valid, per_roi, 0.0)) / _safe_count(valid)


def roi_box_loss(pred_deltas, class_targets, target_deltas, is_fg, valid, beta, normalizer):
    """Smooth-L1 on the deltas predicted for the ground-truth class of foreground RoIs,
    divided by the number of sampled RoIs ("sampled") or of the foreground ones ("positives").

    pred_deltas [B, R, C+1, 4]; class_targets int32 [B, R]; target_deltas [B, R, 4];
    is_fg, valid bool [B, R] (valid: sampled, False on padding slots).
    """
    class_deltas = tf.gather(pred_deltas, class_targets, batch_dims=2)
    per_roi = tf.reduce_sum(smooth_l1(class_deltas - target_deltas, beta), axis=-1)
    total = tf.reduce_sum(tf.where(is_fg, per_roi, 0.0))
    return total / _box_denominator(is_fg, valid, normalizer)


def mask_loss(mask_logits, class_targets, mask_targets, is_fg):
    """Per-pixel binary cross-entropy on the ground-truth class's mask of foreground RoIs,
    averaged over their pixels (Mask R-CNN §3: L_mask is defined only on class k).

    mask_logits [B, R, M, M, C]; class_targets int32 [B, R] (1..C on foreground);
    mask_targets [B, R, M, M]; is_fg bool [B, R].
    """
    channel = tf.maximum(class_targets - 1, 0)
    class_logits = tf.gather(tf.transpose(mask_logits, [0, 1, 4, 2, 3]), channel, batch_dims=2)
    per_pixel = tf.nn.sigmoid_cross_entropy_with_logits(mask_targets, class_logits)
    per_roi = tf.reduce_mean(per_pixel, axis=[2, 3])
    return tf.reduce_sum(tf.where(is_fg, per_roi, 0.0)) / _safe_count(is_fg)

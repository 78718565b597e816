"""Training-only target assignment: anchors → RPN targets, proposals → sampled RoIs with
class, box and mask targets.

Shapes: B batch, A anchors, G ground-truth instances (padded; class 0 = padding),
S mini-mask size, P proposals, R sampled RoIs, R_fg = foreground slots, M mask size.
"""

from typing import NamedTuple

import tensorflow as tf

from keras_maskrcnn.ops import box_coder, boxes as box_ops, masks, matching, sampling


class RPNTargets(NamedTuple):
    sampled_fg: tf.Tensor  # bool [B, A]
    sampled_bg: tf.Tensor  # bool [B, A]
    box_targets: tf.Tensor  # float32 [B, A, 4] deltas, meaningful where sampled_fg


class RoITargets(NamedTuple):
    rois: tf.Tensor  # float32 [B, R, 4], foreground first
    valid: tf.Tensor  # bool [B, R]
    is_fg: tf.Tensor  # bool [B, R]
    class_targets: tf.Tensor  # int32 [B, R], 0 for background
    box_targets: tf.Tensor  # float32 [B, R, 4] deltas, meaningful where is_fg
    matched_gt: tf.Tensor  # int32 [B, R]


def rpn_targets(anchors, gt_boxes, gt_valid, fg_iou_threshold, bg_iou_threshold, samples_per_image,
                positive_fraction, box_coder_weights, seeds):
    """Label anchors by IoU (Faster R-CNN §3.1.2), sample them, and encode box targets.

    anchors [A, 4]; gt_boxes [B, G, 4]; gt_valid bool [B, G]; seeds int [B, 2], one per image.
    """
    batch = tf.shape(gt_boxes)[0]
    batched_anchors = tf.broadcast_to(anchors[None], [batch, tf.shape(anchors)[0], 4])
    iou = box_ops.pairwise_iou(batched_anchors, gt_boxes)
    matched_gt, labels = matching.match_boxes(
        iou, gt_valid, fg_iou_threshold, bg_iou_threshold, allow_low_quality_matches=True)
    sampled_fg, sampled_bg = sampling.sample_balanced(labels, samples_per_image, positive_fraction, seeds)
    matched_boxes = tf.gather(gt_boxes, matched_gt, batch_dims=1)
    box_targets = box_coder.encode_boxes(matched_boxes, batched_anchors, box_coder_weights)
    return RPNTargets(sampled_fg, sampled_bg, box_targets)


def roi_targets(proposals, proposal_valid, gt_boxes, gt_classes, samples_per_image, positive_fraction,
                fg_iou_threshold, box_coder_weights, seeds):
    """Sample RoIs among the proposals and the ground-truth boxes themselves (Mask R-CNN
    adds them so the heads see perfect boxes from the first step).

    proposals [B, P, 4]; proposal_valid bool [B, P]; gt_boxes [B, G, 4]; gt_classes int32 [B, G];
    seeds int [B, 2], one per image.
    A candidate is foreground at IoU ≥ fg_iou_threshold with some instance, background below.
    """
    gt_valid = gt_classes > 0
    candidates = tf.concat([proposals, gt_boxes], axis=1)
    candidate_valid = tf.concat([proposal_valid, gt_valid], axis=1)
    iou = box_ops.pairwise_iou(candidates, gt_boxes)
    matched_gt, labels = matching.match_boxes(
        iou, gt_valid, fg_iou_threshold, fg_iou_threshold, allow_low_quality_matches=False)
    labels = tf.where(candidate_valid, labels, matching.IGNORE)
    sampled_fg, sampled_bg = sampling.sample_balanced(labels, samples_per_image, positive_fraction, seeds)
    indices, is_fg, valid = sampling.gather_sampled(sampled_fg, sampled_bg, samples_per_image)
    rois = tf.gather(candidates, indices, batch_dims=1)
    matched_gt = tf.gather(matched_gt, indices, batch_dims=1)
    class_targets = tf.where(is_fg, tf.gather(gt_classes, matched_gt, batch_dims=1), 0)
    matched_boxes = tf.gather(gt_boxes, matched_gt, batch_dims=1)
    box_targets = box_coder.encode_boxes(matched_boxes, rois, box_coder_weights)
    return RoITargets(tf.stop_gradient(rois), valid, is_fg, class_targets, box_targets, matched_gt)


def mask_targets(targets, gt_masks, gt_boxes, num_fg_slots, mask_size):
    """Mask targets of the first `num_fg_slots` RoIs, where all foreground RoIs sit.

    Returns: float32 [B, R_fg, M, M] of 0/1.
    """
    return masks.roi_mask_targets(gt_masks, gt_boxes, targets.rois[:, :num_fg_slots],
                                  targets.matched_gt[:, :num_fg_slots], mask_size)

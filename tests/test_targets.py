"""Target assignment: which anchors and RoIs train the heads, and on what."""

import numpy as np
import pytest
import tensorflow as tf

from keras_maskrcnn import targets
from keras_maskrcnn.ops import box_coder

WEIGHTS = (10.0, 10.0, 5.0, 5.0)
SAMPLES, POSITIVE_FRACTION, FG_IOU = 16, 0.25, 0.5


def _random_boxes(rng, count, size=128.0):
    corners = rng.uniform(0, size, (count, 2, 2))
    low, high = corners.min(axis=1), corners.max(axis=1) + 4.0
    return np.concatenate([low, high], axis=1).astype(np.float32)


def _roi_targets(proposals, proposal_valid, gt_boxes, gt_classes, seed=(1, 2)):
    return targets.roi_targets(
        tf.constant(proposals), tf.constant(proposal_valid), tf.constant(gt_boxes),
        tf.constant(gt_classes), SAMPLES, POSITIVE_FRACTION, FG_IOU, WEIGHTS,
        tf.tile(tf.constant(seed)[None], [len(gt_classes), 1]))


def test_ground_truth_boxes_join_the_proposals():
    # Proposals far from both instances: only the ground-truth boxes themselves can be
    # foreground, so the box head sees perfect boxes from the first step.
    gt_boxes = np.array([[[10, 10, 40, 50], [60, 70, 100, 120]]], np.float32)
    gt_classes = np.array([[2, 1]], np.int32)
    proposals = np.tile(np.array([[[0, 120, 4, 124]]], np.float32), [1, 20, 1])
    found = _roi_targets(proposals, np.ones((1, 20), bool), gt_boxes, gt_classes)
    is_fg = found.is_fg.numpy()[0]
    assert is_fg.sum() == 2
    fg_rois = found.rois.numpy()[0][is_fg]
    order = np.argsort(fg_rois[:, 0])
    np.testing.assert_array_equal(fg_rois[order], gt_boxes[0])
    np.testing.assert_array_equal(found.class_targets.numpy()[0][is_fg][order], [2, 1])
    # A ground-truth box is its own target: zero deltas.
    np.testing.assert_allclose(found.box_targets.numpy()[0][is_fg], 0.0, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_foreground_first_background_class_zero_and_padding_never_sampled(seed):
    rng = np.random.default_rng(seed)
    batch, num_proposals, num_gt = 3, 40, 4
    gt_boxes = np.stack([_random_boxes(rng, num_gt) for _ in range(batch)])
    gt_classes = rng.integers(1, 4, (batch, num_gt)).astype(np.int32)
    gt_classes[1, 2:] = 0  # padded instances
    gt_classes[2, :] = 0   # an image with no instance at all
    # Half the proposals jitter around the instances, half are random.
    near = gt_boxes[:, rng.integers(0, num_gt, num_proposals // 2)]
    near = near + rng.normal(0, 2, near.shape).astype(np.float32)
    proposals = np.concatenate(
        [near, np.stack([_random_boxes(rng, num_proposals // 2) for _ in range(batch)])], axis=1)
    proposal_valid = rng.random((batch, num_proposals)) < 0.8
    found = _roi_targets(proposals, proposal_valid, gt_boxes, gt_classes, seed=(seed, 7))
    is_fg, valid = found.is_fg.numpy(), found.valid.numpy()
    classes, rois = found.class_targets.numpy(), found.rois.numpy()
    for image in range(batch):
        count = is_fg[image].sum()
        assert is_fg[image, :count].all() and not is_fg[image, count:].any()  # foreground first
        assert count <= int(SAMPLES * POSITIVE_FRACTION)
        assert (classes[image][~is_fg[image]] == 0).all()  # background and padding: class 0
        assert (classes[image][is_fg[image]] >= 1).all()
        # Every sampled RoI is a valid proposal or a real instance's box, never padding.
        candidates = np.concatenate([proposals[image][proposal_valid[image]],
                                     gt_boxes[image][gt_classes[image] > 0]])
        for roi in rois[image][valid[image]]:
            assert np.any(np.all(np.isclose(candidates, roi), axis=1))
        matched = found.matched_gt.numpy()[image][is_fg[image]]
        assert (gt_classes[image][matched] == classes[image][is_fg[image]]).all()
    assert not is_fg[2].any() and valid[2].any()  # no instances: background only
    # Box targets of foreground RoIs decode back onto their instance.
    decoded = box_coder.decode_boxes(found.box_targets, found.rois, WEIGHTS).numpy()
    matched_boxes = np.take_along_axis(gt_boxes, found.matched_gt.numpy()[..., None], axis=1)
    np.testing.assert_allclose(decoded[is_fg], matched_boxes[is_fg], atol=1e-3)


def test_rpn_targets_sample_within_quota_and_encode_their_match():
    rng = np.random.default_rng(3)
    anchors = _random_boxes(rng, 300)
    gt_boxes = np.stack([_random_boxes(rng, 3), _random_boxes(rng, 3)])
    gt_valid = np.array([[True, True, False], [True, False, False]])
    found = targets.rpn_targets(tf.constant(anchors), tf.constant(gt_boxes), tf.constant(gt_valid),
                                0.7, 0.3, 64, 0.5, (1.0, 1.0, 1.0, 1.0), tf.constant([[4, 5], [4, 6]]))
    fg, bg = found.sampled_fg.numpy(), found.sampled_bg.numpy()
    assert not (fg & bg).any()
    assert ((fg | bg).sum(axis=1) == 64).all() and (fg.sum(axis=1) <= 32).all()
    assert (fg.sum(axis=1) >= gt_valid.sum(axis=1)).all()  # every instance gets an anchor
    decoded = box_coder.decode_boxes(found.box_targets,
                                     tf.broadcast_to(anchors, found.box_targets.shape),
                                     (1.0, 1.0, 1.0, 1.0)).numpy()
    for image in range(2):
        real = gt_boxes[image][gt_valid[image]]
        for box in decoded[image][fg[image]]:
            assert np.abs(real - box).max(axis=1).min() < 1e-2
